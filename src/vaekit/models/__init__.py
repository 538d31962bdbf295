"""Models: networks composed with a prior and a likelihood."""

from vaekit.models.vae import VAE, build_vae
from vaekit.models.vqvae import VQVAE, build_vqvae

MODELS = {"vae": build_vae, "vqvae": build_vqvae}

__all__ = ["MODELS", "VAE", "VQVAE", "build_vae", "build_vqvae"]
