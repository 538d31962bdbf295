"""Models: networks composed with a prior and a likelihood."""

from vaekit.models.hvae import HierarchicalVAE, build_hvae
from vaekit.models.vae import VAE, build_vae
from vaekit.models.vqvae import VQVAE, build_vqvae

MODELS = {"vae": build_vae, "vqvae": build_vqvae, "hvae": build_hvae}

__all__ = ["MODELS", "VAE", "VQVAE", "HierarchicalVAE", "build_hvae", "build_vae", "build_vqvae"]
