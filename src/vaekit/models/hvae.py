"""A hierarchical VAE with L Gaussian layers and top-down inference: the Ladder VAE.

Sønderby, Raiko, Maaløe, Sønderby & Winther (2016), "Ladder Variational Autoencoders". The
generative model is a top-down chain

    p(x, z_1..z_L) = p(z_L) prod_{i<L} p(z_i | z_{i+1}) p(x | z_1),

with p(z_L) a prior module (N(0, I), or a VampPrior / mixture) and each p(z_i | z_{i+1}) a
diagonal Gaussian whose parameters a small net computes from z_{i+1}. Inference first runs a
deterministic bottom-up pass d_1 = f(x), d_{i+1} = f_{i+1}(d_i), each d_i giving "bottom-up"
Gaussian parameters (mu^_i, var^_i); then it descends with the generative model:
q(z_L | x) = N(mu^_L, var^_L), and below the top q(z_i | x, z_{i+1}) is the precision-weighted
merge of the bottom-up N(mu^_i, var^_i) and the top-down prior p(z_i | z_{i+1}) (section 2.2,
eqs. 18-19).

Why the ladder rather than the two-level model of Tomczak & Welling (2018), p(z_2) p(z_1|z_2)
p(x|z_1, z_2) with q(z_2|x) q(z_1|x, z_2): it works for any number of layers L with one rule;
inference reuses the generative top-down nets, so the posterior of a lower layer is always a
correction of its prior, with which Sønderby et al. report more active units in the higher
layers than with separate bottom-up inference; and, as in Tomczak & Welling's model, the top
posterior q(z_L | x) depends on x alone, so a VampPrior on z_L, (1/K) sum_k q(z_L | u_k), is
defined exactly as for a one-layer VAE.

Layers are numbered bottom-up from 1 (z_1 is next to x) in every public name ("kl_z1",
``layer=1``); lists of per-layer things are in that order too. The latent vector of a model is
the bottom-first concatenation [z_1, ..., z_L] (``latent_dim`` = its width): ``kl_per_dim``
and :meth:`HierarchicalVAE.posterior_means` use that order, :attr:`layer_slices` cuts it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Literal

import torch
from torch import nn

from vaekit.config import ModelConfig, ObjectiveConfig
from vaekit.models.vae import NETS, decoder_sizes, full_precision, likelihood_of, net_activation
from vaekit.nets.gated import GatedLinear, GatedMLPDecoder, gated_stack
from vaekit.nets.layers import activation
from vaekit.nets.mlp import MLPDecoder
from vaekit.objectives import IWTerms, Terms
from vaekit.probability import noise
from vaekit.probability.gaussian import DiagonalGaussian
from vaekit.probability.priors import StandardNormal, VampPrior, log_prob_split, make_prior


def precision_weighted(a: DiagonalGaussian, b: DiagonalGaussian) -> DiagonalGaussian:
    """The normalised product of two diagonal Gaussians: the ladder posterior (LVAE eqs. 18-19).

    N(mu_a, var_a) N(mu_b, var_b) is proportional to N(mu, var) with 1/var = 1/var_a + 1/var_b
    and mu = (mu_a / var_a + mu_b / var_b) var. In log-variances, log var = -logaddexp(-lv_a,
    -lv_b) and mu = w mu_a + (1 - w) mu_b with w = var_b / (var_a + var_b) = sigmoid(lv_b - lv_a),
    which stays finite for any log-variances. Shapes broadcast ([B, D] with [K, B, D]).
    """
    w = torch.sigmoid(b.log_var - a.log_var)
    mean = w * a.mean + (1.0 - w) * b.mean
    log_var = -torch.logaddexp(-a.log_var, -b.log_var)
    return DiagonalGaussian(mean, log_var)


def gaussian_kl_per_dim(q: DiagonalGaussian, p: DiagonalGaussian) -> torch.Tensor:
    """KL(q || p) of two diagonal Gaussians per dimension, [..., D] nats (closed form).

    KL = 0.5 (log var_p - log var_q + (var_q + (mu_q - mu_p)^2) / var_p - 1), e.g. Kingma &
    Welling (2014), appendix B, with p general instead of N(0, I).
    """
    ratio = torch.exp(q.log_var - p.log_var)
    return 0.5 * (ratio + (q.mean - p.mean) ** 2 / p.var - 1.0 - (q.log_var - p.log_var))


@dataclass(frozen=True)
class LadderTerms(Terms):
    """:class:`Terms` of a hierarchical VAE: ``kl_per_dim`` [B, D_1 + ... + D_L] bottom first,
    ``layer_dims`` (D_1, ..., D_L) to split it, and the per-layer KL logged beside the total."""

    layer_dims: tuple[int, ...]

    @property
    def kl_per_layer(self) -> torch.Tensor:
        """The KL of each layer, [B, L] (layer 1 first): per-layer free bits can floor these."""
        parts = self.kl_per_dim.split(list(self.layer_dims), dim=-1)
        return torch.stack([part.sum(-1) for part in parts], dim=-1)

    def logged(self) -> dict[str, torch.Tensor]:
        """elbo, recon, kl, then kl_z1 .. kl_zL, [B] each: a collapsing layer shows in its KL."""
        per_layer = self.kl_per_layer
        layers = {f"kl_z{i + 1}": per_layer[:, i] for i in range(len(self.layer_dims))}
        return {**super().logged(), **layers}


@dataclass(frozen=True)
class _Step:
    """One layer of the top-down pass: its posterior, its conditional prior (None at the top,
    where the prior module stands) and the latent chosen there."""

    q: DiagonalGaussian
    p: DiagonalGaussian | None
    z: torch.Tensor


# Chooses z_i from q(z_i | ...) at layer index i (0 = bottom) during the top-down pass.
Choose = Callable[[int, DiagonalGaussian], torch.Tensor]


def _reparameterise(q: DiagonalGaussian, eps: torch.Tensor) -> torch.Tensor:
    """z = mean + std * eps, the sample q.rsample draws, for noise drawn beforehand."""
    return q.mean + q.std * eps


class HierarchicalVAE(nn.Module):
    """A Ladder VAE (Sønderby et al. 2016): L stochastic layers, bottom-up then top-down.

    ``bottom_up[i]`` maps d_i to d_{i+1} (``bottom_up[0]`` maps the image x to d_1),
    ``heads[i]`` maps d_{i+1} to the bottom-up parameters [mu^, log var^] of layer i + 1,
    ``top_down[i]`` maps z_{i+2} to the parameters of p(z_{i+1} | z_{i+2}), and ``decoder``
    maps z_1 to the likelihood's parameters. ``prior`` is p(z_L).
    """

    def __init__(
        self,
        bottom_up: Sequence[nn.Module],
        heads: Sequence[nn.Module],
        top_down: Sequence[nn.Module],
        decoder: nn.Module,
        prior: nn.Module,
        likelihood: nn.Module,
        latent_dims: Sequence[int],
        image_shape: tuple[int, int, int],
    ) -> None:
        super().__init__()
        layers = len(latent_dims)
        if layers < 1 or any(d <= 0 for d in latent_dims):
            raise ValueError(f"latent_dims must list positive sizes, got {list(latent_dims)}")
        if len(bottom_up) != layers or len(heads) != layers or len(top_down) != layers - 1:
            raise ValueError(
                f"{layers} layers need {layers} bottom-up blocks and heads and {layers - 1} "
                f"top-down nets, got {len(bottom_up)}, {len(heads)} and {len(top_down)}"
            )
        self.bottom_up = nn.ModuleList(bottom_up)
        self.heads = nn.ModuleList(heads)
        self.top_down = nn.ModuleList(top_down)
        self.decoder = decoder
        self.prior = prior
        self.likelihood = likelihood
        self.latent_dims = tuple(int(d) for d in latent_dims)
        self.image_shape = tuple(image_shape)

    def extra_repr(self) -> str:
        return f"latent_dims={list(self.latent_dims)} (z_1 first)"

    @property
    def latent_dim(self) -> int:
        """Width of the concatenated latents [z_1, ..., z_L] (of ``kl_per_dim``)."""
        return sum(self.latent_dims)

    @property
    def layer_slices(self) -> list[slice]:
        """Where each layer's dimensions lie in the concatenated latents, layer 1 first."""
        ends = accumulate(self.latent_dims)
        return [slice(end - d, end) for end, d in zip(ends, self.latent_dims, strict=True)]

    # ------------------------------------------------------------------ the two passes

    def bottom_up_pass(self, x: torch.Tensor) -> list[DiagonalGaussian]:
        """The bottom-up Gaussians N(mu^_i, var^_i) of every layer for images x, layer 1 first."""
        out = []
        h = x
        for block, head in zip(self.bottom_up, self.heads, strict=True):
            h = block(h)
            out.append(DiagonalGaussian.from_params(full_precision(head(h))))
        return out

    def encode_top(self, x: torch.Tensor) -> DiagonalGaussian:
        """q(z_L | x), which depends on x alone: the encoder a VampPrior on z_L pushes its
        pseudo-inputs through (Tomczak & Welling 2018, eq. 9)."""
        return self.bottom_up_pass(x)[-1]

    def conditional_prior(self, layer: int, z_above: torch.Tensor) -> DiagonalGaussian:
        """p(z_layer | z_{layer+1}) for 1 <= layer < L, any leading dims ([..., D_{layer+1}])."""
        if not 1 <= layer < len(self.latent_dims):
            raise ValueError(f"layer {layer} has no conditional prior (1 <= layer < L)")
        return DiagonalGaussian.from_params(full_precision(self.top_down[layer - 1](z_above)))

    def _descend(self, up: list[DiagonalGaussian], choose: Choose) -> list[_Step]:
        """The top-down inference pass (LVAE section 2.2), returning its steps top first."""
        top = len(up) - 1
        steps = [_Step(up[top], None, choose(top, up[top]))]
        for i in range(top - 1, -1, -1):
            p = self.conditional_prior(i + 1, steps[-1].z)
            q = precision_weighted(up[i], p)
            steps.append(_Step(q, p, choose(i, q)))
        return steps

    # ------------------------------------------------------------------ the model interface

    def decode(self, z1: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters of p(x | z_1) ([..., D_1] -> [..., C*P, H, W])."""
        return full_precision(self.decoder(z1))

    def elbo(
        self, x: torch.Tensor, objective: ObjectiveConfig | str = "analytic", per_dim: bool = True
    ) -> LadderTerms | IWTerms:
        """Per-example terms by the estimator of ``objective`` (a config or an estimator name).

        "analytic": closed-form Gaussian KLs of every layer at one sample of the layers above,
        KL(q(z_L|x) || p(z_L)) + sum_i E_q[KL(q(z_i|x, z_{i+1}) || p(z_i|z_{i+1}))], the same
        ELBO with less noise than "monte_carlo", which uses log q - log p at one sample of all
        layers (needed when p(z_L) is a mixture). "iwae" gives :class:`IWTerms` with K =
        ``objective.iw_samples`` samples. Noise comes from :meth:`DiagonalGaussian.rsample`.
        ``per_dim`` False lets a mixture p(z_L) split its log density evenly over z_L's dims
        (:func:`~vaekit.probability.priors.log_prob_split`): each layer's KL stays exact.
        """
        cfg = ObjectiveConfig(estimator=objective) if isinstance(objective, str) else objective
        if cfg.estimator == "iwae":
            return IWTerms(*self.importance_terms(x, cfg.iw_samples), "iwae")
        if cfg.estimator not in ("analytic", "monte_carlo"):
            raise ValueError(
                f"estimator {cfg.estimator!r} is not supported by the hierarchical VAE: DReG "
                "stops the encoder's direct gradient, and here the posterior shares the "
                "generative top-down nets; use 'analytic', 'monte_carlo' or 'iwae'"
            )
        analytic = cfg.estimator == "analytic"
        if analytic and not isinstance(self.prior, StandardNormal):
            raise ValueError(
                "the analytic KL needs p(z_L) = N(0, I); use 'monte_carlo' for a mixture prior"
            )
        steps = self._descend(self.bottom_up_pass(x), lambda _i, q: q.rsample())
        recon = -self.likelihood.log_prob(self.decode(steps[-1].z), x)
        kls = []
        for step in steps:
            if analytic:
                kl = step.q.kl_per_dim() if step.p is None else gaussian_kl_per_dim(step.q, step.p)
            elif step.p is None:
                kl = step.q.log_prob_per_dim(step.z) - log_prob_split(self.prior, step.z, per_dim)
            else:
                kl = step.q.log_prob_per_dim(step.z) - step.p.log_prob_per_dim(step.z)
            kls.append(kl)
        kl_per_dim = torch.cat(kls[::-1], dim=-1)  # layer 1 first
        return LadderTerms(
            recon=recon, kl_per_dim=kl_per_dim, layer_dims=self.latent_dims, per_dim_exact=per_dim
        )

    def importance_terms(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log p(x|z_1), log p(z_1..z_L) and log q(z_1..z_L|x) at k samples per image, [k, B].

        The noise is drawn one [B, D_i] block per sample and layer, sample by sample and top
        layer first: sample j's noise is then the same whatever k the caller asks for, so an
        evaluator that cuts K into chunks with one generator gets the same weights for every
        chunk size; and each block's batch dimension is the one the data-parallel row share
        splits (:mod:`vaekit.probability.noise`). At k = 1 this is exactly the noise that
        :meth:`elbo` draws through ``rsample``.
        """
        if k < 1:
            raise ValueError(f"k must be a positive number of importance samples, got {k}")
        up = self.bottom_up_pass(x)
        like = up[0].mean
        draws = [
            [
                noise.randn(
                    (x.shape[0], d), generator=generator, dtype=like.dtype, device=like.device
                )
                for d in reversed(self.latent_dims)
            ]
            for _ in range(k)
        ]
        top = len(up) - 1
        eps = {top - j: torch.stack([sample[j] for sample in draws]) for j in range(top + 1)}
        steps = self._descend(up, lambda i, q: _reparameterise(q, eps[i]))
        log_px = self.likelihood.log_prob(self.decode(steps[-1].z), x)
        log_pz = self.prior.log_prob(steps[0].z)
        log_qz = steps[0].q.log_prob(steps[0].z)
        for step in steps[1:]:
            log_pz = log_pz + step.p.log_prob(step.z)
            log_qz = log_qz + step.q.log_prob(step.z)
        return log_px, log_pz, log_qz

    def log_weights(
        self, x: torch.Tensor, k: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Importance log-weights log p(x, z_1..z_L) - log q(z_1..z_L | x), [k, B] float64.

        The terms of the IW bound log (1/K) sum_k w_k (Burda et al. 2016, eq. 8); memory grows
        with k * B, so an evaluator streams K in chunks (see :meth:`importance_terms` for why
        the chunk size cannot change the result).
        """
        log_px, log_pz, log_qz = self.importance_terms(x, k, generator)
        return log_px.double() + log_pz.double() - log_qz.double()

    # ------------------------------------------------------------------ pictures

    @torch.no_grad()
    def encode_layers(self, x: torch.Tensor) -> list[DiagonalGaussian]:
        """The posteriors of every layer along the mean path, layer 1 first.

        q(z_L | x), then q(z_i | x, z_{i+1}) with z_{i+1} set to the mean of the layer above:
        a deterministic summary for reconstructions, traversal bases and active units (where
        E_q[z_i | x] is approximated by the mean path, exact for the top layer).
        """
        steps = self._descend(self.bottom_up_pass(x), lambda _i, q: q.mean)
        return [step.q for step in reversed(steps)]

    @torch.no_grad()
    def posterior_means(self, x: torch.Tensor) -> torch.Tensor:
        """Mean-path posterior means [B, D_1 + ... + D_L], layer 1 first (for active units)."""
        return torch.cat([q.mean for q in self.encode_layers(x)], dim=-1)

    @torch.no_grad()
    def sample(
        self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Mean images of p(x | z_1) for ``n`` ancestral draws z_L ~ p(z_L), z_i ~ p(z_i|z_{i+1}).

        ``temperature`` scales every layer's prior standard deviation (as in NVAE, Vahdat &
        Kautz 2020); 0 gives the conditional means below a draw of the top prior's means.
        """
        z = self.prior.sample(n, generator=generator, temperature=temperature)
        for layer in range(len(self.latent_dims) - 1, 0, -1):
            p = self.conditional_prior(layer, z)
            eps = noise.randn(p.mean.shape, generator=generator, dtype=z.dtype, device=z.device)
            z = p.mean + temperature * p.std * eps
        return self.decode_mean(z)

    @torch.no_grad()
    def decode_mean(self, z1: torch.Tensor) -> torch.Tensor:
        """Mean images of p(x | z_1) for given bottom-layer latents, in [0, 1]."""
        return self.likelihood.mean(self.decode(z1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z_1) at the mean-path posterior z_1 (see :meth:`encode_layers`)."""
        return self.decode_mean(self.encode_layers(x)[0].mean)

    @torch.no_grad()
    def descend_means(
        self,
        layer: int,
        z: torch.Tensor,
        up: list[DiagonalGaussian] | None = None,
    ) -> torch.Tensor:
        """z_1 from given latents of ``layer``, taking means layer by layer downwards.

        Without ``up`` each lower layer is the mean of p(z_i | z_{i+1}): what the generative
        model makes of z_layer. With ``up`` (a :meth:`bottom_up_pass`) it is the mean of the
        posterior q(z_i | x, z_{i+1}): the image's own evidence, adjusted to z_layer.
        """
        for lower in range(layer - 1, 0, -1):
            p = self.conditional_prior(lower, z)
            z = (p if up is None else precision_weighted(up[lower - 1], p)).mean
        return z

    @torch.no_grad()
    def traverse(
        self,
        x_ref: torch.Tensor,
        layer: int,
        dims: Sequence[int],
        values: torch.Tensor,
        lower: Literal["prior", "posterior"] = "prior",
    ) -> torch.Tensor:
        """Images with dimension d of layer ``layer`` set to each of ``values``, one row per d.

        The other dimensions of that layer stay at the mean-path posterior of the first image
        of ``x_ref``. Layers above it do not reach the image except through it; layers below
        are re-derived from it by :meth:`descend_means` (``lower`` = "prior": the conditional
        prior means, what z_layer encodes in the generative model; "posterior": the
        reference image's posterior means given the changed layer). Returns
        [len(dims) * len(values), C, H, W]; tile with nrow = len(values).
        """
        if not 1 <= layer <= len(self.latent_dims):
            raise ValueError(f"layer must be in 1..{len(self.latent_dims)}, got {layer}")
        width = self.latent_dims[layer - 1]
        bad = [d for d in dims if not 0 <= d < width]
        if bad:
            raise ValueError(f"layer {layer} has dimensions 0..{width - 1}, not {bad}")
        x_ref = x_ref[:1] if x_ref.dim() == 4 else x_ref.unsqueeze(0)
        up = self.bottom_up_pass(x_ref)
        base = self.encode_layers(x_ref)[layer - 1].mean[0]
        values = torch.as_tensor(values, dtype=base.dtype, device=base.device)
        z = base.repeat(len(dims), len(values), 1)  # [rows, V, D_layer]
        for row, d in enumerate(dims):
            z[row, :, d] = values
        z = z.reshape(-1, width)
        z1 = self.descend_means(layer, z, up if lower == "posterior" else None)
        return self.decode_mean(z1)


def _bottom_up_blocks(
    cfg: ModelConfig, image_shape: tuple[int, int, int], layers: int, width: int
) -> list[nn.Module]:
    """x -> d_1 by the config's encoder net (ending in ``width`` features), then
    d_i -> d_{i+1} by one dense layer each: the deterministic ladder.

    With ``arch = "gated_mlp"`` every layer of the ladder is a gated linear unit (the layers of
    the VampPrior paper's two-level model), d_1 included, instead of a linear map and an
    activation.
    """
    if cfg.arch == "gated_mlp":
        sizes = [math.prod(image_shape), *cfg.hidden, width]
        first: nn.Module = nn.Sequential(nn.Flatten(), *gated_stack(sizes, None, cfg.batchnorm))
        rest = [GatedLinear(width, width, None, cfg.batchnorm) for _ in range(layers - 1)]
        return [first, *rest]
    enc_cls, _, sizes_key = NETS[cfg.arch]
    first = enc_cls(
        image_shape, list(getattr(cfg, sizes_key)), width, cfg.activation, cfg.batchnorm
    )
    blocks: list[nn.Module] = [nn.Sequential(first, activation(cfg.activation))]
    for _ in range(layers - 1):
        norm = [nn.BatchNorm1d(width)] if cfg.batchnorm else []
        blocks.append(nn.Sequential(nn.Linear(width, width), *norm, activation(cfg.activation)))
    return blocks


def build_hvae(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> HierarchicalVAE:
    """A Ladder VAE from its config section and the [C, H, W] shape of the data.

    Reads ``cfg.latent_dims`` (bottom first, e.g. [32, 16]) and ``cfg.ladder_width`` (the
    width of the deterministic ladder: x's net ends in it, and each higher bottom-up block and
    each top-down net has one hidden layer of it), beside the VAE's arch, sizes, activation,
    batchnorm, likelihood and prior (which becomes p(z_L)).
    """
    c, h, w = image_shape
    dims = [int(d) for d in cfg.latent_dims]
    width = int(cfg.ladder_width)
    likelihood = likelihood_of(cfg, image_shape)
    blocks = _bottom_up_blocks(cfg, (c, h, w), len(dims), width)
    heads = [nn.Linear(width, 2 * d) for d in dims]
    act = net_activation(cfg)
    td_cls = GatedMLPDecoder if cfg.arch == "gated_mlp" else MLPDecoder
    top_down = [td_cls(above, [width], (2 * d,), act, cfg.batchnorm) for d, above in pairwise(dims)]
    _, dec_cls, _ = NETS[cfg.arch]
    out_shape = (c * likelihood.params_per_pixel, h, w)
    decoder = dec_cls(dims[0], decoder_sizes(cfg), out_shape, act, cfg.batchnorm)
    prior = make_prior(
        cfg.prior, dims[-1], num_components=cfg.prior_components, image_shape=(c, h, w)
    )
    model = HierarchicalVAE(blocks, heads, top_down, decoder, prior, likelihood, dims, (c, h, w))
    if isinstance(prior, VampPrior):
        # A bound method, not a module: the encoder's weights stay once in the state dict.
        prior.bind(model.encode_top)
    return model
