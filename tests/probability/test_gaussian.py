"""DiagonalGaussian against torch.distributions, Monte Carlo and finite differences."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from vaekit.probability import DiagonalGaussian


def _params(batch: int = 5, dim: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(batch, dim, generator=g, dtype=torch.float64) * 2
    log_var = torch.randn(batch, dim, generator=g, dtype=torch.float64) * 1.5
    return mean, log_var


def _reference(mean: torch.Tensor, log_var: torch.Tensor) -> Independent:
    return Independent(Normal(mean, torch.exp(0.5 * log_var)), 1)


def test_from_params_splits_last_dim_into_mean_and_log_var():
    params = torch.arange(12.0).reshape(2, 6)
    q = DiagonalGaussian.from_params(params)
    torch.testing.assert_close(q.mean, params[:, :3])
    torch.testing.assert_close(q.log_var, params[:, 3:])
    torch.testing.assert_close(q.std, torch.exp(params[:, 3:] / 2))
    torch.testing.assert_close(q.var, torch.exp(params[:, 3:]))


def test_from_params_rejects_odd_last_dim():
    with pytest.raises(ValueError, match="even"):
        DiagonalGaussian.from_params(torch.zeros(2, 5))


def test_mismatched_shapes_rejected():
    with pytest.raises(ValueError, match="same shape"):
        DiagonalGaussian(torch.zeros(2, 3), torch.zeros(2, 4))


def test_log_prob_matches_torch_distributions():
    mean, log_var = _params()
    q = DiagonalGaussian(mean, log_var)
    z = torch.randn(5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = _reference(mean, log_var).log_prob(z)
    assert q.log_prob(z).shape == (5,)
    torch.testing.assert_close(q.log_prob(z), expected)
    per_dim = Normal(mean, torch.exp(0.5 * log_var)).log_prob(z)
    torch.testing.assert_close(q.log_prob_per_dim(z), per_dim)


def test_kl_matches_torch_kl_divergence():
    mean, log_var = _params()
    q = DiagonalGaussian(mean, log_var)
    prior = Independent(Normal(torch.zeros_like(mean), torch.ones_like(mean)), 1)
    expected = kl_divergence(_reference(mean, log_var), prior)
    assert q.kl_to_standard_normal().shape == (5,)
    torch.testing.assert_close(q.kl_to_standard_normal(), expected)
    per_dim = kl_divergence(Normal(mean, torch.exp(0.5 * log_var)), Normal(0.0, 1.0))
    torch.testing.assert_close(q.kl_per_dim(), per_dim)


def test_kl_matches_monte_carlo_estimate():
    mean, log_var = _params(batch=3, dim=4, seed=2)
    mean, log_var = mean / 2, log_var / 2  # keep the MC variance moderate
    q = DiagonalGaussian(mean, log_var)
    n = 200_000
    z = q.rsample((n,), generator=torch.Generator().manual_seed(3))
    log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)  # independent of vaekit's prior
    diff = q.log_prob(z) - log_p  # [n, B]
    estimate = diff.mean(0)
    stderr = diff.std(0) / math.sqrt(n)
    assert torch.all((estimate - q.kl_to_standard_normal()).abs() < 5 * stderr)


def test_entropy_matches_torch():
    mean, log_var = _params()
    q = DiagonalGaussian(mean, log_var)
    torch.testing.assert_close(q.entropy(), _reference(mean, log_var).entropy())


def test_rsample_moments():
    mean = torch.tensor([[-1.0, 0.5, 3.0]], dtype=torch.float64)
    log_var = torch.tensor([[0.0, -2.0, 1.0]], dtype=torch.float64)
    q = DiagonalGaussian(mean, log_var)
    n = 100_000
    z = q.rsample((n,), generator=torch.Generator().manual_seed(0))
    std = q.std
    # standard errors: of the mean std / sqrt(n), of the sample std about std / sqrt(2n)
    assert torch.all((z.mean(0) - mean).abs() < 5 * std / math.sqrt(n))
    assert torch.all((z.std(0) - std).abs() < 5 * std / math.sqrt(2 * n))


def test_rsample_gradient_matches_finite_differences():
    mean, log_var = _params(batch=2, dim=3, seed=4)
    weights = torch.randn(2, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def f(m: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
        # fixed noise: the same generator seed on every call
        z = DiagonalGaussian(m, lv).rsample((4,), generator=torch.Generator().manual_seed(6))
        return (weights * z**2).sum()

    m = mean.clone().requires_grad_()
    lv = log_var.clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (m, lv))
    f(m, lv).backward()
    assert m.grad.abs().min() > 0 and lv.grad.abs().min() > 0


def test_sample_shape_prefix_and_broadcasting_log_prob():
    mean, log_var = _params(batch=5, dim=7)
    q = DiagonalGaussian(mean, log_var)
    z = q.rsample((3,))
    assert z.shape == (3, 5, 7)
    lp = q.log_prob(z)
    assert lp.shape == (3, 5)
    for i in range(3):
        torch.testing.assert_close(lp[i], _reference(mean, log_var).log_prob(z[i]))
    assert q.rsample().shape == (5, 7)


def test_generator_makes_samples_reproducible():
    q = DiagonalGaussian(*_params())
    a = q.rsample((2,), generator=torch.Generator().manual_seed(7))
    b = q.rsample((2,), generator=torch.Generator().manual_seed(7))
    c = q.rsample((2,), generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_extreme_log_var_is_clamped_and_finite():
    mean = torch.zeros(1, 2)
    log_var = torch.tensor([[1000.0, -1000.0]])
    q = DiagonalGaussian(mean, log_var)
    assert torch.isfinite(q.var).all() and (q.var > 0).all()
    assert torch.isfinite(q.kl_to_standard_normal()).all()
    assert torch.isfinite(q.log_prob(torch.ones(1, 2))).all()
    assert torch.isfinite(q.rsample()).all()
