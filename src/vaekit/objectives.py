"""ELBO estimators, KL schedules and free bits: how per-example terms become one loss.

Every estimator is a plain function of a model and a batch returning :class:`Terms` of
``[batch]`` tensors in nats (or :class:`IWTerms` of ``[K, batch]`` tensors for the
importance-weighted training objectives IWAE and DReG); :func:`estimate` picks one by config.
The batch mean happens in exactly one place, :func:`training_loss`.
The importance-weighted bound :func:`iw_log_likelihood` is an evaluation estimator of log p(x)
returning one float64 number per example.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch

from vaekit.config import ObjectiveConfig
from vaekit.probability import noise
from vaekit.probability.gaussian import DiagonalGaussian
from vaekit.probability.priors import components_fixed, log_prob_split


@dataclass(frozen=True)
class Terms:
    """Per-example loss terms: ``recon`` = -log p(x|z) [B]; ``kl_per_dim`` [B, D] in nats.

    ``per_dim_exact`` False: only the sum over dims of ``kl_per_dim`` is the KL's (a mixture
    prior's log p(z) was split evenly, see :func:`vaekit.probability.priors.log_prob_split`);
    free bits, which floor each dim, refuse such terms.
    """

    recon: torch.Tensor
    kl_per_dim: torch.Tensor
    per_dim_exact: bool = field(default=True, kw_only=True)

    @property
    def kl(self) -> torch.Tensor:
        """KL (or its single-sample estimate) summed over latent dimensions, [B]."""
        return self.kl_per_dim.sum(-1)

    @property
    def elbo(self) -> torch.Tensor:
        """The evidence lower bound log p(x) >= -(recon + kl), [B]."""
        return -(self.recon + self.kl)

    def logged(self) -> dict[str, torch.Tensor]:
        """The per-example numbers training and validation average and log, [B] each."""
        return _logged(self)


@dataclass(frozen=True)
class VQTerms:
    """Per-example VQ-VAE terms, [B] each, and the chosen codes [B, H, W].

    ``recon`` = -log p(x|z_q); ``codebook`` = ||sg(z_e) - z_q||^2 and ``commitment`` =
    ||z_e - sg(z_q)||^2, summed over an example's positions. ``kl`` is the rate under a uniform
    prior over codes: q(z|x) is one-hot, so KL(q || uniform) = H W log K, a constant
    (van den Oord et al. 2017, section 3.1), and ``elbo`` is the bound that prior gives.
    """

    recon: torch.Tensor
    codebook: torch.Tensor
    commitment: torch.Tensor
    codes: torch.Tensor
    num_codes: int

    @property
    def kl(self) -> torch.Tensor:
        """log K per code position, [B]."""
        positions = self.codes[0].numel()
        return torch.full_like(self.recon, positions * math.log(self.num_codes))

    @property
    def elbo(self) -> torch.Tensor:
        """log p(x) >= log p(x|z_q) - H W log K under the uniform prior over codes, [B]."""
        return -(self.recon + self.kl)

    def logged(self) -> dict[str, torch.Tensor]:
        """The per-example numbers training and validation average and log, [B] each."""
        return _logged(self, codebook=self.codebook, commitment=self.commitment)


@dataclass(frozen=True)
class IWTerms:
    """K importance samples per example: log p(x|z_k), log p(z_k) and log q(z_k|x), [K, B] each.

    Training maximises :meth:`bound`, the importance-weighted bound (Burda et al. 2016). The
    logged ``elbo``, ``recon`` and ``kl`` are the ordinary ELBO and its terms, estimated from
    the same K samples, so that they mean what they mean for every other estimator and runs
    compare; ``iwae_bound`` is the K-sample bound itself (>= ``elbo`` for every example, by
    Jensen). They are detached: only :meth:`bound` carries the estimator's gradient.
    ``gradient`` names that gradient: "iwae" (the bound's own) or "dreg" (see
    :func:`dreg_bound`).
    """

    log_px: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor
    gradient: Literal["iwae", "dreg"] = "iwae"

    def log_weights(self, kl_scale: float = 1.0) -> torch.Tensor:
        """log w_k = log p(x|z_k) + kl_scale (log p(z_k) - log q(z_k|x)), [K, B].

        kl_scale = 1 gives the importance weights p(x, z_k) / q(z_k|x). A smaller one tempers
        the prior-to-posterior ratio the way KL warm-up tempers the ELBO's KL: at K = 1 the
        loss is the warmed-up single-sample ELBO.
        """
        return self.log_px + kl_scale * (self.log_pz - self.log_qz)

    def bound(self, kl_scale: float = 1.0) -> torch.Tensor:
        """log (1/K) sum_k w_k per example, [B]: Burda et al. (2016), eq. 8 at kl_scale = 1."""
        return torch.logsumexp(self.log_weights(kl_scale), dim=0) - math.log(self.log_px.shape[0])

    @property
    def recon(self) -> torch.Tensor:
        """-log p(x|z) averaged over the K samples, [B] (detached)."""
        return -self.log_px.detach().mean(0)

    @property
    def kl(self) -> torch.Tensor:
        """log q(z|x) - log p(z) averaged over the K samples, a Monte Carlo KL, [B] (detached)."""
        return (self.log_qz - self.log_pz).detach().mean(0)

    @property
    def elbo(self) -> torch.Tensor:
        """The ELBO estimated from the K samples, -(recon + kl), [B] (detached)."""
        return -(self.recon + self.kl)

    def logged(self) -> dict[str, torch.Tensor]:
        """The per-example numbers training and validation average and log, [B] each."""
        return _logged(self, iwae_bound=self.bound().detach())


def _logged(terms: Terms | VQTerms | IWTerms, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    """elbo, recon and kl, which every kind of terms logs (the trainer prints them), then
    the kind's own numbers."""
    return {"elbo": terms.elbo, "recon": terms.recon, "kl": terms.kl, **extra}


class LatentVariableModel(Protocol):
    """What an estimator needs of a model: an encoder, a decoder, a prior and a likelihood."""

    prior: torch.nn.Module
    likelihood: torch.nn.Module

    def encode(self, x: torch.Tensor) -> DiagonalGaussian: ...

    def encode_with_context(
        self, x: torch.Tensor
    ) -> tuple[DiagonalGaussian, torch.Tensor | None]: ...

    def through_flow(
        self, q0: DiagonalGaussian, h: torch.Tensor | None, z0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def analytic_elbo(model: LatentVariableModel, x: torch.Tensor, per_dim: bool = True) -> Terms:
    """ELBO with the closed-form KL(q(z|x) || N(0, I)) (Kingma & Welling 2014, eq. 10); its
    KL per latent is always exact (``per_dim`` is there for the estimators' common form)."""
    q = model.encode(x)
    z = q.rsample()
    recon = -model.likelihood.log_prob(model.decode(z), x)
    return Terms(recon=recon, kl_per_dim=q.kl_per_dim())


def monte_carlo_elbo(model: LatentVariableModel, x: torch.Tensor, per_dim: bool = True) -> Terms:
    """ELBO as log p(x|z) + log p(z) - log q(z|x) at one reparameterised sample z ~ q(z|x).

    Works for any prior with a density; its KL term is unbiased but noisier than the
    analytic one (Kingma & Welling 2014, eq. 6). ``per_dim`` False skips a mixture prior's
    chain rule (see :func:`vaekit.probability.priors.log_prob_split`): the same ELBO and
    gradient, at about 0.4x the VampPrior recipe's step time (bench/mixture_step.py), when
    nothing reads the KL per latent.
    """
    q0, h = model.encode_with_context(x)
    z, log_q = model.through_flow(q0, h, q0.rsample())  # z_T of an IAF posterior
    recon = -model.likelihood.log_prob(model.decode(z), x)
    kl_per_dim = log_q - log_prob_split(model.prior, z, exact=per_dim)
    return Terms(recon=recon, kl_per_dim=kl_per_dim, per_dim_exact=per_dim)


def _importance_samples(
    model: LatentVariableModel, x: torch.Tensor, samples: int, gradient: Literal["iwae", "dreg"]
) -> IWTerms:
    """K reparameterised draws z_k ~ q(z|x) and their log-densities; see :func:`dreg_bound`."""
    if samples < 1:
        raise ValueError(f"samples must be a positive number of importance samples, got {samples}")
    q, h = model.encode_with_context(x)
    # [K, B, D]; decoders and likelihoods take the leading K. An IAF posterior moves z0 to z_T.
    z, log_q = model.through_flow(q, h, q.rsample((samples,)))
    log_px = model.likelihood.log_prob(model.decode(z), x)
    if gradient == "dreg":  # (no flow: the config refuses dreg with an IAF posterior)
        log_q = DiagonalGaussian(q.mean.detach(), q.log_var.detach()).log_prob_per_dim(z)
    terms = IWTerms(log_px, model.prior.log_prob(z), log_q.sum(-1), gradient)
    if gradient == "dreg" and z.requires_grad:
        weights = torch.softmax(terms.log_weights().detach(), dim=0).unsqueeze(-1)
        z.register_hook(lambda grad: grad * weights)
    return terms


def iwae_bound(model: LatentVariableModel, x: torch.Tensor, samples: int) -> IWTerms:
    """The importance-weighted bound with K = ``samples`` draws, for training (IWAE).

    log (1/K) sum_k p(x, z_k) / q(z_k|x) (Burda et al. 2016, eq. 8) is a lower bound on
    log p(x) that tightens as K grows; K = 1 is the single-sample ELBO. Its gradient is the
    bound's own: sum_k w~_k grad log w_k with normalised weights w~_k = w_k / sum_j w_j.
    """
    return _importance_samples(model, x, samples, "iwae")


def dreg_bound(model: LatentVariableModel, x: torch.Tensor, samples: int) -> IWTerms:
    """The IWAE bound, with the doubly reparameterized gradient (DReG) for the encoder.

    Tucker, Lawson, Gu & Maddison (2018). The encoder gradient of the IWAE bound holds a
    score-function term -sum_k w~_k d log q(z_k|x) / d phi whose noise grows with K until the
    encoder stops learning (Rainforth et al. 2018). Reparameterising it once more turns it
    into a path term with weights w~_k^2 - w~_k, leaving the unbiased, lower-variance
    sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi). The decoder and prior keep the IWAE
    gradient sum_k w~_k grad log w_k.

    One decoder pass does both: log q is evaluated at stopped-gradient parameters (so the
    score term is gone, while z = mean + std * eps still carries the encoder's path), and a
    hook on z multiplies the gradient reaching z_k, w~_k d log w_k / d z_k, by w~_k. What is
    reached other than through z gets the IWAE gradient: the decoder, the prior, and an
    encoder that the prior shares (a VampPrior's pseudo-inputs) through log p(z) alone. Only
    :meth:`IWTerms.bound` at kl_scale = 1 carries this gradient: the derivation is for the
    untempered weights.
    """
    return _importance_samples(model, x, samples, "dreg")


ESTIMATORS: dict[str, Callable[[LatentVariableModel, torch.Tensor, bool], Terms]] = {
    "analytic": analytic_elbo,
    "monte_carlo": monte_carlo_elbo,
}

# The importance-weighted training objectives, which also take K, objective.iw_samples.
IW_ESTIMATORS: dict[str, Callable[[LatentVariableModel, torch.Tensor, int], IWTerms]] = {
    "iwae": iwae_bound,
    "dreg": dreg_bound,
}


def estimate(
    model: LatentVariableModel,
    x: torch.Tensor,
    objective: ObjectiveConfig | str = "analytic",
    per_dim: bool = True,
) -> Terms | IWTerms:
    """Per-example terms by the estimator an objective config names.

    A bare estimator name stands for a config with that estimator and default settings
    (e.g. the default ``iw_samples``), for quick use outside a run. ``per_dim`` False: the
    caller reads only the KL's sum (see :class:`Terms`), which may then cost less.
    """
    cfg = ObjectiveConfig(estimator=objective) if isinstance(objective, str) else objective
    if cfg.estimator in IW_ESTIMATORS:
        return IW_ESTIMATORS[cfg.estimator](model, x, cfg.iw_samples)
    return ESTIMATORS[cfg.estimator](model, x, per_dim)


def kl_weight(cfg: ObjectiveConfig, step: int, total_steps: int) -> float:
    """The KL weight at optimiser ``step``: beta, scaled by the warm-up schedule.

    ``linear`` rises from 0 to beta over ``warmup_steps`` (Bowman et al. 2016);
    ``cyclical`` repeats that rise ``cycles`` times over training, rising for
    ``cycle_ratio`` of each cycle and holding beta for the rest (Fu et al. 2019, eq. 4).
    """
    if cfg.warmup == "linear":
        return cfg.beta * min(1.0, step / cfg.warmup_steps)
    if cfg.warmup == "cyclical":
        period = max(1, math.ceil(total_steps / cfg.cycles))
        tau = (step % period) / period
        return cfg.beta * min(1.0, tau / cfg.cycle_ratio)
    return cfg.beta


def kl_penalty(terms: Terms, free_bits: float) -> torch.Tensor:
    """Batch-mean KL, with each latent's batch-mean KL floored at ``free_bits`` nats.

    Free bits (Kingma et al. 2016, IAF paper, eq. 15): a dimension whose average KL is below
    lambda pays lambda and gets no gradient pushing it further towards the prior, which
    counters posterior collapse.
    """
    per_dim = terms.kl_per_dim.mean(0)
    if free_bits > 0:
        if not terms.per_dim_exact:
            raise ValueError("free bits need the exact KL per latent: estimate with per_dim=True")
        per_dim = per_dim.clamp(min=free_bits)
    return per_dim.sum()


def loss(terms: Terms, kl_scale: float, free_bits: float = 0.0) -> torch.Tensor:
    """The scalar training loss: mean reconstruction term plus weighted KL penalty."""
    return terms.recon.mean() + kl_scale * kl_penalty(terms, free_bits)


def vq_loss(terms: VQTerms, commitment: float) -> torch.Tensor:
    """The VQ-VAE loss, eq. 3 of van den Oord et al. (2017): reconstruction + codebook term
    + beta * commitment term, batch means."""
    return terms.recon.mean() + terms.codebook.mean() + commitment * terms.commitment.mean()


def iw_loss(terms: IWTerms, kl_scale: float = 1.0) -> torch.Tensor:
    """The importance-weighted objectives' loss: minus the batch-mean bound.

    Warm-up tempers log p(z) - log q(z|x) in the weights (:meth:`IWTerms.log_weights`); free
    bits have no per-latent KL to floor here, so the config refuses them. DReG's gradient is
    derived for the untempered bound, so its terms refuse kl_scale != 1.
    """
    if terms.gradient == "dreg" and kl_scale != 1.0:
        raise ValueError(
            f"DReG's gradient is for the untempered bound (kl_scale 1), got {kl_scale}"
        )
    return -terms.bound(kl_scale).mean()


def training_loss(
    terms: Terms | IWTerms | VQTerms, cfg: ObjectiveConfig, kl_scale: float
) -> torch.Tensor:
    """The scalar a training step minimises, for any kind of model's terms."""
    if isinstance(terms, VQTerms):
        return vq_loss(terms, cfg.commitment)
    if isinstance(terms, IWTerms):
        return iw_loss(terms, kl_scale)
    return loss(terms, kl_scale, cfg.free_bits)


def streaming_logsumexp(chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """log sum exp over dim 0 of all ``chunks`` concatenated, holding one chunk at a time.

    Each chunk is [c, ...]; the result is [...] in float64. Folding the running total in as one
    more row and reducing with ``torch.logsumexp`` keeps the max-shift stable (and all -inf rows
    give -inf, not NaN) without ever storing every row.
    """
    total: torch.Tensor | None = None
    for chunk in chunks:
        chunk = chunk.double()
        rows = chunk if total is None else torch.cat([total.unsqueeze(0), chunk])
        total = torch.logsumexp(rows, dim=0)
    if total is None:
        raise ValueError("streaming_logsumexp needs at least one chunk")
    return total


LogLikelihood = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def decoder_log_likelihood(model: LatentVariableModel) -> LogLikelihood:
    """(z, x) -> log p(x|z) of ``model``: its decoder and likelihood as one function (which
    ``torch.compile`` can fuse, see :class:`vaekit.evaluate.CompiledLogLikelihood`)."""

    def log_px(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return model.likelihood.log_prob(model.decode(z), x)

    return log_px


def _log_weight_chunks(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    chunk_size: int,
    generator: torch.Generator | None,
    log_likelihood: LogLikelihood,
) -> Iterator[torch.Tensor]:
    """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x) in float64, [c, B] per chunk of K."""
    q, h = model.encode_with_context(x)
    mean, std = q.mean, q.std
    for start in range(0, k, chunk_size):
        c = min(chunk_size, k - start)
        # One [B, D] draw per importance sample, in the order of k: the noise of sample k then
        # does not depend on how K is cut into chunks, so chunk_size cannot change the result
        # (q.rsample((c,)) would draw a [c, B, D] block whose values depend on c).
        eps = torch.stack(
            [
                noise.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
                for _ in range(c)
            ]
        )
        # The reparameterised sample, as q.rsample draws it (then through an IAF posterior).
        z, log_q = model.through_flow(q, h, mean + std * eps)
        log_px = log_likelihood(z, x)
        yield log_px.double() + model.prior.log_prob(z).double() - log_q.sum(-1).double()


def iw_log_likelihood(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    *,
    chunk_size: int = 100,
    generator: torch.Generator | None = None,
    log_likelihood: LogLikelihood | None = None,
) -> torch.Tensor:
    """Per-example importance-weighted estimate of log p(x), [B] float64 nats.

    L_K = log (1/K) sum_k p(x, z_k) / q(z_k|x) with z_k ~ q(z|x) (Burda et al. 2015, eq. 8): a
    lower bound in expectation that rises monotonically with K towards log p(x); K = 1 is the
    single-sample (Monte Carlo) ELBO. Samples are decoded ``chunk_size`` at a time and folded
    into a running log-sum-exp, so memory grows with chunk_size * B, never with K. Noise comes
    from ``generator`` (or the global RNG), one [B, D] draw per sample in order, so the result
    is independent of ``chunk_size`` up to float rounding. Gradients flow unless the caller
    uses ``torch.no_grad()`` (evaluation should: the graph of every chunk would be kept).
    """
    if k < 1:
        raise ValueError(f"k must be a positive number of importance samples, got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    own = getattr(model, "log_weights", None)
    with components_fixed(model.prior):  # a VampPrior's pseudo-inputs encoded once, not per chunk
        if own is not None:  # a model with its own importance weights (the hierarchical VAE)
            size = min(chunk_size, k)
            chunks = (own(x, min(size, k - s), generator) for s in range(0, k, size))
            return streaming_logsumexp(chunks) - math.log(k)
        log_px = log_likelihood or decoder_log_likelihood(model)
        chunks = _log_weight_chunks(model, x, k, min(chunk_size, k), generator, log_px)
        return streaming_logsumexp(chunks) - math.log(k)
