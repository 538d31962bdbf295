import math
from itertools import pairwise

import pytest
import torch

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models import build_vae
from vaekit.objectives import (
    Terms,
    analytic_elbo,
    kl_penalty,
    kl_weight,
    loss,
    monte_carlo_elbo,
)


def test_constant_weight_is_beta():
    cfg = ObjectiveConfig(beta=4.0)
    assert [kl_weight(cfg, s, 100) for s in (0, 50, 99)] == [4.0, 4.0, 4.0]


def test_linear_warmup_rises_then_holds():
    cfg = ObjectiveConfig(beta=2.0, warmup="linear", warmup_steps=10)
    values = [kl_weight(cfg, s, 1000) for s in range(0, 21)]
    assert values[0] == 0.0
    assert values[5] == pytest.approx(1.0)
    assert values[10:] == [2.0] * 11
    assert all(b >= a for a, b in pairwise(values))


def test_cyclical_schedule_repeats_each_period():
    cfg = ObjectiveConfig(beta=1.0, warmup="cyclical", cycles=4, cycle_ratio=0.5)
    total = 400  # period 100: rise over 50 steps, hold for 50
    values = [kl_weight(cfg, s, total) for s in range(total)]
    for cycle in range(4):
        start = cycle * 100
        assert values[start] == 0.0
        assert values[start + 25] == pytest.approx(0.5)
        assert values[start + 50 : start + 100] == [1.0] * 50


def _terms(kl_rows):
    kl = torch.tensor(kl_rows, requires_grad=True)
    return Terms(recon=torch.tensor([10.0, 20.0]), kl_per_dim=kl), kl


def test_free_bits_floors_each_dimension_and_stops_its_gradient():
    terms, kl = _terms([[0.1, 2.0, 0.0], [0.3, 4.0, 0.0]])  # batch means 0.2, 3.0, 0.0
    penalty = kl_penalty(terms, free_bits=0.5)
    assert penalty.item() == pytest.approx(0.5 + 3.0 + 0.5)
    penalty.backward()
    # Dimensions below the floor get no gradient; the one above gets d(mean)/d(entry) = 1/2.
    assert kl.grad[:, 0].abs().sum() == 0 and kl.grad[:, 2].abs().sum() == 0
    assert torch.allclose(kl.grad[:, 1], torch.tensor([0.5, 0.5]))


def test_loss_without_free_bits_is_mean_recon_plus_weighted_mean_kl():
    terms, _ = _terms([[1.0, 2.0], [3.0, 4.0]])
    value = loss(terms, kl_scale=0.5).item()
    assert value == pytest.approx(15.0 + 0.5 * 5.0)


def test_monte_carlo_elbo_averages_to_the_analytic_elbo():
    torch.manual_seed(0)
    model = build_vae(ModelConfig(arch="mlp", hidden=[32], latent_dim=3), (1, 8, 8))
    x = torch.rand(4, 1, 8, 8).round()
    reps = 4000
    with torch.no_grad():
        xs = x.repeat(reps, 1, 1, 1)
        mc = monte_carlo_elbo(model, xs).elbo.reshape(reps, 4)
        an = analytic_elbo(model, xs).elbo.reshape(reps, 4)
    # Both are unbiased for the same ELBO; compare means within 5 standard errors.
    diff = mc.mean(0) - an.mean(0)
    se = torch.sqrt(mc.var(0) / reps + an.var(0) / reps)
    assert torch.all(diff.abs() < 5 * se), (diff, se)
    # The analytic KL removes variance: its ELBO estimate is no noisier.
    assert torch.all(an.var(0) <= mc.var(0) * 1.05)


def test_analytic_kl_matches_closed_form_of_the_posterior():
    torch.manual_seed(1)
    model = build_vae(ModelConfig(arch="mlp", hidden=[16], latent_dim=2), (1, 4, 4))
    x = torch.rand(3, 1, 4, 4)
    q = model.encode(x)
    terms = analytic_elbo(model, x)
    expected = 0.5 * (q.mean**2 + q.log_var.exp() - 1 - q.log_var).sum(-1)
    assert torch.allclose(terms.kl, expected, atol=1e-6)
    assert terms.recon.shape == (3,) and torch.all(terms.recon > 0)
    assert torch.allclose(terms.elbo, -(terms.recon + terms.kl))
    assert math.isfinite(terms.elbo.sum().item())
