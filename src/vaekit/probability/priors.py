"""Priors p(z) over the latent space.

A prior is an ``nn.Module`` so that learned priors drop in with their own parameters and follow
the model across devices and into checkpoints. Every prior here is a mixture of diagonal
Gaussians, p(z) = sum_k w_k N(z; mu_k, diag(sigma_k^2)), and says so through ``components()``:
N(0, I) is the one-component case, :class:`MixtureOfGaussians` learns its components, and
:class:`VampPrior` (Tomczak & Welling 2018) takes them from the posteriors of learned
pseudo-inputs. Diagnostics and pictures read the mixture (its marginals, its quantiles) rather
than assuming N(0, I).

Each prior offers ``log_prob(z)`` ([..., D] -> [...]), ``sample(n, generator, temperature)``
and ``log_prob_per_dim(z)`` ([..., D] -> [..., D]), the chain-rule terms
log p(z_d | z_<d), which sum to ``log_prob``: for N(0, I) they are the independent
log N(z_d; 0, 1), and for a mixture they split its KL into per-latent parts, so the Monte
Carlo ELBO and free bits work unchanged. A mixture's chain rule costs a [..., K, D] tensor and
its backward, which made the VampPrior recipe's training step 2.6-2.9x slower
(bench/mixture_step.py), so training that reads only the KL's sum asks
:func:`log_prob_split` for the cheap form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from vaekit.errors import ConfigError
from vaekit.probability.gaussian import DiagonalGaussian

_LOG_2PI = math.log(2.0 * math.pi)

Encode = Callable[[torch.Tensor], DiagonalGaussian]


def _check_dim(z: torch.Tensor, dim: int) -> None:
    if z.shape[-1] != dim:
        raise ValueError(f"expected z with last dim {dim}, got shape {tuple(z.shape)}")


def _check_temperature(temperature: float) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be non-negative, got {temperature}")


class StandardNormal(nn.Module):
    """The isotropic prior p(z) = N(0, I) over ``dim`` latent dimensions."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"latent dim must be positive, got {dim}")
        self.dim = dim
        # Carries device and dtype for sample(); not persistent, so checkpoints hold no key.
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def log_prob_per_dim(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z_d; 0, 1) for each latent dim, shape [..., D]."""
        _check_dim(z, self.dim)
        return -0.5 * (z**2 + _LOG_2PI)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) in nats summed over the last dim: [..., D] gives [...]."""
        return self.log_prob_per_dim(z).sum(-1)

    def components(self) -> tuple[torch.Tensor, DiagonalGaussian]:
        """N(0, I) as a one-component mixture: log weights [1] and the Gaussian [1, D]."""
        zeros = self._anchor.new_zeros((1, self.dim))
        return self._anchor.new_zeros(1), DiagonalGaussian(zeros, zeros)

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Draw n latents [n, D] from N(0, temperature^2 I); temperature < 1 tames pictures."""
        _check_temperature(temperature)
        anchor = self._anchor
        eps = torch.randn(
            (n, self.dim), generator=generator, dtype=anchor.dtype, device=anchor.device
        )
        return temperature * eps


def mixture_log_prob(
    z: torch.Tensor, log_weights: torch.Tensor, components: DiagonalGaussian
) -> torch.Tensor:
    """log sum_k w_k N(z; mu_k, diag(var_k)) for z [..., D] and K components: [...].

    The squared distances to all K means come from two matrix products,
    sum_d (z_d - mu_kd)^2 / var_kd = z^2 . (1/var_k) - 2 z . (mu_k / var_k) + mu_k^2 . (1/var_k),
    so memory grows with [..., K], not [..., K, D] (importance sampling evaluates the prior
    at thousands of z per image). Both z and the means are first shifted by the mean of the
    means, which keeps the cancellation in that expansion small.

    The products run in at least float32 even under bf16 autocast: the expansion subtracts
    terms that grow with 1/var, and with bfloat16's 8-bit mantissa a sharp posterior's
    log p(z) came out wrong by 6 nats on average (30 at worst), enough to derail training.
    """
    dtype = torch.promote_types(z.dtype, torch.float32)
    with torch.autocast(z.device.type, enabled=False):
        z = z.to(dtype)
        mean, log_var = components.mean.to(dtype), components.log_var.to(dtype)  # [K, D]
        shift = mean.mean(0).detach()
        zc, mc = z - shift, mean - shift
        inv_var = torch.exp(-log_var)
        sq = (zc**2) @ inv_var.T - 2 * zc @ (mc * inv_var).T + (mc**2 * inv_var).sum(-1)
        log_norm = -0.5 * (log_var.sum(-1) + z.shape[-1] * _LOG_2PI)  # [K]
        weights = log_weights.to(dtype)
        return torch.logsumexp(weights + log_norm - 0.5 * sq.clamp_min(0), dim=-1)


def mixture_log_prob_per_dim(
    z: torch.Tensor, log_weights: torch.Tensor, components: DiagonalGaussian
) -> torch.Tensor:
    """Chain-rule terms log p(z_d | z_<d) of a diagonal mixture, [..., D]; they sum to log p(z).

    Given z_<d, the mixture's weights become the responsibilities
    w_k(z_<d) ~ w_k prod_{j<d} N(z_j; mu_kj, var_kj), so with the cumulative joint
    a_d = log sum_k w_k prod_{j<=d} N(z_j; mu_kj, var_kj) = log p(z_<=d) each term is
    a_d - a_{d-1} (a_0 = log sum_k w_k = 0). Memory grows with [..., K, D].
    """
    per_dim = components.log_prob_per_dim(z.unsqueeze(-2))  # [..., K, D]
    joint = torch.logsumexp(log_weights.unsqueeze(-1) + per_dim.cumsum(-1), dim=-2)  # [..., D]
    before = torch.cat([torch.zeros_like(joint[..., :1]), joint[..., :-1]], dim=-1)
    return joint - before


class DiagonalMixturePrior(nn.Module):
    """p(z) = sum_k w_k N(z; mu_k, diag(var_k)); each subclass says where the parts come from."""

    def __init__(self, dim: int, num_components: int) -> None:
        super().__init__()
        if dim <= 0:
            raise ValueError(f"latent dim must be positive, got {dim}")
        if num_components <= 0:
            raise ValueError(f"the number of components must be positive, got {num_components}")
        self.dim = dim
        self.num_components = num_components
        self._fixed: tuple[torch.Tensor, DiagonalGaussian] | None = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, components={self.num_components}"

    def _parts(self) -> tuple[torch.Tensor, DiagonalGaussian]:
        """The components, or the ones :func:`components_fixed` computed for a block of work."""
        return self._fixed if self._fixed is not None else self.components()

    def components(self) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Normalised log weights [K] and the component Gaussians [K, D]."""
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) in nats (a log-sum-exp over components): [..., D] gives [...]."""
        _check_dim(z, self.dim)
        return mixture_log_prob(z, *self._parts())

    def log_prob_per_dim(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z_d | z_<d) for each latent dim, [..., D], summing to :meth:`log_prob`."""
        _check_dim(z, self.dim)
        return mixture_log_prob_per_dim(z, *self._parts())

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Draw n latents [n, D]: a component k ~ w, then z ~ N(mu_k, temperature^2 var_k).

        The temperature scales each component's standard deviation and keeps its mean, so
        temperature 0 gives component means (it is not a tempered density p(z)^(1/T^2)).
        """
        _check_temperature(temperature)
        log_weights, parts = self._parts()
        mean, std = parts.mean, parts.std
        k = torch.multinomial(log_weights.exp(), n, replacement=True, generator=generator)
        eps = torch.randn((n, self.dim), generator=generator, dtype=mean.dtype, device=mean.device)
        return mean[k] + temperature * std[k] * eps


class MixtureOfGaussians(DiagonalMixturePrior):
    """A learned mixture of K diagonal Gaussians: means, log-variances and weights are trained.

    Means start at N(0, 0.5^2) draws (distinct, so the components do not learn in lockstep),
    log-variances at 0 and the weights equal: at the start the prior is close to N(0, I).
    """

    def __init__(self, dim: int, num_components: int, init_spread: float = 0.5) -> None:
        super().__init__(dim, num_components)
        self.means = nn.Parameter(init_spread * torch.randn(num_components, dim))
        self.log_vars = nn.Parameter(torch.zeros(num_components, dim))
        self.logits = nn.Parameter(torch.zeros(num_components))

    def components(self) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Normalised log weights [K] and the component Gaussians [K, D]."""
        return torch.log_softmax(self.logits, dim=0), DiagonalGaussian(self.means, self.log_vars)


class VampPrior(DiagonalMixturePrior):
    """The VampPrior p(z) = (1/K) sum_k q(z | u_k) (Tomczak & Welling 2018).

    The K pseudo-inputs u_k are learned images [K, C, H, W], kept as logits whose sigmoid lies
    in (0, 1), so the encoder always sees valid images and no pixel stops learning at a clip.
    They start as uniform noise in [0.1, 0.9]. The prior needs the model's encoder: the model
    binds its ``encode`` with :meth:`bind`. It is kept as a plain attribute, not a submodule,
    so the encoder's weights appear once in the state dict, and ``copy.deepcopy`` of the model
    rebinds the copy to the copied encoder. The pseudo-inputs go through the encoder in
    whatever mode the model is in (BatchNorm in training mode sees them as a batch).
    """

    def __init__(
        self,
        dim: int,
        num_components: int,
        image_shape: tuple[int, int, int],
        encode: Encode | None = None,
    ) -> None:
        super().__init__(dim, num_components)
        self.image_shape = tuple(image_shape)
        start = 0.1 + 0.8 * torch.rand(num_components, *self.image_shape)
        self.pseudo_logits = nn.Parameter(torch.logit(start))
        self._encode = encode

    def bind(self, encode: Encode) -> None:
        """Use ``encode`` (images [K, C, H, W] -> q(z|x)) as the encoder of the pseudo-inputs."""
        self._encode = encode

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        """The pseudo-inputs u_k as images in (0, 1), [K, C, H, W]."""
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> tuple[torch.Tensor, DiagonalGaussian]:
        """Equal log weights -log K [K] and the posteriors q(z | u_k) [K, D]."""
        if self._encode is None:
            raise RuntimeError("this VampPrior has no encoder: call bind(model.encode) first")
        q = self._encode(self.pseudo_inputs)
        if q.mean.shape != (self.num_components, self.dim):
            raise ValueError(
                f"the encoder gave posteriors of shape {tuple(q.mean.shape)} for "
                f"{self.num_components} pseudo-inputs, expected [K, {self.dim}]"
            )
        log_weights = q.mean.new_full((self.num_components,), -math.log(self.num_components))
        return log_weights, q


@contextmanager
def components_fixed(prior: nn.Module) -> Iterator[None]:
    """Inside the block a mixture prior computes its components once, not at every call.

    For evaluation without gradients, where the weights do not change: a VampPrior otherwise
    encodes its K pseudo-inputs again for every chunk of importance samples. Does nothing for
    N(0, I), or while gradients are on (training must see the components' graph each step).
    """
    if not isinstance(prior, DiagonalMixturePrior) or torch.is_grad_enabled():
        yield
        return
    outer = prior._fixed
    prior._fixed = prior._parts()
    try:
        yield
    finally:
        prior._fixed = outer


def log_prob_split(prior: nn.Module, z: torch.Tensor, exact: bool = True) -> torch.Tensor:
    """log p(z) split over the latent dims, [..., D] -> [..., D], summing to ``log_prob``.

    ``exact``: the chain-rule terms log p(z_d | z_<d) (``log_prob_per_dim``). Otherwise a
    mixture's log p(z) / D in every dim: the same sum and the same gradient of the sum at a
    small part of the cost ([..., K] instead of [..., K, D] with its cumulative sums), for a
    loss that reads the sum alone (no free bits). N(0, I) is always exact: it costs nothing.
    """
    if exact or not isinstance(prior, DiagonalMixturePrior):
        return prior.log_prob_per_dim(z)
    return (prior.log_prob(z) / prior.dim).unsqueeze(-1).expand(z.shape)


def marginal_icdf(prior: nn.Module, probs: torch.Tensor) -> torch.Tensor:
    """Quantiles of each latent's marginal p(z_d) at probabilities ``probs`` [P]: [P, D].

    Exact for N(0, I); for a mixture, the marginal CDF sum_k w_k Phi((z - mu_kd) / sigma_kd)
    is increasing, so bisection on a bracket covering every component finds each quantile
    (to float64 precision after 100 halvings).
    """
    if isinstance(prior, StandardNormal):
        icdf = torch.distributions.Normal(0.0, 1.0).icdf(probs.double())
        return icdf[:, None].expand(-1, prior.dim).to(probs.dtype)
    with torch.no_grad():
        log_weights, parts = prior.components()
    weights, mean, std = log_weights.double().exp(), parts.mean.double(), parts.std.double()
    p = probs.double().to(mean.device)[:, None]  # [P, 1]
    lo = (mean - 40 * std).min(0).values.expand(len(p), -1)  # [P, D]
    hi = (mean + 40 * std).max(0).values.expand(len(p), -1)
    normal = torch.distributions.Normal(0.0, 1.0)
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        cdf = (weights[:, None] * normal.cdf((mid[:, None, :] - mean) / std)).sum(1)
        below = cdf < p
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (0.5 * (lo + hi)).to(probs.dtype)


PRIORS: dict[str, type[nn.Module]] = {
    "standard_normal": StandardNormal,
    "mog": MixtureOfGaussians,
    "vamp": VampPrior,
}


def make_prior(
    name: str,
    dim: int,
    *,
    num_components: int,
    image_shape: tuple[int, int, int],
    encode: Encode | None = None,
) -> nn.Module:
    """Build the prior named in a config, passing each class only the options it uses."""
    if name not in PRIORS:
        raise ConfigError(f"unknown prior {name!r}; choose one of {sorted(PRIORS)}")
    cls = PRIORS[name]
    if cls is MixtureOfGaussians:
        return MixtureOfGaussians(dim, num_components)
    if cls is VampPrior:
        return VampPrior(dim, num_components, image_shape, encode)
    return StandardNormal(dim)
