"""Models: networks composed with a prior and a likelihood."""

from vaekit.models.vae import VAE, build_vae

MODELS = {"vae": build_vae}

__all__ = ["MODELS", "VAE", "build_vae"]
