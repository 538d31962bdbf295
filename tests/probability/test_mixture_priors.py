"""Mixture-of-Gaussians and VampPrior densities and samples against independent computations."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from vaekit.errors import ConfigError
from vaekit.probability import (
    PRIORS,
    DiagonalGaussian,
    MixtureOfGaussians,
    StandardNormal,
    VampPrior,
    make_prior,
    marginal_icdf,
)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mog(dim=3, k=4, seed=0):
    """A float64 MoG with spread means, unequal variances and unequal weights."""
    torch.manual_seed(seed)
    prior = MixtureOfGaussians(dim, k).double()
    with torch.no_grad():
        prior.means.copy_(3 * torch.randn(k, dim, dtype=torch.float64))
        prior.log_vars.uniform_(-1.5, 0.5)
        prior.logits.copy_(torch.randn(k, dtype=torch.float64))
    return prior


def _torch_mixture(prior):
    """The same mixture built from torch.distributions, an independent implementation."""
    weights = Categorical(logits=prior.logits.detach())
    parts = Normal(prior.means.detach(), torch.exp(0.5 * prior.log_vars.detach()))
    return MixtureSameFamily(weights, Independent(parts, 1))


class LinearEncoder(nn.Module):
    """images [K, C, H, W] -> (mean, log_var) [K, 2D] by one linear map."""

    def __init__(self, pixels, dim):
        super().__init__()
        self.net = nn.Linear(pixels, 2 * dim)

    def forward(self, x):
        return self.net(x.flatten(1))


def _vamp(dim=3, k=5, shape=(1, 2, 2), seed=0):
    torch.manual_seed(seed)
    encoder = LinearEncoder(math.prod(shape), dim).double()
    prior = VampPrior(dim, k, shape).double()
    prior.bind(lambda x: DiagonalGaussian.from_params(encoder(x)))
    return prior, encoder


# --------------------------------------------------------------------------- MoG


def test_mog_log_prob_matches_mixture_same_family():
    prior = _mog()
    z = 4 * torch.randn(6, 5, 3, generator=_gen(1), dtype=torch.float64)
    expected = _torch_mixture(prior).log_prob(z)
    assert prior.log_prob(z).shape == (6, 5)
    torch.testing.assert_close(prior.log_prob(z), expected, rtol=1e-10, atol=1e-9)


def test_mog_float32_log_prob_stays_close_far_from_the_origin():
    # The matmul expansion of the squared distance must not lose the density to cancellation.
    prior = _mog()
    with torch.no_grad():
        prior.means.add_(50.0)
    z = prior.means.detach()[:2] + 0.1 * torch.randn(2, 3, generator=_gen(2), dtype=torch.float64)
    expected = _torch_mixture(prior).log_prob(z)
    torch.testing.assert_close(
        prior.float().log_prob(z.float()).double(), expected, atol=2e-3, rtol=0
    )


def test_bf16_autocast_leaves_a_sharp_mixture_density_in_float32():
    # train.precision = "bf16" runs the model under autocast; the prior's distance products
    # must not drop to bfloat16, whose rounding of terms ~1/var wrecks a sharp posterior's
    # log p(z) (it was off by 6 nats on average at these sizes).
    prior = _mog(dim=40, k=500, seed=3)
    with torch.no_grad():
        prior.log_vars.uniform_(-5.0, -3.0)  # variances 0.007-0.05, as late in training
    z = prior.means.detach()[:64] + 0.1 * torch.randn(
        64, 40, generator=_gen(4), dtype=torch.float64
    )
    expected = _torch_mixture(prior).log_prob(z)
    single = prior.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = single.log_prob(z.float())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=0.02, rtol=0)


def test_per_dim_terms_are_the_chain_rule_of_the_mixture():
    # sum_{j<=d} log p(z_j | z_<j) = log p(z_<=d), the marginal mixture of the first d dims.
    prior = _mog(dim=4, k=3)
    z = 2 * torch.randn(7, 4, generator=_gen(3), dtype=torch.float64)
    per_dim = prior.log_prob_per_dim(z)
    assert per_dim.shape == (7, 4)
    for d in range(1, 5):
        weights = Categorical(logits=prior.logits.detach())
        parts = Normal(prior.means.detach()[:, :d], torch.exp(0.5 * prior.log_vars.detach()[:, :d]))
        marginal = MixtureSameFamily(weights, Independent(parts, 1)).log_prob(z[:, :d])
        torch.testing.assert_close(per_dim[:, :d].sum(-1), marginal)


def test_mog_sample_moments_and_frequencies_match_the_mixture():
    prior = _mog(dim=2, k=3)
    with torch.no_grad():  # well-separated, so each draw's component can be read off
        prior.means.copy_(torch.tensor([[-8.0, 0.0], [0.0, 8.0], [8.0, 0.0]]))
        prior.log_vars.fill_(0.0)
        prior.logits.copy_(torch.tensor([0.2, 0.5, 0.3]).log())
    n = 200_000
    z = prior.sample(n, generator=_gen(4))
    w, mu = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64), prior.means.detach()
    mean = (w[:, None] * mu).sum(0)
    var = (w[:, None] * (1.0 + mu**2)).sum(0) - mean**2
    # Standard errors: sqrt(var / n) for the mean, sqrt((m4 - var^2) / n) for the variance.
    m4 = ((z - z.mean(0)) ** 4).mean(0)
    assert torch.all((z.mean(0) - mean).abs() < 5 * (var / n).sqrt())
    assert torch.all((z.var(0) - var).abs() < 5 * ((m4 - var**2) / n).sqrt())
    nearest = torch.cdist(z, mu).argmin(1)
    freq = torch.bincount(nearest, minlength=3).double() / n
    assert torch.all((freq - w).abs() < 5 * (w * (1 - w) / n).sqrt())


def test_temperature_scales_the_components_not_their_means():
    prior = _mog(dim=2, k=2)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]))
    # The same generator picks the same components; the nearest mean tells which.
    cold = prior.sample(50_000, generator=_gen(5), temperature=0.5)
    warm = prior.sample(50_000, generator=_gen(5), temperature=1.0)
    mu = prior.means.detach()
    k = torch.cdist(warm, mu).argmin(1)
    torch.testing.assert_close(cold - mu[k], 0.5 * (warm - mu[k]))
    means = prior.sample(10, generator=_gen(6), temperature=0.0)
    assert torch.cdist(means, mu).min(1).values.max() == 0


def test_sample_is_seeded_and_carries_no_graph():
    prior = _mog()
    a = prior.sample(8, generator=_gen(7))
    b = prior.sample(8, generator=_gen(7))
    assert a.shape == (8, 3) and torch.equal(a, b) and not a.requires_grad
    with pytest.raises(ValueError, match="temperature"):
        prior.sample(2, temperature=-1.0)


def test_mog_parameters_learn_and_start_near_a_standard_normal():
    torch.manual_seed(0)
    prior = MixtureOfGaussians(4, 10)
    assert sorted(dict(prior.named_parameters())) == ["log_vars", "logits", "means"]
    assert prior.means.std().item() < 1.0 and torch.all(prior.log_vars == 0)
    z = torch.randn(16, 4)
    prior.log_prob(z).sum().backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------- VampPrior


def test_vamp_log_prob_matches_a_loop_over_pseudo_inputs():
    prior, encoder = _vamp()
    z = 2 * torch.randn(4, 6, 3, generator=_gen(8), dtype=torch.float64)
    densities = []
    with torch.no_grad():
        for u in prior.pseudo_inputs:  # one pseudo-input at a time, float64 throughout
            params = encoder(u.unsqueeze(0))[0]
            mean, std = params[:3], torch.exp(0.5 * params[3:])
            densities.append(torch.exp(Normal(mean, std).log_prob(z).sum(-1)))
        expected = torch.stack(densities).mean(0).log()
        got = prior.log_prob(z)
    assert got.shape == (4, 6)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(prior.log_prob_per_dim(z).sum(-1), expected)


def test_vamp_pseudo_inputs_are_images_in_the_unit_interval_and_learn():
    prior, encoder = _vamp(k=7, shape=(1, 3, 3))
    u = prior.pseudo_inputs
    assert u.shape == (7, 1, 3, 3) and u.min() >= 0.1 - 1e-9 and u.max() <= 0.9 + 1e-9
    prior.log_prob(torch.randn(5, 3, dtype=torch.float64)).sum().backward()
    assert prior.pseudo_logits.grad.abs().sum() > 0
    assert encoder.net.weight.grad.abs().sum() > 0  # the prior's gradient reaches the encoder


def test_vamp_samples_pick_components_uniformly_and_follow_their_gaussians():
    prior, encoder = _vamp(dim=2, k=4)
    with torch.no_grad():  # four far-apart, narrow posteriors: one per pseudo-input
        encoder.net.weight.zero_()
        encoder.net.bias.zero_()
        prior.pseudo_logits.zero_()
        prior.pseudo_logits.view(4, -1).copy_(torch.eye(4, dtype=torch.float64) * 20 - 10)
        encoder.net.weight[:2].copy_(torch.tensor([[10.0, 0, -10, 0], [0, 10.0, 0, -10]]))
        encoder.net.bias[2:].fill_(math.log(0.25))
    _, parts = prior.components()
    centres = parts.mean.detach()
    assert torch.cdist(centres, centres).add(torch.eye(4) * 99).min() > 5  # distinct components
    n = 100_000
    z = prior.sample(n, generator=_gen(9))
    nearest = torch.cdist(z, centres).argmin(1)
    freq = torch.bincount(nearest, minlength=4).double() / n
    assert torch.all((freq - 0.25).abs() < 5 * math.sqrt(0.25 * 0.75 / n))
    residual = z - centres[nearest]
    torch.testing.assert_close(
        residual.std(0), torch.full((2,), 0.5, dtype=torch.float64), atol=0.01, rtol=0
    )


def test_vamp_without_an_encoder_says_how_to_bind_one():
    prior = VampPrior(2, 3, (1, 2, 2))
    with pytest.raises(RuntimeError, match="bind"):
        prior.log_prob(torch.zeros(1, 2))


def test_vamp_state_dict_holds_only_the_pseudo_inputs_and_deepcopy_rebinds():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = LinearEncoder(4, 2)
            self.prior = VampPrior(2, 3, (1, 2, 2))
            self.prior.bind(self.encode)

        def encode(self, x):
            return DiagonalGaussian.from_params(self.encoder(x))

    model = Model()
    assert sorted(model.state_dict()) == [
        "encoder.net.bias",
        "encoder.net.weight",
        "prior.pseudo_logits",
    ]
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.encoder.net.bias.add_(1.0)
    z = torch.zeros(1, 2)
    assert not torch.allclose(twin.prior.log_prob(z), model.prior.log_prob(z))
    assert twin.prior._encode.__self__ is twin


# --------------------------------------------------------------------------- shared


def test_marginal_quantiles_match_the_sample_quantiles():
    prior = _mog(dim=2, k=3)
    probs = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=torch.float64)
    q = marginal_icdf(prior, probs)
    z = prior.sample(400_000, generator=_gen(10))
    empirical = torch.quantile(z[: 100_000 * 4 // 4].float(), probs.float(), dim=0).double()
    torch.testing.assert_close(q, empirical, atol=0.05, rtol=0)
    # The marginal CDF at each quantile, by torch.distributions, is the probability asked for.
    for d in range(2):
        weights = Categorical(logits=prior.logits.detach())
        parts = Normal(prior.means.detach()[:, d], torch.exp(0.5 * prior.log_vars.detach()[:, d]))
        cdf = MixtureSameFamily(weights, parts).cdf(q[:, d])
        torch.testing.assert_close(cdf, probs, atol=1e-9, rtol=0)
    normal = marginal_icdf(StandardNormal(3), probs)
    torch.testing.assert_close(normal, Normal(0.0, 1.0).icdf(probs)[:, None].expand(-1, 3))


def test_registry_and_factory():
    assert PRIORS["mog"] is MixtureOfGaussians and PRIORS["vamp"] is VampPrior
    assert PRIORS["standard_normal"] is StandardNormal
    kw = {"num_components": 5, "image_shape": (1, 4, 4)}
    assert isinstance(make_prior("standard_normal", 3, **kw), StandardNormal)
    mog = make_prior("mog", 3, **kw)
    assert mog.num_components == 5 and mog.means.shape == (5, 3)
    vamp = make_prior("vamp", 3, **kw)
    assert vamp.pseudo_logits.shape == (5, 1, 4, 4)
    with pytest.raises(ConfigError, match="unknown prior"):
        make_prior("flow", 3, **kw)
    with pytest.raises(ValueError):
        MixtureOfGaussians(3, 0)
    with pytest.raises(ValueError, match="last dim 3"):
        mog.log_prob(torch.zeros(2, 4))


def test_standard_normal_is_a_one_component_mixture():
    prior = StandardNormal(3).double()
    log_w, parts = prior.components()
    assert log_w.tolist() == [0.0] and parts.mean.shape == (1, 3)
    z = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(parts.log_prob(z[:, None, :]).squeeze(1), prior.log_prob(z))
