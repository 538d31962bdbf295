"""Likelihoods p(x|z) against torch.distributions and independent computations."""

import math

import pytest
import torch
from torch.distributions import (
    AffineTransform,
    Normal,
    SigmoidTransform,
    TransformedDistribution,
    Uniform,
)

from vaekit.errors import ConfigError
from vaekit.probability import (
    LIKELIHOODS,
    Bernoulli,
    DiscretizedLogistic,
    Gaussian,
    GaussianLearnedScale,
    GaussianPredictedScale,
    bits_per_dim,
    make_likelihood,
)
from vaekit.probability.likelihoods import MIN_SCALE, AutoregressiveBernoulli

IMAGE = (2, 3, 4)  # C, H, W
LEVELS = torch.arange(256, dtype=torch.float64) / 255


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(batch: int = 3, seed: int = 0) -> torch.Tensor:
    """8-bit images k / 255 in [0, 1], shape [B, C, H, W]."""
    return torch.randint(0, 256, (batch, *IMAGE), generator=_gen(seed)).double() / 255


def _params(likelihood, lead: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    channels = IMAGE[0] * likelihood.params_per_pixel
    return torch.randn(*lead, channels, *IMAGE[1:], generator=_gen(seed), dtype=torch.float64)


def _autoregressive(shape=IMAGE, seed: int = 6) -> AutoregressiveBernoulli:
    """An autoregressive Bernoulli with random weights (it starts at zero, the plain case)."""
    lik = AutoregressiveBernoulli(shape).double()
    with torch.no_grad():
        lik.weight.copy_(2 * torch.randn(lik.weight.shape, generator=_gen(seed)))
    return lik


ALL = [
    Bernoulli(),
    _autoregressive(),
    Gaussian(0.2),
    GaussianLearnedScale(IMAGE, per_pixel=True),
    GaussianPredictedScale(),
    DiscretizedLogistic(),
]


# ---- common interface ------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ALL, ids=lambda m: type(m).__name__)
def test_leading_sample_dims_equal_looping(likelihood):
    likelihood = likelihood.double()
    x = _images(batch=3)
    params = _params(likelihood, (4, 3))
    out = likelihood.log_prob(params, x)
    assert out.shape == (4, 3)
    for k in range(4):
        for b in range(3):
            one = likelihood.log_prob(params[k, b : b + 1], x[b : b + 1])
            torch.testing.assert_close(out[k, b], one[0])


@pytest.mark.parametrize("likelihood", ALL, ids=lambda m: type(m).__name__)
def test_mean_and_sample_are_images_in_unit_range(likelihood):
    likelihood = likelihood.double()
    params = _params(likelihood, (2, 3)) * 3
    for picture in (
        likelihood.mean(params),
        likelihood.sample(params, generator=_gen(2)),
    ):
        assert picture.shape == (2, 3, *IMAGE)
        assert picture.min() >= 0 and picture.max() <= 1
    a = likelihood.sample(params, generator=_gen(3))
    b = likelihood.sample(params, generator=_gen(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("likelihood", ALL, ids=lambda m: type(m).__name__)
def test_wrong_channel_count_rejected(likelihood):
    params = torch.zeros(3, IMAGE[0] * likelihood.params_per_pixel + 1, *IMAGE[1:])
    with pytest.raises(ValueError, match="channels"):
        likelihood.log_prob(params, torch.zeros(3, *IMAGE))


# ---- Bernoulli -------------------------------------------------------------------------------


def test_bernoulli_matches_torch_distributions():
    logits = _params(Bernoulli(), (5,)) * 3
    x = torch.bernoulli(torch.full((5, *IMAGE), 0.4, dtype=torch.float64), generator=_gen(4))
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(Bernoulli().log_prob(logits, x), expected)


def test_bernoulli_grey_x_is_minus_bce():
    logits = _params(Bernoulli(), (5,)) * 3
    x = torch.rand(5, *IMAGE, generator=_gen(5), dtype=torch.float64)
    bce = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none")
    torch.testing.assert_close(Bernoulli().log_prob(logits, x), -bce.sum((-3, -2, -1)))


def test_bernoulli_stable_at_extreme_logits():
    x = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 0.5]).reshape(1, 1, 1, 6)
    logits = torch.tensor([100.0, 100.0, 100.0, -100.0, -100.0, -100.0]).reshape(1, 1, 1, 6)
    logits.requires_grad_()
    out = Bernoulli().log_prob(logits, x)
    out.backward()
    assert torch.isfinite(out).all() and torch.isfinite(logits.grad).all()
    # per pixel x * l - log(1 + e^l): -100, 0, -50, 0, -100, -50
    torch.testing.assert_close(out, torch.tensor([-300.0]))


# ---- autoregressive Bernoulli -----------------------------------------------------------------

SMALL = (1, 2, 3)  # six pixels: all 64 binary images can be listed


def _all_binary_images(shape=SMALL) -> torch.Tensor:
    n = math.prod(shape)
    bits = (torch.arange(2**n)[:, None] >> torch.arange(n)) & 1
    return bits.double().view(2**n, *shape)


def _chain_rule_log_prob(logits, weight, x) -> torch.Tensor:
    """sum_i log Bernoulli(x_i; logits_i + sum_{j<i} W[j, i] x_j), one pixel at a time."""
    flat_l, flat_x = logits.flatten(-3), x.flatten(-3)
    total = torch.zeros(flat_x.shape[:-1], dtype=flat_x.dtype)
    for i in range(flat_x.shape[-1]):
        context = sum((weight[j, i] * flat_x[..., j] for j in range(i)), torch.zeros(()))
        pixel = torch.distributions.Bernoulli(logits=flat_l[..., i] + context)
        total = total + pixel.log_prob(flat_x[..., i])
    return total


def test_autoregressive_bernoulli_is_the_chain_rule_and_sums_to_one():
    lik = _autoregressive(SMALL)
    xs = _all_binary_images()
    logits = torch.randn(3, 1, *SMALL, generator=_gen(7), dtype=torch.float64)
    log_p = lik.log_prob(logits, xs)  # [3, 64]: every image under three decoder outputs
    torch.testing.assert_close(log_p, _chain_rule_log_prob(logits, lik.weight, xs))
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(3, dtype=torch.float64))


def test_autoregressive_bernoulli_starts_as_the_independent_bernoulli():
    lik = AutoregressiveBernoulli(IMAGE).double()
    logits = _params(Bernoulli(), (4, 3))
    x = torch.bernoulli(torch.full((3, *IMAGE), 0.4, dtype=torch.float64), generator=_gen(8))
    torch.testing.assert_close(lik.log_prob(logits, x), Bernoulli().log_prob(logits, x))
    torch.testing.assert_close(lik.mean(logits), torch.sigmoid(logits))


def test_autoregressive_bernoulli_learns_only_the_causal_weights():
    lik = _autoregressive(SMALL)
    xs = _all_binary_images()
    lik.log_prob(torch.zeros(1, *SMALL, dtype=torch.float64), xs).sum().backward()
    grad = lik.weight.grad
    assert torch.all(grad.tril() == 0)  # pixel j never feeds a pixel at or before it
    upper = torch.ones(6, 6, dtype=torch.bool).triu(1)
    assert torch.all(grad[upper].abs() > 0)


def test_autoregressive_bernoulli_samples_follow_its_pmf():
    lik = _autoregressive(SMALL, seed=9)
    logits = torch.randn(1, *SMALL, generator=_gen(10), dtype=torch.float64)
    n = 40_000
    samples = lik.sample(logits.expand(n, *SMALL), generator=_gen(11))
    assert set(samples.unique().tolist()) <= {0.0, 1.0}
    codes = (samples.flatten(1) * 2 ** torch.arange(6)).sum(1).long()
    observed = torch.bincount(codes, minlength=64).double()
    expected = n * lik.log_prob(logits, _all_binary_images()).exp().detach()
    keep = expected >= 5  # Pearson chi-square on well-filled outcomes
    assert observed[~keep].sum() <= max(20.0, 3 * expected[~keep].sum())
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    df = max(int(keep.sum()) - 1, 1)
    assert chi2 < df + 6 * math.sqrt(2 * df) + 10


def test_autoregressive_bernoulli_mean_follows_the_more_likely_pixels():
    lik = _autoregressive(SMALL, seed=12)
    logits = torch.randn(5, 1, *SMALL, generator=_gen(13), dtype=torch.float64)
    mean = lik.mean(logits).flatten(1)
    chosen = (mean > 0.5).double()
    # Pixel i's probability given the more likely value of each pixel before it, by hand.
    for i in range(6):
        context = (chosen[:, :i] * lik.weight[:i, i]).sum(1)
        expected = torch.sigmoid(logits.flatten(1)[:, i] + context).detach()
        torch.testing.assert_close(mean[:, i], expected)


def test_autoregressive_bernoulli_refuses_another_image_shape():
    with pytest.raises(ValueError, match="image shape"):
        _autoregressive(SMALL).log_prob(torch.zeros(2, 1, 3, 2), torch.zeros(2, 1, 3, 2))


def test_pixel_autoregression_is_for_the_bernoulli_only():
    built = make_likelihood("bernoulli", image_shape=IMAGE, pixel_autoregression="linear")
    assert isinstance(built, AutoregressiveBernoulli) and built.weight.shape == (24, 24)
    assert type(make_likelihood("bernoulli", image_shape=IMAGE)) is Bernoulli
    with pytest.raises(ConfigError, match="bernoulli"):
        make_likelihood("gaussian", image_shape=IMAGE, pixel_autoregression="linear")
    with pytest.raises(ConfigError, match="pixel_autoregression"):
        make_likelihood("bernoulli", image_shape=IMAGE, pixel_autoregression="pixelcnn")


# ---- Gaussians -------------------------------------------------------------------------------


def test_gaussian_fixed_matches_torch_normal():
    mean = _params(Gaussian(0.1), (5,)) * 0.3 + 0.5
    x = _images(batch=5)
    expected = Normal(mean, 0.3).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(Gaussian(0.3).log_prob(mean, x), expected)


@pytest.mark.parametrize("per_pixel", [False, True])
def test_gaussian_learned_scale_matches_torch_normal(per_pixel):
    likelihood = GaussianLearnedScale(IMAGE, per_pixel=per_pixel).double()
    expected_shape = IMAGE if per_pixel else (1, 1, 1)
    assert likelihood.log_scale.shape == expected_shape
    torch.testing.assert_close(likelihood.scale, torch.full(expected_shape, 0.1).double())
    mean = _params(likelihood, (5,)) * 0.3 + 0.5
    x = _images(batch=5)
    expected = Normal(mean, likelihood.scale).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(likelihood.log_prob(mean, x), expected)


def test_gaussian_learned_scale_gradient_and_mle_global():
    likelihood = GaussianLearnedScale((1, 4, 4), per_pixel=False)
    mu = torch.rand(1, 1, 4, 4, generator=_gen(6))
    x = mu + 0.2 * torch.randn(256, 1, 4, 4, generator=_gen(7))
    loss = -likelihood.log_prob(mu, x).mean()
    loss.backward()
    assert likelihood.log_scale.grad.abs().item() > 0
    empirical = ((x - mu) ** 2).mean().sqrt()
    _fit(likelihood, mu, x)
    torch.testing.assert_close(likelihood.scale.squeeze(), empirical, rtol=0.01, atol=0)


def test_gaussian_learned_scale_mle_per_pixel():
    likelihood = GaussianLearnedScale((1, 2, 2), per_pixel=True)
    stds = torch.tensor([0.03, 0.1, 0.2, 0.4]).reshape(1, 2, 2)
    mu = torch.full((1, 1, 2, 2), 0.5)
    x = mu + stds * torch.randn(512, 1, 2, 2, generator=_gen(8))
    empirical = ((x - mu) ** 2).mean(0).sqrt()  # [1, 2, 2]
    _fit(likelihood, mu, x)
    torch.testing.assert_close(likelihood.scale, empirical, rtol=0.01, atol=0)


def _fit(likelihood, mu, x, steps: int = 400):
    optimizer = torch.optim.Adam(likelihood.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        (-likelihood.log_prob(mu, x).mean()).backward()
        optimizer.step()


def test_gaussian_learned_scale_bounded_below_on_constant_pixels():
    likelihood = GaussianLearnedScale((1, 2, 2), per_pixel=True)
    x = torch.zeros(8, 1, 2, 2)  # a flat border pixel: the MLE sigma would be 0
    _fit(likelihood, torch.zeros(1, 1, 2, 2), x, steps=300)
    assert torch.all(likelihood.scale >= MIN_SCALE)
    log_prob = likelihood.log_prob(torch.zeros(1, 1, 2, 2), x)
    # never above the density at the floor: log(1 / (sqrt(2 pi) MIN_SCALE)) per pixel
    assert torch.all(log_prob <= 4 * -math.log(math.sqrt(2 * math.pi) * MIN_SCALE) + 1e-4)
    likelihood.zero_grad()
    likelihood.log_prob(torch.zeros(1, 1, 2, 2), x + 0.3).sum().backward()
    assert torch.all(likelihood.log_scale.grad != 0)  # a soft floor keeps pulling


def test_gaussian_predicted_scale_matches_torch_normal():
    likelihood = GaussianPredictedScale()
    mean = torch.rand(5, IMAGE[0], *IMAGE[1:], generator=_gen(9), dtype=torch.float64)
    raw = torch.randn(5, IMAGE[0], *IMAGE[1:], generator=_gen(10), dtype=torch.float64) - 2
    params = torch.cat([mean, raw], dim=1)  # channel blocks: means, then log-scales
    x = _images(batch=5)
    # independent form of the soft floor: log sigma = log(exp(floor) + exp(raw)) = logaddexp
    floor = torch.full_like(raw, math.log(MIN_SCALE))
    sigma = torch.logaddexp(floor, raw).exp()
    expected = Normal(mean, sigma).log_prob(x).sum((-3, -2, -1))
    torch.testing.assert_close(likelihood.log_prob(params, x), expected)
    torch.testing.assert_close(likelihood.mean(params), mean.clamp(0, 1))


def test_gaussian_predicted_scale_floor_keeps_density_finite():
    params = torch.cat([torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), -80.0)], dim=1)
    params.requires_grad_()
    out = GaussianPredictedScale().log_prob(params, torch.zeros(1, 1, 1, 1))
    out.backward()
    assert torch.isfinite(params.grad).all()
    expected = -math.log(math.sqrt(2 * math.pi) * MIN_SCALE)
    torch.testing.assert_close(out, torch.tensor([expected]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("likelihood", [Gaussian(0.05), GaussianPredictedScale()])
def test_gaussian_density_integrates_to_one(likelihood):
    # one pixel, trapezoid rule on a grid wide enough for the tails
    grid = torch.linspace(-3, 4, 70_001, dtype=torch.float64).reshape(-1, 1, 1, 1)
    per_pixel = likelihood.params_per_pixel
    params = torch.tensor([0.3, -2.0][:per_pixel], dtype=torch.float64).reshape(1, -1, 1, 1)
    density = likelihood.log_prob(params, grid).exp()
    integral = torch.trapezoid(density, grid.flatten())
    assert abs(integral.item() - 1) < 1e-6


# ---- discretized logistic ----------------------------------------------------------------------

SETTINGS = [  # (mean, log_scale) in [-1, 1] units
    (0.0, -7.0),
    (0.3, -5.0),
    (-0.5, -3.0),
    (0.1, -1.0),
    (0.9, 0.5),
    (-1.0, -4.0),
    (1.0, -2.0),
    (-1.7, -3.0),
    (2.5, 1.0),
    (0.0, 4.0),
    (0.2, 6.0),  # so wide that a bin is narrower than 1e-4 scales: the series branch
    (1 / 255, -6.5),  # centred on a bin edge
]


def _logistic_pmf_reference(mean: float, log_scale: float) -> torch.Tensor:
    """Bin masses from a float64 Logistic(mean, scale) built from torch.distributions."""
    scale = math.exp(max(log_scale, -7.0))
    logistic = TransformedDistribution(
        Uniform(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
        [SigmoidTransform().inv, AffineTransform(loc=mean, scale=scale)],
    )
    centres = LEVELS * 2 - 1
    upper = logistic.cdf(centres + 1 / 255)
    lower = logistic.cdf(centres - 1 / 255)
    upper[-1] = 1.0  # the highest bin extends to +inf
    lower[0] = 0.0  # the lowest bin extends to -inf
    return upper - lower


def _logistic_params(settings, dtype=torch.float64) -> torch.Tensor:
    """params [S, 1, 2, 1, 1] for one-pixel images, broadcasting against x [256, 1, 1, 1]."""
    return torch.tensor(settings, dtype=dtype).reshape(len(settings), 1, 2, 1, 1)


def _pmf(settings, dtype=torch.float64) -> torch.Tensor:
    x = LEVELS.to(dtype).reshape(256, 1, 1, 1)
    return DiscretizedLogistic().log_prob(_logistic_params(settings, dtype), x).exp()  # [S, 256]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_logistic_pmf_sums_to_one(dtype):
    total = _pmf(SETTINGS, dtype).double().sum(-1)
    torch.testing.assert_close(
        total, torch.ones(len(SETTINGS), dtype=torch.float64), rtol=0, atol=1e-4
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discretized_logistic_matches_logistic_cdf_differences(dtype):
    pmf = _pmf(SETTINGS, dtype).double()
    for i, (mean, log_scale) in enumerate(SETTINGS):
        reference = _logistic_pmf_reference(mean, log_scale)
        tol = 1e-9 if dtype == torch.float64 else 1e-6
        # absolute on the masses; relative where the mass is large enough for float64 CDFs
        torch.testing.assert_close(pmf[i], reference, rtol=1e-4, atol=tol)
        big = reference > 1e-8
        rtol = 1e-7 if dtype == torch.float64 else 1e-3
        torch.testing.assert_close(pmf[i][big], reference[big], rtol=rtol, atol=0)


def test_discretized_logistic_edge_bins():
    log_scale = -3.0
    s = math.exp(log_scale)
    params = _logistic_params([(-0.2, log_scale)])
    x = torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    out = DiscretizedLogistic().log_prob(params, x)[0]
    sigmoid = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    lowest = math.log(sigmoid((-1 + 1 / 255 + 0.2) / s))  # P(y < -1 + 1/255)
    highest = math.log(sigmoid(-(1 - 1 / 255 + 0.2) / s))  # P(y > 1 - 1/255)
    torch.testing.assert_close(out, torch.tensor([lowest, highest], dtype=torch.float64))
    # a logistic far below the range puts (almost) all its mass in the lowest bin
    far = DiscretizedLogistic().log_prob(_logistic_params([(-3.0, -3.0)]), x)[0]
    assert far[0].abs() < 1e-12 and far[1] < -50


def test_discretized_logistic_extreme_scales_finite():
    settings = [(m, ls) for m in (-5.0, 0.0, 0.4, 5.0) for ls in (-100.0, -7.0, 10.0, 50.0, 1e3)]
    params = _logistic_params(settings, torch.float32).requires_grad_()
    x = LEVELS.float().reshape(256, 1, 1, 1)
    out = DiscretizedLogistic().log_prob(params, x)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(params.grad).all()
    torch.testing.assert_close(
        out.double().exp().sum(-1),
        torch.ones(len(settings), dtype=torch.float64),
        rtol=0,
        atol=1e-4,
    )


def test_discretized_logistic_rounds_x_to_nearest_level():
    params = _logistic_params([(0.1, -3.0)])
    x = LEVELS.reshape(256, 1, 1, 1)
    noise = (torch.rand(x.shape, generator=_gen(11), dtype=torch.float64) - 0.5) * (0.9 / 255)
    likelihood = DiscretizedLogistic()
    torch.testing.assert_close(
        likelihood.log_prob(params, x + noise), likelihood.log_prob(params, x)
    )


def test_discretized_logistic_mean_maps_back_to_unit_range():
    params = torch.tensor([-0.5, 0.0, 3.0, 0.0, 0.0, 0.0]).reshape(1, 6, 1, 1)
    mean = DiscretizedLogistic().mean(params)
    torch.testing.assert_close(mean.flatten(), torch.tensor([0.25, 0.5, 1.0]))


@pytest.mark.parametrize("setting", [(0.1, -3.0), (0.93, -2.5), (-1.0, -6.0)])
def test_discretized_logistic_samples_follow_pmf(setting):
    n = 100_000
    params = _logistic_params([setting]).reshape(1, 2, 1, 1).expand(n, 2, 1, 1)
    samples = DiscretizedLogistic().sample(params, generator=_gen(12)).flatten()
    levels = samples * 255
    assert torch.all(levels == levels.round()) and levels.min() >= 0 and levels.max() <= 255
    observed = torch.bincount(levels.round().long(), minlength=256).double()
    expected = n * _logistic_pmf_reference(*setting)
    keep = expected >= 5  # Pearson chi-square on well-filled bins
    assert observed[~keep].sum() <= max(20.0, 3 * expected[~keep].sum())
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum().item()
    df = max(int(keep.sum()) - 1, 1)
    assert chi2 < df + 6 * math.sqrt(2 * df) + 10


# ---- names and bits/dim ----------------------------------------------------------------------


def test_make_likelihood_builds_every_name():
    for name, cls in LIKELIHOODS.items():
        built = make_likelihood(name, image_shape=IMAGE)
        assert type(built) is cls
    assert make_likelihood("gaussian", image_shape=IMAGE, gaussian_scale=0.3).scale == 0.3
    pixel = make_likelihood("gaussian_learned", image_shape=IMAGE, learned_scale="pixel")
    assert pixel.log_scale.shape == IMAGE
    shared = make_likelihood("gaussian_learned", image_shape=IMAGE, learned_scale="global")
    assert shared.log_scale.numel() == 1
    assert [LIKELIHOODS[n].params_per_pixel for n in sorted(LIKELIHOODS)] == [1, 2, 1, 1, 2]
    with pytest.raises(ConfigError, match="unknown likelihood"):
        make_likelihood("poisson", image_shape=IMAGE)
    with pytest.raises(ConfigError, match="learned_scale"):
        make_likelihood("gaussian_learned", image_shape=IMAGE, learned_scale="channel")


def test_bits_per_dim_hand_computation():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    nats = torch.tensor([3072 * math.log(2) * 3.5, 0.0])
    torch.testing.assert_close(bits_per_dim(nats, 3072), torch.tensor([3.5, 0.0]))
    # a uniform pmf over 256 levels costs exactly 8 bits per dimension
    assert bits_per_dim(10 * math.log(256), 10) == pytest.approx(8.0)
    with pytest.raises(ValueError):
        bits_per_dim(1.0, 0)
