"""ELBO estimators, KL schedules and free bits: how per-example terms become one loss.

Every estimator is a plain function of a model and a batch returning :class:`Terms` of
``[batch]`` tensors in nats. The batch mean happens in exactly one place, :func:`loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from vaekit.config import ObjectiveConfig
from vaekit.probability.gaussian import DiagonalGaussian


@dataclass(frozen=True)
class Terms:
    """Per-example loss terms: ``recon`` = -log p(x|z) [B]; ``kl_per_dim`` [B, D] in nats."""

    recon: torch.Tensor
    kl_per_dim: torch.Tensor

    @property
    def kl(self) -> torch.Tensor:
        """KL (or its single-sample estimate) summed over latent dimensions, [B]."""
        return self.kl_per_dim.sum(-1)

    @property
    def elbo(self) -> torch.Tensor:
        """The evidence lower bound log p(x) >= -(recon + kl), [B]."""
        return -(self.recon + self.kl)


class LatentVariableModel(Protocol):
    """What an estimator needs of a model: an encoder, a decoder, a prior and a likelihood."""

    prior: torch.nn.Module
    likelihood: torch.nn.Module

    def encode(self, x: torch.Tensor) -> DiagonalGaussian: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def analytic_elbo(model: LatentVariableModel, x: torch.Tensor) -> Terms:
    """ELBO with the closed-form KL(q(z|x) || N(0, I)) (Kingma & Welling 2014, eq. 10)."""
    q = model.encode(x)
    z = q.rsample()
    recon = -model.likelihood.log_prob(model.decode(z), x)
    return Terms(recon=recon, kl_per_dim=q.kl_per_dim())


def monte_carlo_elbo(model: LatentVariableModel, x: torch.Tensor) -> Terms:
    """ELBO as log p(x|z) + log p(z) - log q(z|x) at one reparameterised sample z ~ q(z|x).

    Works for any prior with a density; its KL term is unbiased but noisier than the
    analytic one (Kingma & Welling 2014, eq. 6).
    """
    q = model.encode(x)
    z = q.rsample()
    recon = -model.likelihood.log_prob(model.decode(z), x)
    kl_per_dim = q.log_prob_per_dim(z) - model.prior.log_prob_per_dim(z)
    return Terms(recon=recon, kl_per_dim=kl_per_dim)


ESTIMATORS: dict[str, Callable[[LatentVariableModel, torch.Tensor], Terms]] = {
    "analytic": analytic_elbo,
    "monte_carlo": monte_carlo_elbo,
}


def kl_weight(cfg: ObjectiveConfig, step: int, total_steps: int) -> float:
    """The KL weight at optimiser ``step``: beta, scaled by the warm-up schedule.

    ``linear`` rises from 0 to beta over ``warmup_steps`` (Bowman et al. 2016);
    ``cyclical`` repeats that rise ``cycles`` times over training, rising for
    ``cycle_ratio`` of each cycle and holding beta for the rest (Fu et al. 2019, eq. 4).
    """
    if cfg.warmup == "linear":
        return cfg.beta * min(1.0, step / cfg.warmup_steps)
    if cfg.warmup == "cyclical":
        period = max(1, math.ceil(total_steps / cfg.cycles))
        tau = (step % period) / period
        return cfg.beta * min(1.0, tau / cfg.cycle_ratio)
    return cfg.beta


def kl_penalty(terms: Terms, free_bits: float) -> torch.Tensor:
    """Batch-mean KL, with each latent's batch-mean KL floored at ``free_bits`` nats.

    Free bits (Kingma et al. 2016, IAF paper, eq. 15): a dimension whose average KL is below
    lambda pays lambda and gets no gradient pushing it further towards the prior, which
    counters posterior collapse.
    """
    per_dim = terms.kl_per_dim.mean(0)
    if free_bits > 0:
        per_dim = per_dim.clamp(min=free_bits)
    return per_dim.sum()


def loss(terms: Terms, kl_scale: float, free_bits: float = 0.0) -> torch.Tensor:
    """The scalar training loss: mean reconstruction term plus weighted KL penalty."""
    return terms.recon.mean() + kl_scale * kl_penalty(terms, free_bits)
