"""Likelihoods p(x|z) over images: each turns a decoder output into nats per example.

A decoder outputs ``params`` of shape [..., C * params_per_pixel, H, W]; the image dims are
always the last three and any leading dims (batch, or importance samples and batch) broadcast
against ``x`` of shape [B, C, H, W] with values in [0, 1]. When a likelihood needs several
numbers per pixel they are stacked in channel blocks: ``params[..., :C]`` holds the first
(the mean), ``params[..., C:2C]`` the second (a log-scale).

Every likelihood has ``params_per_pixel``, ``log_prob(params, x) -> [...]`` summed over C, H, W,
``mean(params)`` and ``sample(params, generator)``, both images in [0, 1] for pictures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.errors import ConfigError

_LOG_2PI = math.log(2.0 * math.pi)
_IMAGE_DIMS = (-3, -2, -1)

# Lower bound on a learned or predicted Gaussian sigma, in [0, 1] pixel units: one 8-bit grey
# level. On a pixel that is constant over the data (MNIST's border) the maximum-likelihood sigma
# is 0 and the density, hence the "ELBO", grows without bound; a sigma narrower than one
# quantisation step claims precision that 8-bit data does not have. It caps the log-density at
# log(255 / sqrt(2 pi)) ~ 4.6 nats per pixel.
MIN_SCALE = 1.0 / 255.0

# PixelCNN++ (Salimans et al. 2017) clamps the logistic log-scale at -7 (scale ~ 9e-4 in
# [-1, 1] units, a ninth of a bin) so that 1/scale and its gradients stay bounded.
LOGISTIC_LOG_SCALE_MIN = -7.0
NUM_LEVELS = 256  # 8-bit data


def _split(params: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
    """Split [..., parts * C, H, W] into ``parts`` tensors of [..., C, H, W] (channel blocks)."""
    if params.dim() < 3 or params.shape[-3] % parts:
        raise ValueError(
            f"expected params [..., {parts} * C, H, W], got shape {tuple(params.shape)}"
        )
    return params.chunk(parts, dim=-3)


def _check_channels(params: torch.Tensor, x: torch.Tensor, per_pixel: int) -> None:
    if params.dim() < 3 or x.dim() < 3 or params.shape[-3] != per_pixel * x.shape[-3]:
        raise ValueError(
            f"params {tuple(params.shape)} must have {per_pixel} channels per image channel "
            f"of x {tuple(x.shape)}"
        )


def _soft_floor(log_scale: torch.Tensor, floor: float) -> torch.Tensor:
    """floor + softplus(log_scale - floor): a smooth max(log_scale, floor).

    The "softclip" of Rybkin et al. 2021 (sigma-VAE). Unlike a clamp it never zeroes the
    gradient, so a scale pushed below the floor is still pulled back by the data.
    """
    return floor + F.softplus(log_scale - floor)


def _gaussian_log_density(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Elementwise log N(x; mean, exp(log_scale)^2)."""
    return -0.5 * _LOG_2PI - log_scale - 0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2


def _gaussian_sample(
    mean: torch.Tensor, scale: torch.Tensor | float, generator: torch.Generator | None
) -> torch.Tensor:
    eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return (mean + scale * eps).clamp(0.0, 1.0)


class Bernoulli(nn.Module):
    """Independent Bernoulli pixels with logits as params: the classic binarised-MNIST likelihood.

    For grey x in [0, 1] the same formula is the (unnormalised) cross-entropy that many VAEs
    use; it is not a density over [0, 1] (see the continuous Bernoulli, Loaiza-Ganem &
    Cunningham 2019), so its nats are only comparable on binary data.
    """

    params_per_pixel: int = 1

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = sum x * l - softplus(l), i.e. minus BCE-with-logits, shape [...]."""
        _check_channels(params, x, self.params_per_pixel)
        # x log sigmoid(l) + (1 - x) log sigmoid(-l) = x l - softplus(l): stable for any l.
        return (x * params - F.softplus(params)).sum(_IMAGE_DIMS)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities sigmoid(logits)."""
        return torch.sigmoid(params)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Binary pixels drawn from the Bernoulli (as floats 0.0 / 1.0)."""
        return torch.bernoulli(torch.sigmoid(params), generator=generator)


class AutoregressiveBernoulli(nn.Module):
    """Bernoulli pixels whose logits also see the pixels before them in raster order.

    logit_i = params_i + sum_{j<i} W_ji x_j over the C*H*W pixels flattened in (C, H, W)
    order: the decoder's logits plus a fully visible sigmoid belief net (Frey 1998). Given z,
    independent pixels cannot say that neighbours switch on together (where exactly an edge
    runs); this term can. It costs one [D, D] matrix product per image, shared by all the
    importance samples of that image. W starts at zero, so an
    untrained model is the plain Bernoulli. ``mean`` and ``sample`` decode pixel by pixel.
    """

    params_per_pixel: int = 1

    def __init__(self, shape: tuple[int, int, int]) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {shape}")
        self.image_shape = tuple(int(s) for s in shape)
        dims = math.prod(self.image_shape)
        self.weight = nn.Parameter(torch.zeros(dims, dims))

    def extra_repr(self) -> str:
        return f"shape={self.image_shape}"

    def causal_weight(self) -> torch.Tensor:
        """W with everything on and below the diagonal zeroed: row j feeds pixels i > j."""
        return self.weight.triu(1)

    def context_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The autoregressive part sum_{j<i} W_ji x_j of every logit, shaped like ``x``."""
        flat = x.flatten(-3).to(self.weight.dtype)
        return (flat @ self.causal_weight()).view(x.shape).to(x.dtype)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) = sum_i x_i l_i - softplus(l_i) with l = params + context, shape [...]."""
        _check_channels(params, x, self.params_per_pixel)
        if tuple(x.shape[-3:]) != self.image_shape:
            raise ValueError(f"x {tuple(x.shape)} is not of image shape {self.image_shape}")
        logits = params + self.context_logits(x)
        return (x * logits - F.softplus(logits)).sum(_IMAGE_DIMS)

    def _decode(
        self, params: torch.Tensor, draw: bool, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Pixel by pixel: each pixel's probability given the pixels chosen before it, or the
        drawn pixels themselves when ``draw``."""
        lead = params.shape[:-3]
        logits = params.reshape(-1, params.shape[-3:].numel()).clone()
        weight = self.causal_weight().detach().to(logits.dtype)
        probs = torch.empty_like(logits)
        for i in range(logits.shape[1]):
            p = torch.sigmoid(logits[:, i])
            bit = torch.bernoulli(p, generator=generator) if draw else (p > 0.5).to(p.dtype)
            probs[:, i] = bit if draw else p
            # Pixel i now feeds every later logit through row i of the causal weight.
            logits[:, i + 1 :] += bit[:, None] * weight[i, i + 1 :]
        return probs.view(*lead, *params.shape[-3:])

    @torch.no_grad()
    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """Each pixel's probability given the more likely value of every pixel before it: a
        deterministic picture (the exact mean would need a sum over all earlier pixels)."""
        return self._decode(params, draw=False, generator=None)

    @torch.no_grad()
    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Binary pixels drawn in raster order, each from its conditional Bernoulli."""
        return self._decode(params, draw=True, generator=generator)


class Gaussian(nn.Module):
    """Gaussian pixels N(x; mu, sigma^2) with a fixed sigma; params are the mean mu."""

    params_per_pixel: int = 1

    def __init__(self, scale: float = 0.1) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"Gaussian scale must be positive, got {scale}")
        self.scale = float(scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log N(x; params, scale^2) in nats summed over C, H, W, shape [...]."""
        _check_channels(params, x, self.params_per_pixel)
        z = (x - params) / self.scale
        return (-0.5 * _LOG_2PI - math.log(self.scale) - 0.5 * z**2).sum(_IMAGE_DIMS)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The mean, clipped to [0, 1] for pictures."""
        return params.clamp(0.0, 1.0)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """mean + scale * noise, clipped to [0, 1] for pictures."""
        return _gaussian_sample(params, self.scale, generator)


class GaussianLearnedScale(nn.Module):
    """Gaussian pixels whose sigma is a learned parameter, shared or one per (C, H, W) pixel.

    Learning sigma by maximum likelihood calibrates the weight of the reconstruction term
    against the KL instead of fixing it by hand (Rybkin et al. 2021, "sigma-VAE").
    """

    params_per_pixel: int = 1

    def __init__(
        self,
        shape: tuple[int, int, int],
        per_pixel: bool = False,
        init_scale: float = 0.1,
        min_scale: float = MIN_SCALE,
    ) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {shape}")
        if not 0 < min_scale < init_scale:
            raise ValueError(f"need 0 < min_scale < init_scale, got {min_scale}, {init_scale}")
        self.image_shape = tuple(int(s) for s in shape)
        self.per_pixel = per_pixel
        self.min_log_scale = math.log(min_scale)
        # Start at sigma = 0.1 (a tenth of the pixel range, about a third of a typical image's
        # pixel std): sigma = 1 would make the reconstruction term so weak against the KL that
        # the posterior can collapse before sigma has time to shrink, while a tiny sigma gives
        # huge early gradients. The raw value is the inverse of the soft floor at log(0.1).
        gap = math.log(init_scale) - self.min_log_scale
        raw = self.min_log_scale + gap + math.log(-math.expm1(-gap))  # softplus^-1
        param_shape = self.image_shape if per_pixel else (1, 1, 1)
        self.log_scale = nn.Parameter(torch.full(param_shape, raw))

    def extra_repr(self) -> str:
        return f"shape={self.image_shape}, per_pixel={self.per_pixel}"

    def effective_log_scale(self) -> torch.Tensor:
        """log sigma after the soft lower bound, shape (1, 1, 1) or (C, H, W)."""
        return _soft_floor(self.log_scale, self.min_log_scale)

    @property
    def scale(self) -> torch.Tensor:
        """The current sigma (for logging), shape (1, 1, 1) or (C, H, W)."""
        return self.effective_log_scale().exp()

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log N(x; params, sigma^2) in nats summed over C, H, W, shape [...]."""
        _check_channels(params, x, self.params_per_pixel)
        log_scale = self.effective_log_scale()
        return _gaussian_log_density(x, params, log_scale).sum(_IMAGE_DIMS)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The mean, clipped to [0, 1] for pictures."""
        return params.clamp(0.0, 1.0)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """mean + sigma * noise, clipped to [0, 1] for pictures."""
        return _gaussian_sample(params, self.scale.detach(), generator)


class GaussianPredictedScale(nn.Module):
    """Gaussian pixels whose mean and log sigma(z) the decoder predicts (2 numbers per pixel)."""

    params_per_pixel: int = 2

    def __init__(self, min_scale: float = MIN_SCALE) -> None:
        super().__init__()
        if min_scale <= 0:
            raise ValueError(f"min_scale must be positive, got {min_scale}")
        self.min_log_scale = math.log(min_scale)

    def extra_repr(self) -> str:
        return f"min_scale={math.exp(self.min_log_scale):.4g}"

    def _mean_log_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = _split(params, 2)
        # A decoder can make sigma(z) arbitrarily small on constant pixels, the worst case of
        # the unbounded density: the soft floor is essential here.
        return mean, _soft_floor(raw, self.min_log_scale)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mu(z), sigma(z)^2) in nats summed over C, H, W, shape [...]."""
        _check_channels(params, x, self.params_per_pixel)
        mean, log_scale = self._mean_log_scale(params)
        return _gaussian_log_density(x, mean, log_scale).sum(_IMAGE_DIMS)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The predicted mean, clipped to [0, 1] for pictures."""
        return _split(params, 2)[0].clamp(0.0, 1.0)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """mu(z) + sigma(z) * noise, clipped to [0, 1] for pictures."""
        mean, log_scale = self._mean_log_scale(params)
        return _gaussian_sample(mean, log_scale.exp(), generator)


def _log1mexp_of(log_d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d = exp(log_d) > 0, finite even when d underflows."""
    d = log_d.exp()
    # Small d: log(1 - e^-d) = log d - d/2 + O(d^2); the clamps keep the unused branch of
    # torch.where finite so that its (zero-weighted) gradient cannot turn into NaN.
    small = log_d - 0.5 * d.clamp(max=1e-4)
    large = torch.log(-torch.expm1(-d.clamp(min=1e-4)))
    return torch.where(d < 1e-4, small, large)


class DiscretizedLogistic(nn.Module):
    """A logistic discretised to the 256 levels of 8-bit pixels (PixelCNN++, one component).

    params hold the mean and log-scale of the logistic in [-1, 1] units (channel blocks); x
    holds k / 255 and is rounded to the nearest level. The nats are a true log-probability of
    the 8-bit image, directly comparable to published bits/dim.
    """

    params_per_pixel: int = 2

    def _mean_log_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = _split(params, 2)
        return mean, log_scale.clamp(min=LOGISTIC_LOG_SCALE_MIN)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log P(x|z) in nats summed over C, H, W, shape [...]: the mass of each pixel's bin."""
        _check_channels(params, x, self.params_per_pixel)
        mean, log_scale = self._mean_log_scale(params)
        top = NUM_LEVELS - 1
        level = (x * top).round().clamp(0, top)
        centre = level * (2.0 / top) - 1.0  # Salimans et al. 2017: rescale to [-1, 1]
        inv_scale = torch.exp(-log_scale)
        # Bin k is [c - 1/255, c + 1/255], a = (c + 1/255 - mu) / s, b = (c - 1/255 - mu) / s;
        # the edge bins extend to -inf and +inf (Salimans et al. 2017, eq. 2, one component).
        upper = inv_scale * (centre - mean + 1.0 / top)
        lower = inv_scale * (centre - mean - 1.0 / top)
        log_cdf_upper = F.logsigmoid(upper)  # log F(a), the whole mass of the lowest bin
        log_sf_lower = F.logsigmoid(-lower)  # log (1 - F(b)), the whole mass of the highest bin
        # Interior bins: sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - e^-(a - b)) exactly,
        # with a - b = (2/255) / s. Every factor is computed in log space without cancellation,
        # so this stays accurate where PixelCNN++ needs its fallback to the centre density.
        log_width = math.log(2.0 / top) - log_scale
        log_interior = log_cdf_upper + log_sf_lower + _log1mexp_of(log_width)
        log_mass = torch.where(
            level == 0, log_cdf_upper, torch.where(level == top, log_sf_lower, log_interior)
        )
        return log_mass.sum(_IMAGE_DIMS)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The logistic's location mapped back to [0, 1] and clipped (for pictures)."""
        mean, _ = _split(params, 2)
        return ((mean + 1.0) / 2.0).clamp(0.0, 1.0)

    def sample(
        self, params: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw a logistic sample and quantise it to its bin: values k / 255, k in 0..255."""
        mean, log_scale = self._mean_log_scale(params)
        u = torch.rand(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        u = u.clamp(min=torch.finfo(u.dtype).tiny)  # rand is in [0, 1): keep log(u) finite
        y = mean + log_scale.exp() * (torch.log(u) - torch.log1p(-u))  # inverse logistic CDF
        top = NUM_LEVELS - 1
        level = ((y + 1.0) * (top / 2.0)).round().clamp(0, top)  # bins of half-width 1/255
        return level / top


LIKELIHOODS: dict[str, type[nn.Module]] = {
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
    "gaussian_learned": GaussianLearnedScale,
    "gaussian_predicted": GaussianPredictedScale,
    "discretized_logistic": DiscretizedLogistic,
}

_LEARNED_SCALES = ("global", "pixel")


def make_likelihood(
    name: str,
    *,
    image_shape: tuple[int, int, int],
    gaussian_scale: float = 0.1,
    learned_scale: str = "global",
    pixel_autoregression: str = "none",
) -> nn.Module:
    """Build the likelihood named in a config, passing each class only the options it uses."""
    if name not in LIKELIHOODS:
        raise ConfigError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    if pixel_autoregression not in ("none", "linear"):
        raise ConfigError(
            f"unknown pixel_autoregression {pixel_autoregression!r}; choose 'none' or 'linear'"
        )
    cls = LIKELIHOODS[name]
    if pixel_autoregression == "linear":
        if cls is not Bernoulli:
            raise ConfigError(
                f"pixel_autoregression = 'linear' is for the bernoulli likelihood, not {name!r}"
            )
        return AutoregressiveBernoulli(tuple(image_shape))
    if cls is Gaussian:
        return Gaussian(scale=gaussian_scale)
    if cls is GaussianLearnedScale:
        if learned_scale not in _LEARNED_SCALES:
            raise ConfigError(
                f"unknown learned_scale {learned_scale!r}; choose one of {list(_LEARNED_SCALES)}"
            )
        return GaussianLearnedScale(tuple(image_shape), per_pixel=learned_scale == "pixel")
    return cls()


def bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Convert a negative log-likelihood in nats per example to bits per dimension.

    bits/dim = nll / (D ln 2), the one place it is derived. For continuous densities on data
    dequantized to [0, 1] add D * ln 256 nats first to compare with results on 8-bit values.
    """
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    return nll_nats / (num_dims * math.log(2.0))
