"""The quality benchmark's peer estimator (bench/quality_peer.py), checked without pythae.

The peer's test NLL comes from its own importance-weighted estimator, so it is held to an
independent computation: on a one-latent model with a Bernoulli decoder, log p(x) is an
integral over one dimension that quadrature computes exactly.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import quality_peer as qp

PIXELS = 6
SLOPES = torch.tensor([2.5, -1.5, 0.7, 3.0, -2.0, 1.2])
OFFSETS = torch.tensor([0.3, -0.2, 0.1, -1.0, 0.5, 0.0])


def logits(z: torch.Tensor) -> torch.Tensor:
    """A Bernoulli decoder of one latent: logit_i = a_i z + b_i, shaped [..., 1, 1, PIXELS]."""
    return (z * SLOPES + OFFSETS).unsqueeze(-2).unsqueeze(-2)


def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A deliberately imperfect posterior: its mean follows the pixels, its variance is fixed."""
    flat = x.flatten(start_dim=1)
    mu = (0.4 * (flat * SLOPES).sum(-1, keepdim=True)) - 0.3
    return mu, torch.full_like(mu, math.log(0.3))


def exact_log_px(x: torch.Tensor) -> torch.Tensor:
    """log of the integral of N(z; 0, 1) prod_i Bern(x_i; sigmoid(a_i z + b_i)) dz (trapezoid)."""
    z = torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64)
    logit = z[:, None] * SLOPES.double() + OFFSETS.double()
    flat = x.flatten(start_dim=1).double()
    log_lik = -torch.nn.functional.binary_cross_entropy_with_logits(
        logit[None].expand(len(x), -1, -1), flat[:, None].expand(-1, len(z), -1), reduction="none"
    ).sum(-1)
    log_joint = log_lik - 0.5 * (math.log(2 * math.pi) + z**2)
    dz = float(z[1] - z[0])
    return torch.logsumexp(log_joint, dim=-1) + math.log(dz)


@pytest.fixture
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    return (torch.rand(5, 1, 1, PIXELS, generator=generator) < 0.5).float()


def test_iw_nll_matches_quadrature(images):
    scorer = qp.Scorer(encode, logits)
    got = qp.iw_nll(scorer, images, k=50_000, chunk=7000, batch=2)
    exact = float(-exact_log_px(images).mean())
    assert got["iw_nll"] == pytest.approx(exact, abs=0.01)
    # The ELBO is a bound, and this posterior is loose enough for the gap to be visible.
    assert -got["elbo"] > exact + 0.05


def test_iw_nll_with_a_flow_counts_its_log_determinant(images):
    """q0 pushed through z = 2 z0 - 0.5 is another proposal: the same log p(x), if and only if
    log q subtracts log|dz/dz0| = log 2 (with the wrong sign the estimate is off by log 4)."""

    def flow(z0):
        return 2.0 * z0 - 0.5, torch.full(z0.shape[:-1], math.log(2.0))

    def narrow(x):
        mu, log_var = encode(x)
        return mu / 2, log_var - math.log(4.0)

    got = qp.iw_nll(qp.Scorer(narrow, logits, flow=flow), images, k=50_000, chunk=5000, batch=5)
    exact = float(-exact_log_px(images).mean())
    assert got["iw_nll"] == pytest.approx(exact, abs=0.02)


def test_iw_nll_does_not_depend_on_chunking(images):
    scorer = qp.Scorer(encode, logits)
    a = qp.iw_nll(scorer, images, k=300, chunk=300, batch=5, seed=4)
    b = qp.iw_nll(scorer, images, k=300, chunk=300, batch=5, seed=4)
    c = qp.iw_nll(scorer, images, k=300, chunk=7, batch=5, seed=5)
    assert a == b
    assert a["iw_nll"] == pytest.approx(c["iw_nll"], abs=0.05)


def test_gaussian_mixture_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    log_var = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    z = 2 * torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(7, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(mu, (0.5 * log_var).exp()), 1),
    )
    got = qp.GaussianMixture(mu, log_var).log_prob(z)
    assert got.shape == (4, 5)
    torch.testing.assert_close(got, reference.log_prob(z))


def test_standard_normal_log_prob_matches_torch_distributions():
    z = torch.linspace(-3, 3, 12, dtype=torch.float64).reshape(4, 3)
    reference = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(qp.standard_normal_log_prob(z), reference)
