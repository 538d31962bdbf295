"""The importance-weighted bound against a linear-Gaussian VAE whose log p(x) is exact."""

import math
from itertools import pairwise

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal

from vaekit.models.vae import VAE
from vaekit.objectives import (
    analytic_elbo,
    iw_log_likelihood,
    monte_carlo_elbo,
    streaming_logsumexp,
)
from vaekit.probability.likelihoods import Gaussian
from vaekit.probability.priors import StandardNormal

SHAPE = (1, 2, 3)  # a tiny image: 6 pixels
D_X, D_Z = 6, 2
SIGMA = 0.5


class LinearDecoder(nn.Module):
    """z [..., d] -> W z + b as [..., 1, 2, 3] (the likelihood's mean)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), nn.Parameter(b)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.w.T + self.b).reshape(*z.shape[:-1], *SHAPE)


class LinearEncoder(nn.Module):
    """x -> [A (x - b) + c, log_var]: Gaussian q(z|x), mean affine in x, fixed variance."""

    def __init__(
        self, a: torch.Tensor, b: torch.Tensor, log_var: torch.Tensor, c: float = 0.0
    ) -> None:
        super().__init__()
        self.a, self.b, self.log_var, self.c = a, b, log_var, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = (x.flatten(1) - self.b) @ self.a.T + self.c
        return torch.cat([mean, self.log_var.expand_as(mean)], dim=-1)


def _weights():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(D_X, D_Z, generator=g, dtype=torch.float64)
    b = torch.randn(D_X, generator=g, dtype=torch.float64)
    return w, b


def _exact_posterior(w):
    """p(z|x) = N(P (x - b), S) with S = (I + W^T W / s^2)^-1, P = S W^T / s^2."""
    cov = torch.linalg.inv(torch.eye(D_Z, dtype=torch.float64) + w.T @ w / SIGMA**2)
    return cov @ w.T / SIGMA**2, cov


def linear_gaussian_vae() -> VAE:
    """z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_6), in float64, with a deliberately wrong q."""
    w, b = _weights()
    proj, cov = _exact_posterior(w)
    # A shifted mean and an isotropic variance wider than the (correlated) true posterior in
    # every direction: ELBO < log p(x) strictly, yet p(z|x) / q(z|x) stays bounded, so the
    # importance weights have finite variance and the bound converges at the 1/K rate. The
    # posterior covariance does not depend on x, so every example has the same mismatch.
    top = torch.linalg.eigvalsh(cov).max()
    encoder = LinearEncoder(proj, b, torch.log(2.0 * top).expand(D_Z), c=0.5 * top.sqrt().item())
    model = VAE(encoder, LinearDecoder(w, b), StandardNormal(D_Z), Gaussian(SIGMA), D_Z, SHAPE)
    return model.double().eval()


def exact_vae_with_diagonal_posterior() -> VAE:
    """A linear-Gaussian VAE whose W has orthogonal columns, so p(z|x) is diagonal and q = p."""
    w, b = _weights()
    w, _ = torch.linalg.qr(w)  # orthonormal columns
    w = w * torch.tensor([1.5, 0.4], dtype=torch.float64)  # orthogonal, unequal lengths
    proj, cov = _exact_posterior(w)
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-12)
    encoder = LinearEncoder(proj, b, torch.log(torch.diagonal(cov)))
    model = VAE(encoder, LinearDecoder(w, b), StandardNormal(D_Z), Gaussian(SIGMA), D_Z, SHAPE)
    return model.double().eval()


def exact_log_px(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """log N(x; b, W W^T + s^2 I): the marginal of the linear-Gaussian model, [B] float64."""
    w, b = model.decoder.w.detach(), model.decoder.b.detach()
    cov = w @ w.T + SIGMA**2 * torch.eye(D_X, dtype=torch.float64)
    return MultivariateNormal(b, covariance_matrix=cov).log_prob(x.flatten(1))


def sample_data(model: VAE, n: int, seed: int) -> torch.Tensor:
    """Draws from the model's own p(x), as [n, 1, 2, 3] float64."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, D_Z, generator=g, dtype=torch.float64)
    noise = SIGMA * torch.randn(n, *SHAPE, generator=g, dtype=torch.float64)
    return model.decoder(z).detach() + noise


@pytest.fixture(scope="module")
def setup():
    model = linear_gaussian_vae()
    x = sample_data(model, 1000, seed=2)
    exact = exact_log_px(model, x)
    estimates = {}
    with torch.no_grad():
        for k in (10, 100, 1000, 5000):
            g = torch.Generator().manual_seed(100 + k)
            estimates[k] = iw_log_likelihood(model, x, k, chunk_size=500, generator=g)
    return model, x, exact, estimates


def _mean_and_se(t: torch.Tensor) -> tuple[float, float]:
    return t.mean().item(), t.std().item() / math.sqrt(len(t))


def test_exact_posterior_makes_every_weight_equal_to_p_x():
    model = exact_vae_with_diagonal_posterior()
    x = sample_data(model, 50, seed=3)
    with torch.no_grad():
        one = iw_log_likelihood(model, x, 1)
        many = iw_log_likelihood(model, x, 37, chunk_size=5)
    # q(z|x) = p(z|x) makes p(x, z) / q(z|x) = p(x) for every z: zero-variance sampling.
    assert one.dtype == torch.float64 and one.shape == (50,)
    assert torch.allclose(one, exact_log_px(model, x), atol=1e-9)
    assert torch.allclose(many, exact_log_px(model, x), atol=1e-9)


def test_bounds_are_ordered_elbo_iw10_iw100_iw1000_exact(setup):
    model, x, exact, iw = setup
    with torch.no_grad():
        elbo = analytic_elbo(model, x).elbo.double()
    # Each step of the chain, as a paired mean difference that must not be negative beyond
    # three standard errors; the ELBO gap must be real (many standard errors).
    chain = [elbo, iw[10], iw[100], iw[1000], exact]
    for lower, upper in pairwise(chain):
        mean, se = _mean_and_se(upper - lower)
        assert mean > -3 * se - 1e-12
    gap, se = _mean_and_se(exact - elbo)
    assert gap > 0.05 and gap > 10 * se
    gap10, se10 = _mean_and_se(iw[10] - elbo)
    assert gap10 > 10 * se10  # K = 10 already beats the ELBO clearly


def test_gap_to_exact_shrinks_with_k_and_vanishes_at_5000(setup):
    _, _, exact, iw = setup
    ks = (10, 100, 1000, 5000)
    # The mean gap falls like 1/K (Burda et al. 2015, theorem 1; Domke & Sheldon 2018) ...
    diff, se = _mean_and_se(iw[100] - iw[10])
    assert diff > 5 * se
    diff, se = _mean_and_se(iw[1000] - iw[100])
    assert diff > 3 * se
    # ... and the typical error of one example's estimate falls like 1/sqrt(K).
    errors = [(iw[k] - exact).abs().mean().item() for k in ks]
    assert all(a > 1.6 * b for a, b in pairwise(errors))
    gap, se = _mean_and_se(exact - iw[5000])
    assert abs(gap) < 3 * se and abs(gap) < 2e-3
    assert errors[-1] < 0.03  # nats per example


def test_chunk_size_does_not_change_the_estimate(setup):
    model, x, _, _ = setup
    with torch.no_grad():
        small = iw_log_likelihood(
            model, x[:30], 1000, chunk_size=7, generator=torch.Generator().manual_seed(5)
        )
        whole = iw_log_likelihood(
            model, x[:30], 1000, chunk_size=1000, generator=torch.Generator().manual_seed(5)
        )
        other = iw_log_likelihood(
            model, x[:30], 1000, chunk_size=1000, generator=torch.Generator().manual_seed(6)
        )
    assert torch.allclose(small, whole, rtol=0, atol=1e-10)
    assert not torch.allclose(whole, other, rtol=0, atol=1e-6)  # the seed does matter


def test_global_rng_is_used_without_a_generator(setup):
    model, x, _, _ = setup
    with torch.no_grad():
        torch.manual_seed(9)
        one = iw_log_likelihood(model, x[:5], 20, chunk_size=3)
        torch.manual_seed(9)
        two = iw_log_likelihood(model, x[:5], 20)
    assert torch.allclose(one, two, rtol=0, atol=1e-10)


def test_k1_averages_to_the_monte_carlo_elbo():
    model = linear_gaussian_vae()
    x = sample_data(model, 4000, seed=4)
    torch.manual_seed(0)
    with torch.no_grad():
        iw1 = iw_log_likelihood(model, x, 1)
        mc = monte_carlo_elbo(model, x).elbo
        analytic = analytic_elbo(model, x).elbo
    mean, se = _mean_and_se(iw1 - analytic)
    assert abs(mean) < 4 * se
    mean, se = _mean_and_se(iw1 - mc)
    assert abs(mean) < 4 * se
    assert (exact_log_px(model, x) - iw1).mean() > 0.05  # still the loose single-sample bound


def test_streaming_logsumexp_equals_logsumexp_over_all_rows():
    g = torch.Generator().manual_seed(0)
    w = 300 * torch.randn(103, 8, generator=g, dtype=torch.float64)
    w[:, 3] = -math.inf  # an example whose every weight is zero
    w[50, 5] = 2000.0  # one huge weight, which would overflow exp without the max shift
    expected = torch.logsumexp(w, dim=0)
    for size in (1, 7, 50, 103, 500):
        got = streaming_logsumexp(w.split(size))
        assert torch.equal(torch.isinf(got), torch.isinf(expected))
        finite = torch.isfinite(expected)
        assert torch.allclose(got[finite], expected[finite], rtol=1e-14, atol=0)


def test_rejects_bad_k_and_chunk_size(setup):
    model, x, _, _ = setup
    with pytest.raises(ValueError, match="k must be"):
        iw_log_likelihood(model, x, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        iw_log_likelihood(model, x, 5, chunk_size=0)


def test_iw_gradients_flow_outside_no_grad(setup):
    model, x, _, _ = setup
    bound = iw_log_likelihood(model, x[:4], 5, chunk_size=2).mean()
    bound.backward()
    assert model.decoder.w.grad is not None and model.decoder.w.grad.abs().sum() > 0
    model.zero_grad()


def test_compiled_decoder_gives_the_eager_iw_estimate():
    # torch.compile (or its eager fallback on a machine without a compiler) changes speed only.
    from vaekit.config import ModelConfig
    from vaekit.evaluate import CompiledLogLikelihood
    from vaekit.models import build_vae

    torch.manual_seed(0)
    model = build_vae(ModelConfig(arch="mlp", hidden=[32], latent_dim=3), (1, 28, 28)).eval()
    x = (torch.rand(6, 1, 28, 28) < 0.3).float()
    with torch.no_grad():
        eager = iw_log_likelihood(
            model, x, 20, chunk_size=10, generator=torch.Generator().manual_seed(5)
        )
        compiled = iw_log_likelihood(
            model,
            x,
            20,
            chunk_size=10,
            generator=torch.Generator().manual_seed(5),
            log_likelihood=CompiledLogLikelihood(model),
        )
    assert torch.allclose(compiled, eager, rtol=0, atol=1e-3)
