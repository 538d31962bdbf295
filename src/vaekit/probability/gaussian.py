"""Diagonal Gaussian q(z|x) = N(mean, diag(exp(log_var))): the usual VAE posterior.

All log-densities are in nats. ``log_prob``, ``kl_to_standard_normal`` and ``entropy`` sum
over the last (latent) dimension, so a batch of posteriors gives one number per example.
"""

from __future__ import annotations

import math

import torch

from vaekit.probability import noise

# exp(-30) ~ 1e-13 and exp(20) ~ 5e8: wide enough for any sensible posterior, narrow enough
# that var, 1/var and log-densities stay finite in float32 (exp overflows near 88) and that a
# wild encoder early in training cannot make the KL or log_prob inf/NaN. Values outside the
# range get zero gradient from the clamp, which only happens for absurd encoder outputs.
LOG_VAR_MIN = -30.0
LOG_VAR_MAX = 20.0

_LOG_2PI = math.log(2.0 * math.pi)


class DiagonalGaussian:
    """A batch of Gaussians with diagonal covariance, parameterised by mean and log-variance."""

    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor) -> None:
        if mean.shape != log_var.shape:
            raise ValueError(
                f"mean and log_var must have the same shape, got {tuple(mean.shape)} "
                f"and {tuple(log_var.shape)}"
            )
        self._mean = mean
        self._log_var = log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX)

    @classmethod
    def from_params(cls, params: torch.Tensor) -> DiagonalGaussian:
        """Build from an encoder output [..., 2D]: first half is the mean, second the log-var."""
        if params.shape[-1] % 2:
            raise ValueError(
                f"params' last dim must be even (mean and log_var), got {params.shape[-1]}"
            )
        mean, log_var = params.chunk(2, dim=-1)
        return cls(mean, log_var)

    def __repr__(self) -> str:
        return f"DiagonalGaussian(shape={tuple(self._mean.shape)})"

    @property
    def mean(self) -> torch.Tensor:
        """The mean, shape [..., D]."""
        return self._mean

    @property
    def log_var(self) -> torch.Tensor:
        """The (clamped) log-variance, shape [..., D]."""
        return self._log_var

    @property
    def std(self) -> torch.Tensor:
        """The standard deviation exp(log_var / 2)."""
        return torch.exp(0.5 * self._log_var)

    @property
    def var(self) -> torch.Tensor:
        """The variance exp(log_var)."""
        return torch.exp(self._log_var)

    def rsample(
        self,
        sample_shape: torch.Size | tuple[int, ...] = (),
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw z = mean + std * eps, eps ~ N(0, I), differentiable in mean and log_var.

        The reparameterisation trick (Kingma & Welling 2014, eq. 10). ``sample_shape`` is a
        prefix, e.g. ``(k,)`` gives [k, B, D] for importance sampling. ``generator`` must live
        on the same device as the parameters.
        """
        shape = torch.Size(sample_shape) + self._mean.shape
        eps = noise.randn(
            shape,
            batch_dim=len(sample_shape),
            generator=generator,
            dtype=self._mean.dtype,
            device=self._mean.device,
        )
        return self._mean + self.std * eps

    def log_prob_per_dim(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z_d; mean_d, var_d) for each latent dim, shape broadcast(z, mean) = [..., D]."""
        return -0.5 * (_LOG_2PI + self._log_var + (z - self._mean) ** 2 / self.var)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z) in nats summed over D; z [..., B, D] (e.g. [k, B, D]) gives [..., B]."""
        return self.log_prob_per_dim(z).sum(-1)

    def kl_per_dim(self) -> torch.Tensor:
        """KL(q || N(0, I)) per latent dim, shape [..., D] (for free bits and diagnostics)."""
        # Closed form for Gaussians, Kingma & Welling 2014, appendix B:
        # -KL = 0.5 * sum(1 + log var - mu^2 - var).
        return 0.5 * (self._mean**2 + self.var - 1.0 - self._log_var)

    def kl_to_standard_normal(self) -> torch.Tensor:
        """KL(q || N(0, I)) in nats summed over D, shape [...] (one number per example)."""
        return self.kl_per_dim().sum(-1)

    def entropy(self) -> torch.Tensor:
        """Differential entropy H[q] = 0.5 * sum_d (1 + log 2 pi + log var_d), shape [...]."""
        return 0.5 * (1.0 + _LOG_2PI + self._log_var).sum(-1)
