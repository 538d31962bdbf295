"""Priors p(z) over the latent space.

A prior is an ``nn.Module`` so that learned priors (e.g. a VampPrior, Tomczak & Welling 2018)
can drop in with their own parameters and follow the model across devices.
"""

from __future__ import annotations

import math

import torch
from torch import nn

_LOG_2PI = math.log(2.0 * math.pi)


class StandardNormal(nn.Module):
    """The isotropic prior p(z) = N(0, I) over ``dim`` latent dimensions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"latent dim must be positive, got {dim}")
        self.dim = dim
        # Carries device and dtype for sample(); not persistent, so checkpoints hold no key.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def _check(self, z: torch.Tensor) -> None:
        if z.shape[-1] != self.dim:
            raise ValueError(f"expected z with last dim {self.dim}, got shape {tuple(z.shape)}")

    def log_prob_per_dim(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z_d; 0, 1) for each latent dim, shape [..., D]."""
        self._check(z)
        return -0.5 * (z**2 + _LOG_2PI)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) in nats summed over the last dim: [..., D] gives [...]."""
        return self.log_prob_per_dim(z).sum(-1)

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Draw n latents [n, D] from N(0, temperature^2 I); temperature < 1 tames pictures."""
        if temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {temperature}")
        anchor = self._anchor
        eps = torch.randn(
            (n, self.dim), generator=generator, dtype=anchor.dtype, device=anchor.device
        )
        return temperature * eps


PRIORS: dict[str, type[nn.Module]] = {"standard_normal": StandardNormal}
