"""Posterior-collapse diagnostics: which latents carry information about x, and how much.

Plain functions of a model and batches of model input (float tensors [B, C, H, W], as
:func:`seeded_model_inputs` makes them) or of posterior parameters. All in nats.

A ladder VAE (:class:`~vaekit.models.HierarchicalVAE`) has conditional priors p(z_i | z_{i+1})
below its top layer, so the closed-form KL to a fixed prior marginal does not apply there: its
KL per latent is the data mean of its own ELBO's ``kl_per_dim`` (:func:`elbo_pass`), which sums
to the KL of the bound, and its active units are counted layer by layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vaekit.config import Config, ObjectiveConfig
from vaekit.data.pipeline import ImageData, to_model_input
from vaekit.models import VAE, HierarchicalVAE
from vaekit.probability.gaussian import DiagonalGaussian
from vaekit.probability.priors import StandardNormal

_LOG_2PI = math.log(2.0 * math.pi)

# Model input is prepared in blocks of this many images, whatever the batch size, so that the
# binarization or dequantization noise of an example depends only on the seed and its index.
INPUT_BLOCK = 1000

# The N^2 D cost of the aggregate-posterior density caps the examples used for the MI estimate.
MI_EXAMPLES = 1000

# A mixture prior's per-latent KL (kl_to_prior_per_dim) is a Gauss-Hermite sum over K
# components per node: HERMITE_NODES nodes (within 1e-3 nats of a fine grid integral, even for
# posteriors wider than the prior's components, tests/test_diagnostics.py), and its example
# mean over at most KL_EXAMPLES evenly spaced examples (about 3 s for K = 500, D = 40).
HERMITE_NODES = 24
KL_EXAMPLES = 1000

# Purposes of derived seeds: one evaluation seed feeds independent streams.
SEED_INPUT, SEED_ELBO, SEED_IW, SEED_MI, SEED_SUBSET, SEED_STATIC = 1, 2, 3, 4, 5, 6


def derived_seed(seed: int, purpose: int) -> int:
    """A 63-bit seed for one ``purpose`` from an evaluation ``seed`` (independent streams)."""
    state = np.random.SeedSequence([seed % 2**64, 0xD1A6, purpose]).generate_state(2)
    return int(state[0]) << 31 ^ int(state[1])


def seeded_model_inputs(
    data: ImageData, *, binarize: str, dequantize: bool, seed: int, batch_size: int
) -> Iterator[torch.Tensor]:
    """Float model input [B, C, H, W] of ``data`` in order, its noise fixed by ``seed``.

    Dynamic binarization and dequantization draw from one generator, block by block of
    :data:`INPUT_BLOCK` images, so every pass over the data with the same seed sees the same
    inputs, whatever its ``batch_size`` (an ELBO pass and an importance-sampling pass agree).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    generator = torch.Generator().manual_seed(derived_seed(seed, SEED_INPUT))
    pending: list[torch.Tensor] = []
    count = 0
    for start in range(0, len(data), INPUT_BLOCK):
        block = data.images[start : start + INPUT_BLOCK]
        pending.append(
            to_model_input(block, binarize=binarize, dequantize=dequantize, generator=generator)
        )
        count += len(block)
        while count >= batch_size:
            joined = torch.cat(pending)
            yield joined[:batch_size]
            pending, count = [joined[batch_size:]], count - batch_size
    if count:
        yield torch.cat(pending)


@dataclass(frozen=True)
class ElboPass:
    """One seeded pass of a model's ELBO over a dataset, float64 on the CPU.

    ``values`` [3, N] holds each example's ELBO, reconstruction and KL; ``kl_per_dim`` [D] is
    the example mean of the terms' ``kl_per_dim`` (None for importance-weighted terms, which
    have no KL per latent).
    """

    values: torch.Tensor
    kl_per_dim: torch.Tensor | None


@torch.no_grad()
def elbo_pass(
    model: VAE | HierarchicalVAE,
    batches: Iterable[torch.Tensor],
    objective: ObjectiveConfig | str,
    seed: int,
) -> ElboPass:
    """The per-example ELBO terms of ``batches``, posterior noise from ``seed`` (one stream
    for the whole pass, so two passes with the same seed and batches agree exactly)."""
    rows, kl_sum, count = [], None, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, SEED_ELBO))
        for x in batches:
            terms = model.elbo(x, objective)
            rows.append(torch.stack([terms.elbo, terms.recon, terms.kl]).double().cpu())
            per_dim = getattr(terms, "kl_per_dim", None)
            if per_dim is not None:
                part = per_dim.detach().double().sum(0).cpu()
                kl_sum = part if kl_sum is None else kl_sum + part
            count += len(x)
    if not rows:
        raise ValueError("no batches: an ELBO pass needs at least one example")
    return ElboPass(torch.cat(rows, dim=1), None if kl_sum is None else kl_sum / count)


def ladder_estimator(model: HierarchicalVAE) -> str:
    """The ELBO estimator whose KL per latent a ladder VAE's diagnostics average.

    "analytic" (closed-form KLs at one sample of the layers above) when p(z_L) = N(0, I):
    the same expectation as "monte_carlo" with less noise; "monte_carlo" for a mixture p(z_L),
    which has no closed form. Never the importance-weighted estimators, whose terms have no
    KL per latent.
    """
    return "analytic" if isinstance(model.prior, StandardNormal) else "monte_carlo"


@torch.no_grad()
def posterior_params(
    model: VAE | HierarchicalVAE, batches: Iterable[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """Means and log-variances of q(z|x) for every example, each [N, D] float64.

    For a ladder VAE those of its top layer, q(z_L|x): the one posterior that depends on x
    alone (the lower ones also depend on a sample of the layer above).
    """
    encode = model.encode_top if isinstance(model, HierarchicalVAE) else model.encode
    means, log_vars = [], []
    for x in batches:
        q = encode(x)
        means.append(q.mean.double().cpu())
        log_vars.append(q.log_var.double().cpu())
    if not means:
        raise ValueError("no batches: the diagnostics need at least one example")
    return torch.cat(means), torch.cat(log_vars)


def kl_per_dimension(model: VAE, batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Mean over examples of KL(q(z_u|x) || p(z_u)) for each latent u, [D] float64 nats.

    A dimension whose KL is near zero for every x carries no information about x: it has
    collapsed to the prior (Bowman et al. 2016; Lucas et al. 2019). p(z_u) is the prior's
    marginal, N(0, 1) for the standard normal prior (see :func:`kl_to_prior_per_dim`).
    """
    mean, log_var = posterior_params(model, batches)
    return kl_to_prior_per_dim(model.prior, mean, log_var)


@torch.no_grad()
def kl_to_prior_per_dim(
    prior: torch.nn.Module, mean: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """Mean over examples of KL(q(z_u|x) || p(z_u)) for each latent u, [D] float64 nats.

    p(z_u) is the prior's marginal on latent u. For N(0, I) the KL has a closed form and all
    N examples count. A mixture prior (MoG, VampPrior) has the 1-D mixture marginal
    sum_k w_k N(mu_ku, var_ku), whose KL from a Gaussian has no closed form (Hershey & Olsen
    2007): E_q[log p(z_u)] is a Gauss-Hermite sum, E_{N(m, s^2)}[f] ~ pi^-1/2 sum_i w_i
    f(m + sqrt(2) s t_i), deterministic, so two evaluations agree exactly; its cost is
    N D K nodes, so at most :data:`KL_EXAMPLES` evenly spaced examples are used. A latent
    whose posterior is the prior's marginal for every x has KL 0 here, as it should. The sum
    over latents is not the model's KL, which also counts the dependence between latents.
    """
    q = DiagonalGaussian(mean.double(), log_var.double())
    if isinstance(prior, StandardNormal):
        return q.kl_per_dim().mean(0)
    n, d = q.mean.shape
    if n > KL_EXAMPLES:
        keep = torch.linspace(0, n - 1, KL_EXAMPLES, device=q.mean.device).round().long()
        q = DiagonalGaussian(q.mean[keep], q.log_var[keep])
        n = KL_EXAMPLES
    device = q.mean.device
    log_w, parts = prior.components()
    if parts.mean.shape[-1] != d:
        raise ValueError(f"the prior is over {parts.mean.shape[-1]} latents, q over {d}")
    log_w = log_w.double().to(device)
    p_mean, p_log_var = parts.mean.double().to(device).T, parts.log_var.double().to(device).T
    p_inv_var = torch.exp(-p_log_var)  # [D, K], as p_mean and p_log_var
    # (z - mu)^2 / var = [z^2, z, 1] . [1 / var, -2 mu / var, mu^2 / var]: one batched matmul.
    coef = torch.stack([p_inv_var, -2 * p_mean * p_inv_var, p_mean**2 * p_inv_var], dim=1)
    const = log_w - 0.5 * (_LOG_2PI + p_log_var)  # [D, K]
    t, w = np.polynomial.hermite.hermgauss(HERMITE_NODES)
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    gh = torch.as_tensor(w / math.sqrt(math.pi), dtype=torch.float64, device=device)
    step = max(1, 2**22 // (d * HERMITE_NODES * len(log_w)))  # [D, c nodes, K] near 32 MB
    cross = torch.zeros(d, dtype=torch.float64, device=device)
    for start in range(0, n, step):
        m, s = q.mean[start : start + step].T, q.std[start : start + step].T  # [D, c]
        z = (m[..., None] + math.sqrt(2.0) * s[..., None] * t).reshape(d, -1)  # [D, c nodes]
        sq = torch.bmm(torch.stack([z**2, z, torch.ones_like(z)], dim=-1), coef)
        log_p = torch.logsumexp(const[:, None, :] - 0.5 * sq.clamp_min(0), dim=-1)
        cross += (log_p.reshape(d, -1, HERMITE_NODES) * gh).sum((1, 2))
    neg_entropy = -0.5 * (1.0 + _LOG_2PI + q.log_var).mean(0)
    return neg_entropy - cross / n


def active_units(
    posterior_means: torch.Tensor, threshold: float = 0.01
) -> tuple[int, torch.Tensor]:
    """Count latents with A_u = Cov_x(E_q[z_u]) > threshold, and the variances A_u, [D].

    Burda et al. 2015, section 5.2: a unit is active when its posterior mean moves with x.
    The variance is over the given examples (divisor N, the empirical distribution).
    """
    if posterior_means.dim() != 2 or len(posterior_means) < 1:
        raise ValueError(f"need posterior means [N, D], got {tuple(posterior_means.shape)}")
    variances = posterior_means.double().var(dim=0, correction=0)
    return int((variances > threshold).sum()), variances


def mutual_information_estimate(
    mean: torch.Tensor, log_var: torch.Tensor, z: torch.Tensor
) -> float:
    """I(x; z) of the empirical joint over N points, from samples z [S, N, D] or [N, D].

    x is uniform over the N examples, z ~ q(z|x_n), and q(z) = (1/N) sum_m q(z|x_m) is the
    aggregate posterior (Hoffman & Johnson 2016, "ELBO surgery"; He et al. 2019):
    I = E_n E_{z ~ q(z|x_n)} [log q(z|x_n) - log q(z)], here averaged over the samples, so
    it is unbiased for this N-point joint. Because q(z) includes the term m = n, each sample's
    term is at most log N: the estimate can never exceed log N, and as an estimate of the
    MI under the data distribution it is the InfoNCE lower bound (van den Oord et al. 2018;
    Poole et al. 2019), which saturates near log N once the true MI is that large. Report N.
    """
    if mean.dim() != 2 or mean.shape != log_var.shape or z.shape[-2:] != mean.shape:
        raise ValueError(
            f"need mean and log_var [N, D] and z [S, N, D], got {tuple(mean.shape)}, "
            f"{tuple(log_var.shape)} and {tuple(z.shape)}"
        )
    mean, log_var = mean.double(), log_var.double()
    n, d = mean.shape
    z = z.double().reshape(-1, n, d)
    owner = torch.arange(n).repeat(z.shape[0])
    rows = z.reshape(-1, d)
    inv_var = torch.exp(-log_var)
    norm = -0.5 * (d * _LOG_2PI + log_var.sum(-1))  # [N]
    step = max(1, 2**22 // (n * d))  # bound the [rows, N, D] temporary near 32 MB
    total = 0.0
    for start in range(0, len(rows), step):
        zc, oc = rows[start : start + step], owner[start : start + step]
        # log q(z_r | x_m) for every row r and every example m: [r, N].
        log_q = norm - 0.5 * ((zc[:, None, :] - mean) ** 2 * inv_var).sum(-1)
        own = log_q.gather(1, oc[:, None]).squeeze(1)
        aggregate = torch.logsumexp(log_q, dim=1) - math.log(n)
        total += float((own - aggregate).sum())
    return total / len(rows)


def mutual_information(
    model: VAE,
    batches: Iterable[torch.Tensor],
    *,
    samples: int = 1,
    generator: torch.Generator | None = None,
) -> float:
    """I(x; z) under the aggregate posterior of the given examples (see the estimate's notes)."""
    mean, log_var = posterior_params(model, batches)
    return mutual_information_from_params(mean, log_var, samples=samples, generator=generator)


def mutual_information_from_params(
    mean: torch.Tensor,
    log_var: torch.Tensor,
    *,
    samples: int = 1,
    generator: torch.Generator | None = None,
) -> float:
    """Draw ``samples`` z ~ q(z|x_n) per example and apply :func:`mutual_information_estimate`."""
    eps = torch.randn((samples, *mean.shape), generator=generator, dtype=mean.dtype)
    z = mean + torch.exp(0.5 * log_var) * eps
    return mutual_information_estimate(mean, log_var, z)


def collapse_diagnostics(
    model: VAE | HierarchicalVAE,
    data: ImageData,
    config: Config,
    *,
    seed: int,
    max_examples: int | None = None,
    mi_examples: int = MI_EXAMPLES,
    binarization: str | None = None,
    batch_size: int | None = None,
    kl_per_dim: torch.Tensor | None = None,
) -> dict[str, Any]:
    """KL per latent, active units and I(x; z) of a model on ``data``, as a JSON-ready dict.

    Uses the first ``max_examples`` examples (all by default) for the KL and active units, and
    a seeded random subset of ``mi_examples`` of them for the mutual information, whose cost
    grows as N^2. ``binarization`` defaults to the run's ``data.binarize``.

    A ladder VAE adds its layers: ``latent_dims``, the KL and active units of each layer
    (``kl_per_layer``, ``active_units_z1`` ...), and its I(x; z) is that of the top layer,
    whose posterior depends on x alone. Its KL per latent is the mean ``kl_per_dim`` of
    :func:`elbo_pass` with :func:`ladder_estimator`; ``kl_per_dim`` passes in that of a pass
    over the same inputs already made (the evaluation's), so that the two agree exactly.
    """
    if mi_examples < 1:
        raise ValueError(f"mi_examples must be positive, got {mi_examples}")
    binarize = binarization or config.data.binarize
    if max_examples is not None and max_examples < len(data):
        data = data.subset(torch.arange(max_examples))
    inputs = seeded_model_inputs(
        data,
        binarize=binarize,
        dequantize=config.data.dequantize and binarize == "none",
        seed=seed,
        batch_size=batch_size or config.train.eval_batch_size,
    )
    if isinstance(model, HierarchicalVAE):
        return _ladder_diagnostics(model, list(inputs), seed, mi_examples, kl_per_dim)
    mean, log_var = posterior_params(model, inputs)
    kl = kl_to_prior_per_dim(model.prior, mean, log_var)
    return _diagnostics(kl, mean, mean, log_var, seed, mi_examples)


def _diagnostics(
    kl: torch.Tensor,
    means: torch.Tensor,
    mi_mean: torch.Tensor,
    mi_log_var: torch.Tensor,
    seed: int,
    mi_examples: int,
) -> dict[str, Any]:
    """The diagnostics dict from the KL per latent [D], the posterior means [N, D] that
    activity is measured on, and the posterior [N, D'] whose I(x; z) is estimated."""
    count, variances = active_units(means)
    order = torch.argsort(kl, descending=True, stable=True)
    n_mi = min(mi_examples, len(mi_mean))
    subset = torch.randperm(
        len(mi_mean), generator=torch.Generator().manual_seed(derived_seed(seed, SEED_SUBSET))
    )[:n_mi]
    mi = mutual_information_from_params(
        mi_mean[subset],
        mi_log_var[subset],
        generator=torch.Generator().manual_seed(derived_seed(seed, SEED_MI)),
    )
    return {
        "examples": len(means),
        "latent_dim": means.shape[1],
        "kl_per_dim": kl.tolist(),
        "kl_per_dim_sorted": kl[order].tolist(),
        "kl_order": order.tolist(),
        "active_units": count,
        "active_threshold": 0.01,
        "posterior_mean_variance": variances.tolist(),
        "mutual_information": mi,
        "mi_examples": n_mi,
        "mi_upper_limit": math.log(n_mi),
    }


def ladder_statistics(
    model: HierarchicalVAE,
    batches: list[torch.Tensor],
    seed: int,
    kl_per_dim: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A ladder VAE's KL per latent [D] and posterior means [N, D], float64, layer 1 first.

    The KL is the mean ``kl_per_dim`` of :func:`elbo_pass` with :func:`ladder_estimator`
    (unless given): below the top layer each latent's KL is to its conditional prior
    p(z_i | z_{i+1}), which no closed form over x alone gives. The means are those of the
    mean path (:meth:`~vaekit.models.HierarchicalVAE.encode_layers`), exact for the top layer.
    """
    if kl_per_dim is None:
        kl_per_dim = elbo_pass(model, batches, ladder_estimator(model), seed).kl_per_dim
    kl = torch.as_tensor(kl_per_dim, dtype=torch.float64).cpu()
    if kl.shape != (model.latent_dim,):
        raise ValueError(f"kl_per_dim has shape {tuple(kl.shape)}, want ({model.latent_dim},)")
    means = torch.cat([model.posterior_means(x).double().cpu() for x in batches])
    return kl, means


def _ladder_diagnostics(
    model: HierarchicalVAE,
    batches: list[torch.Tensor],
    seed: int,
    mi_examples: int,
    kl_per_dim: torch.Tensor | None,
) -> dict[str, Any]:
    """:func:`collapse_diagnostics` of a ladder VAE: every layer's KL and activity, and
    I(x; z_L) of the top layer."""
    kl, means = ladder_statistics(model, batches, seed, kl_per_dim)
    top_mean, top_log_var = posterior_params(model, batches)
    out = _diagnostics(kl, means, top_mean, top_log_var, seed, mi_examples)
    active = torch.tensor(out["posterior_mean_variance"]) > out["active_threshold"]
    layers = range(1, len(model.latent_dims) + 1)
    slices = model.layer_slices
    return {
        **out,
        "latent_dims": list(model.latent_dims),
        "kl_estimator": ladder_estimator(model),
        "kl_per_layer": [float(kl[s].sum()) for s in slices],
        **{f"active_units_z{i}": int(active[s].sum()) for i, s in zip(layers, slices, strict=True)},
        "mi_layer": f"z{len(model.latent_dims)}",
    }
