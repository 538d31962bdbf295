"""Posterior-collapse diagnostics against closed forms and brute force."""

import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from conftest import tiny_raw
from vaekit.config import config_from_dict
from vaekit.data.pipeline import ImageData
from vaekit.diagnostics import (
    INPUT_BLOCK,
    active_units,
    collapse_diagnostics,
    kl_per_dimension,
    mutual_information,
    mutual_information_estimate,
    seeded_model_inputs,
)
from vaekit.models import build_vae
from vaekit.models.vae import VAE
from vaekit.probability.likelihoods import Bernoulli
from vaekit.probability.priors import StandardNormal


class TableEncoder(nn.Module):
    """Posterior parameters looked up by the example's id, stored in its first pixel."""

    def __init__(self, mean: torch.Tensor, log_var: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.log_var = mean, log_var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, 0, 0, 0].long()
        return torch.cat([self.mean[ids], self.log_var[ids]], dim=-1)


def table_model(mean: torch.Tensor, log_var: torch.Tensor) -> VAE:
    d = mean.shape[1]
    decoder = nn.Linear(d, 1)  # never called by the diagnostics
    return VAE(TableEncoder(mean, log_var), decoder, StandardNormal(d), Bernoulli(), d, (1, 1, 1))


def id_batches(n: int, sizes: list[int]) -> list[torch.Tensor]:
    ids = torch.arange(n, dtype=torch.float64).reshape(n, 1, 1, 1)
    assert sum(sizes) == n
    return list(ids.split(sizes))


def test_kl_per_dimension_is_the_example_mean_of_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(10, 3, generator=g, dtype=torch.float64)
    log_var = torch.randn(10, 3, generator=g, dtype=torch.float64)
    model = table_model(mean, log_var)
    # Unequal batches: a mean of batch means would weight the 3 examples like the 7.
    got = kl_per_dimension(model, id_batches(10, [3, 7]))
    q = Normal(mean, torch.exp(0.5 * log_var))
    expected = kl_divergence(q, Normal(0.0, 1.0)).mean(0)
    assert got.shape == (3,)
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_active_units_counts_dimensions_whose_mean_varies():
    g = torch.Generator().manual_seed(1)
    base = torch.randn(500, 1, generator=g, dtype=torch.float64)
    means = torch.cat([base * 1.0, base * 0.05, torch.full_like(base, 3.0), base * 0.2], dim=1)
    count, variances = active_units(means)
    # Variances 1, 0.0025, 0, 0.04 (times the sample variance of base) against 0.01.
    b = base.squeeze(1)
    s2 = ((b - b.mean()) ** 2).mean()
    expected = torch.stack([s2, 0.0025 * s2, torch.zeros(()), 0.04 * s2])
    assert torch.allclose(variances, expected.double(), rtol=1e-10, atol=1e-15)
    assert count == 2
    assert active_units(means, threshold=0.001)[0] == 3


def test_mi_is_zero_when_the_encoder_ignores_x():
    n = 40
    mean = torch.tensor([[0.3, -1.0]], dtype=torch.float64).expand(n, 2)
    log_var = torch.tensor([[-0.5, 0.2]], dtype=torch.float64).expand(n, 2)
    model = table_model(mean.clone(), log_var.clone())
    mi = mutual_information(model, id_batches(n, [n]), generator=torch.Generator().manual_seed(0))
    assert abs(mi) < 1e-12


def test_mi_is_log_n_for_sharp_well_separated_posteriors():
    n = 64
    mean = 10.0 * torch.arange(n, dtype=torch.float64).reshape(n, 1).repeat(1, 2)
    log_var = torch.full((n, 2), -8.0, dtype=torch.float64)
    model = table_model(mean, log_var)
    mi = mutual_information(model, id_batches(n, [20, 44]), samples=3)
    assert mi == pytest.approx(math.log(n), abs=1e-9)


def test_mi_estimate_matches_a_brute_force_double_loop():
    g = torch.Generator().manual_seed(2)
    n, d, s = 5, 2, 3
    mean = torch.randn(n, d, generator=g, dtype=torch.float64)
    log_var = 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    z = torch.randn(s, n, d, generator=g, dtype=torch.float64)
    total = 0.0
    for i in range(s):
        for j in range(n):
            dens = [
                math.exp(Normal(mean[m], torch.exp(0.5 * log_var[m])).log_prob(z[i, j]).sum())
                for m in range(n)
            ]
            total += math.log(dens[j]) - math.log(sum(dens) / n)
    assert mutual_information_estimate(mean, log_var, z) == pytest.approx(
        total / (s * n), rel=1e-10
    )


def test_mi_estimate_is_unbiased_for_a_two_point_mixture():
    # x uniform on two points, q(z|x) = N(+-1, 1): I = E[log q(z|x) - log q(z)] by quadrature.
    grid = torch.linspace(-12.0, 12.0, 200001, dtype=torch.float64)
    p_plus, p_minus = Normal(1.0, 1.0).log_prob(grid), Normal(-1.0, 1.0).log_prob(grid)
    log_mix = torch.logaddexp(p_plus, p_minus) - math.log(2.0)
    integrand = p_plus.exp() * (p_plus - log_mix)  # the two halves are mirror images
    exact = torch.trapezoid(integrand, grid).item()
    mean = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    log_var = torch.zeros(2, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    z = mean + torch.randn(100_000, 2, 1, generator=g, dtype=torch.float64)
    estimate = mutual_information_estimate(mean, log_var, z)
    assert 0.1 < exact < math.log(2)
    assert estimate == pytest.approx(exact, abs=0.004)  # a few standard errors (about 0.001)


def test_mi_never_exceeds_log_n():
    g = torch.Generator().manual_seed(4)
    for n in (2, 17, 300):
        mean = 3 * torch.randn(n, 4, generator=g, dtype=torch.float64)
        log_var = torch.randn(n, 4, generator=g, dtype=torch.float64) - 3
        z = mean + torch.exp(0.5 * log_var) * torch.randn(2, n, 4, generator=g, dtype=torch.float64)
        assert mutual_information_estimate(mean, log_var, z) <= math.log(n) + 1e-12


def test_seeded_inputs_do_not_depend_on_the_batch_size():
    g = torch.Generator().manual_seed(5)
    n = INPUT_BLOCK + 37
    images = torch.randint(0, 256, (n, 1, 3, 3), generator=g, dtype=torch.uint8)
    data = ImageData(images, None, None, "noise")
    kw = {"binarize": "dynamic", "dequantize": False, "seed": 3}
    small = torch.cat(list(seeded_model_inputs(data, batch_size=7, **kw)))
    sizes = [len(b) for b in seeded_model_inputs(data, batch_size=700, **kw)]
    large = torch.cat(list(seeded_model_inputs(data, batch_size=700, **kw)))
    other = torch.cat(list(seeded_model_inputs(data, batch_size=700, **{**kw, "seed": 4})))
    assert sizes == [700, n - 700]
    assert torch.equal(small, large) and set(small.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(large, other)


@pytest.fixture(scope="module")
def tiny_model_and_data():
    config = config_from_dict(tiny_raw(model={"latent_dim": 5}))
    torch.manual_seed(0)
    model = build_vae(config.model, (1, 28, 28)).eval()
    g = torch.Generator().manual_seed(6)
    images = torch.randint(0, 256, (150, 1, 28, 28), generator=g, dtype=torch.uint8)
    return model, ImageData(images, None, None, "noise"), config


def test_collapse_diagnostics_is_json_ready_consistent_and_seeded(tiny_model_and_data):
    model, data, config = tiny_model_and_data
    out = collapse_diagnostics(model, data, config, seed=1, mi_examples=100)
    assert json.loads(json.dumps(out)) == out
    kl = out["kl_per_dim"]
    assert out["latent_dim"] == 5 and len(kl) == 5 and out["examples"] == 150
    assert out["kl_per_dim_sorted"] == sorted(kl, reverse=True)
    assert [kl[i] for i in out["kl_order"]] == out["kl_per_dim_sorted"]
    variances = out["posterior_mean_variance"]
    assert out["active_units"] == sum(v > 0.01 for v in variances)
    assert out["mi_examples"] == 100 and out["mutual_information"] <= math.log(100)
    assert collapse_diagnostics(model, data, config, seed=1, mi_examples=100) == out
    again = collapse_diagnostics(model, data, config, seed=2, mi_examples=100)
    assert again["mutual_information"] != out["mutual_information"]


def test_collapse_diagnostics_kl_agrees_with_kl_per_dimension(tiny_model_and_data):
    model, data, config = tiny_model_and_data
    out = collapse_diagnostics(model, data, config, seed=0, binarization="none", max_examples=90)
    x = data.images[:90].float() / 255.0
    expected = kl_per_dimension(model, x.split(40))
    assert out["examples"] == 90
    assert torch.allclose(torch.tensor(out["kl_per_dim"], dtype=torch.float64), expected)
