"""Metrics of a trained model on held-out data, seeded so that they repeat exactly.

One evaluation seed fixes everything random: the binarization or dequantization noise of the
test images (the same for every pass), the ELBO's posterior samples and the importance
samples, each from its own derived stream (see :func:`vaekit.diagnostics.derived_seed`).

A ladder VAE (``model.kind = "hvae"``) gets the same numbers, its importance weights from its
own :meth:`~vaekit.models.HierarchicalVAE.log_weights`, and the KL of each layer beside the
total (``kl_z1``, ``kl_z2`` ...), as training logs them.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from vaekit.allocator import reuse_freed_memory
from vaekit.atomic import atomic_write_text
from vaekit.compiling import CompiledOrEager
from vaekit.config import Config, ObjectiveConfig
from vaekit.data import load_dataset
from vaekit.data.pipeline import ImageData, binarize_static
from vaekit.diagnostics import (
    SEED_IW,
    SEED_STATIC,
    ElboPass,
    collapse_diagnostics,
    derived_seed,
    elbo_pass,
    ladder_estimator,
    seeded_model_inputs,
)
from vaekit.distributed import pick_device
from vaekit.errors import ConfigError, DataError
from vaekit.evaluate_vq import evaluate_vqvae, vq_bound_per_example
from vaekit.models import VAE, VQVAE, HierarchicalVAE
from vaekit.objectives import decoder_log_likelihood, iw_log_likelihood
from vaekit.probability.likelihoods import bits_per_dim
from vaekit.train import checkpoint as ckpt

try:
    import resource
except ImportError:  # not on Windows
    resource = None

EIGHT_BIT = ("discretized_logistic",)
BINARIZATIONS = ("none", "static", "dynamic")

# Target for the activations of one importance-sampling step (chunk_size samples of a batch):
# the batch size is chosen to keep chunk_size * batch * (decoder activations per sample) near
# this. A few hundred MB keeps the matrix products large enough to run at full speed.
IW_MEMORY_BUDGET = 256 * 2**20
# The likelihood's elementwise temporaries, in multiples of the decoder output (x * l,
# softplus(l), their difference, ...); generous for the discretized logistic's bin masses.
LIKELIHOOD_TEMPORARIES = 6
# Importance samples (K times examples) from which ``evaluate`` compiles the decoder and
# likelihood by itself on a CPU. Compiling costs a few seconds (4.3 s for the mlp bench model)
# and saves about 0.8 us per sample there (iw-eval, K = 5000: 29.0 compiled against 25.9
# images/s eager, `make bench` at 6490be7), so it pays from about 5 million samples on.
AUTO_COMPILE_SAMPLES = 10_000_000  # the --compile help in cli.py quotes it


def discrete_nll_nats(nll: float, config: Any, num_dims: int) -> float | None:
    """-log P(x) of the 8-bit data, in nats per example, when the likelihood allows it.

    The discretized logistic gives a probability of the 8-bit values directly. A Gaussian
    density on uniformly dequantized data (x + u) / 256 lower-bounds the discrete
    log-probability after changing scale from [0, 1] to [0, 256): add D log 256
    (Theis et al. 2016, section 3.1). Bernoulli likelihoods model binarized data: no 8-bit
    figure exists for them.
    """
    if config.model.likelihood in EIGHT_BIT:
        return nll
    if config.data.dequantize and config.model.likelihood.startswith("gaussian"):
        return nll + num_dims * math.log(256.0)
    return None


def resolve_binarization(config: Config, binarization: str | None) -> str:
    """The test-set protocol: "dynamic", "static" or "none"; None means the run's own."""
    if binarization is None:
        return config.data.binarize
    if binarization not in BINARIZATIONS:
        raise ConfigError(
            f"binarization must be one of {', '.join(BINARIZATIONS)}, got {binarization!r}"
        )
    if binarization != "none" and config.model.likelihood != "bernoulli":
        raise ConfigError(
            f"binarization {binarization!r} is for Bernoulli likelihoods; this model's "
            f"likelihood is {config.model.likelihood!r}"
        )
    return binarization


def _load_split(config: Config, split: str, binarize: str, limit: int | None) -> ImageData:
    """The split as uint8 images: statically binarized for "static", raw otherwise."""
    data_cfg = config.data.model_copy(
        update={
            "binarize": "static" if binarize == "static" else "none",
            "dequantize": config.data.dequantize and binarize == "none",
        }
    )
    data = load_dataset(data_cfg, split)
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"limit must be a positive number of examples, got {limit}")
        data = data.subset(torch.arange(min(limit, len(data))))
    return data


def _device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return torch.device("cpu") if param is None else param.device


def _inputs(
    model: VAE, data: ImageData, config: Config, binarize: str, seed: int, batch_size: int
) -> Iterable[torch.Tensor]:
    device = _device(model)
    dequantize = config.data.dequantize and binarize == "none"
    for x in seeded_model_inputs(
        data, binarize=binarize, dequantize=dequantize, seed=seed, batch_size=batch_size
    ):
        yield x.to(device)


def _elbo_objective(model: VAE | HierarchicalVAE, objective: ObjectiveConfig) -> ObjectiveConfig:
    """The estimator of the test ELBO: the run's own, except for a ladder VAE.

    A ladder VAE uses :func:`~vaekit.diagnostics.ladder_estimator` whatever it trained with:
    the same ELBO in expectation, whose terms carry the KL per latent that its per-layer KL
    and diagnostics need (the importance-weighted estimators' terms do not).
    """
    if isinstance(model, HierarchicalVAE):
        return objective.model_copy(update={"estimator": ladder_estimator(model)})
    return objective


def _elbo_terms(
    model: VAE | HierarchicalVAE, batches: Iterable[torch.Tensor], config: Config, seed: int
) -> ElboPass:
    """The seeded test-ELBO pass (:func:`elbo_pass`) with :func:`_elbo_objective`."""
    return elbo_pass(model, batches, _elbo_objective(model, config.objective), seed)


class CompiledLogLikelihood(CompiledOrEager):
    """log p(x|z) of a model through ``torch.compile``, falling back to eager on failure.

    Inductor fuses the decoder's bias and ReLU into its matrix products and the likelihood's
    elementwise terms into one pass: 1.6x faster importance sampling for the mlp recipe on
    2 CPU cores when eager passes allocated fresh memory (46.6 vs 74.3 ms per chunk of 100
    samples x 80 images); 1.12x since :func:`vaekit.allocator.reuse_freed_memory` (iw-eval,
    29.0 vs 25.9 images/s), after a few seconds of compiling. A machine without a C++
    compiler gets the eager function, with a warning.
    """

    def __init__(self, model: VAE) -> None:
        super().__init__(decoder_log_likelihood(model), "evaluating", dynamic=False)


def compiles_iw(model: VAE | HierarchicalVAE, k: int, examples: int, compile: bool | None) -> bool:
    """Whether the importance sampling runs compiled: as asked, or by itself (``None``) on a
    CPU once K * examples reaches :data:`AUTO_COMPILE_SAMPLES`, where compiling pays for
    itself. Never by itself for a hierarchical VAE, which it does not cover."""
    if compile is not None:
        return compile
    return (
        not isinstance(model, HierarchicalVAE)
        and _device(model).type == "cpu"
        and k * examples >= AUTO_COMPILE_SAMPLES
    )


def _iw_values(
    model: VAE,
    batches: Iterable[torch.Tensor],
    k: int,
    chunk_size: int,
    seed: int,
    compile: bool = False,
) -> tuple[torch.Tensor, bool]:
    """Per-example importance-weighted log p(x) estimates, [N] float64, and whether they were
    computed compiled (``compile`` asked for it and torch.compile did not fall back)."""
    generator = torch.Generator(device=_device(model)).manual_seed(derived_seed(seed, SEED_IW))
    log_px = CompiledLogLikelihood(model) if compile else None
    values = [
        iw_log_likelihood(
            model, x, k, chunk_size=chunk_size, generator=generator, log_likelihood=log_px
        ).cpu()
        for x in batches
    ]
    return torch.cat(values), log_px is not None and log_px.compiled is not None


def _per_sample_nets(model: VAE | HierarchicalVAE) -> list[tuple[torch.nn.Module, int]]:
    """The nets every importance sample runs through besides the decoder, with their input
    widths: a ladder VAE's top-down nets, since each lower layer's posterior and prior depend
    on the sample of the layer above (its bottom-up pass runs once per image)."""
    if isinstance(model, HierarchicalVAE):
        return list(zip(model.top_down, model.latent_dims[1:], strict=True))
    return []


@torch.no_grad()
def decoder_bytes_per_sample(model: VAE | HierarchicalVAE) -> int:
    """Activation bytes one latent sample costs in the decoder and likelihood (an estimate).

    The sum of every decoder module's output for one z (not all are alive at once, so this
    over-counts a little) plus :data:`LIKELIHOOD_TEMPORARIES` copies of the decoder output;
    for a ladder VAE also its top-down nets' outputs, which run once per sample too.
    """
    sizes: list[int] = []

    def record(_module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    param = next(model.parameters())
    others = _per_sample_nets(model)
    nets = [model.decoder, *(net for net, _ in others)]
    hooks = [m.register_forward_hook(record) for net in nets for m in net.modules()]
    try:
        for net, width in others:
            net(torch.zeros(1, width, dtype=param.dtype, device=param.device))
        # The decoder reads z_1 of a ladder VAE, the whole latent of a one-layer one.
        width = getattr(model, "latent_dims", (model.latent_dim,))[0]
        out = model.decode(torch.zeros(1, width, dtype=param.dtype, device=param.device))
    finally:
        for hook in hooks:
            hook.remove()
    return out.element_size() * (sum(sizes) + LIKELIHOOD_TEMPORARIES * out.numel())


def iw_batch_size(model: VAE, k: int, chunk_size: int, cap: int) -> int:
    """Examples per importance-sampling batch: chunk * batch * activations within the budget."""
    per_example = min(k, chunk_size) * decoder_bytes_per_sample(model)
    return max(1, min(cap, IW_MEMORY_BUDGET // per_example))


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far, in MiB (ru_maxrss; None where unknown).

    It covers everything the process ever held (the interpreter, torch, the dataset, the
    model, every pass), not the evaluation alone, and it never goes down.
    """
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def _iw_report(
    model: VAE,
    config: Config,
    batches: Iterable[torch.Tensor],
    k: int,
    chunk_size: int,
    batch_size: int,
    seed: int,
    compile: bool = False,
) -> dict[str, Any]:
    """The IW-NLL over ``batches`` with its settings, cost and bits/dim when 8-bit."""
    start = time.perf_counter()
    values, compiled = _iw_values(model, batches, k, chunk_size, seed, compile)
    iw_nll = -values.mean().item()
    seconds = time.perf_counter() - start
    per_step = min(k, chunk_size) * batch_size * decoder_bytes_per_sample(model)
    report: dict[str, Any] = {
        "iw_k": k,
        "chunk_size": chunk_size,
        "iw_batch_size": batch_size,
        "iw_nll": iw_nll,
        "iw_compiled": compiled,
    }
    num_dims = math.prod(model.image_shape)
    discrete = discrete_nll_nats(iw_nll, config, num_dims)
    if discrete is not None:
        report["iw_bits_per_dim"] = float(bits_per_dim(discrete, num_dims))
    report["iw_step_activations_mb"] = per_step / 2**20  # the planned bound, an estimate
    report["iw_seconds"] = seconds  # varies between calls, like peak_rss_mb
    report["peak_rss_mb"] = peak_rss_mb()
    return report


@torch.no_grad()
def evaluate_model(
    model: VAE,
    config: Any,
    *,
    split: str = "test",
    seed: int = 0,
    batch_size: int | None = None,
    iw_k: int | None = None,
    chunk_size: int = 100,
    binarization: str | None = None,
    diagnostics: bool = True,
    limit: int | None = None,
    compile: bool | None = None,
) -> dict[str, Any]:
    """Mean test ELBO, reconstruction and KL, the IW-NLL with ``iw_k`` samples, bits/dim when
    8-bit, and posterior-collapse diagnostics; nats per example, repeatable for one seed.

    ``binarization`` picks the test protocol of a Bernoulli model: "dynamic" binarizes each
    test image by sampling, fixed by ``seed`` (the protocol of published MNIST and
    Fashion-MNIST likelihoods); "static" uses the dataset's own static binarization.
    ``limit`` evaluates the first examples only. ``compile`` runs the importance sampling's
    decoder and likelihood through ``torch.compile`` (faster for large K); ``None`` leaves it
    to :func:`compiles_iw`, and the result's ``iw_compiled`` says which ran. The ELBO pass and
    the importance-sampling pass see the same test inputs.
    """
    reuse_freed_memory()  # importance-sampling chunks free and re-allocate tens of MiB each
    binarize = resolve_binarization(config, binarization)
    if iw_k is not None and iw_k < 1:
        raise ConfigError(f"iw_k must be a positive number of importance samples, got {iw_k}")
    if compile and isinstance(model, HierarchicalVAE):
        raise ConfigError(
            "--compile compiles a one-layer VAE's decoder and likelihood; a hierarchical VAE's "
            "importance weights also run its top-down nets per sample, which it does not "
            "cover: evaluate without --compile"
        )
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    data = _load_split(config, split, binarize, limit)
    model.eval()
    batch = batch_size or config.train.eval_batch_size
    if isinstance(model, VQVAE):
        if iw_k is not None:
            raise ConfigError(
                "--iw: a VQ-VAE's posterior is one-hot on its nearest codes, so importance "
                "sampling adds nothing; its bound -log p(x|z_q) - log p(z_q) is reported as is"
            )
        return evaluate_vqvae(
            model,
            config,
            data,
            split=split,
            binarize=binarize,
            seed=seed,
            batch_size=batch,
            discrete_nll=discrete_nll_nats,
        )
    passed = _elbo_terms(model, _inputs(model, data, config, binarize, seed, batch), config, seed)
    elbo, recon, kl = passed.values.mean(1).tolist()
    num_dims = math.prod(model.image_shape)
    result: dict[str, Any] = {
        "dataset": config.data.name or str(config.data.path),
        "split": split,
        "examples": len(data),
        "estimator": _elbo_objective(model, config.objective).estimator,
        "binarization": binarize,
        "seed": seed,
        "elbo": elbo,
        "recon": recon,
        "kl": kl,
        **_kl_per_layer(model, passed),
        "nll_upper_bound": -elbo,
        "units": "nats per example",
    }
    discrete = discrete_nll_nats(-elbo, config, num_dims)
    if discrete is not None:
        result["bits_per_dim"] = float(bits_per_dim(discrete, num_dims))
    if iw_k is not None:
        iw_batch = batch_size or iw_batch_size(model, iw_k, chunk_size, batch)
        batches = _inputs(model, data, config, binarize, seed, iw_batch)
        compiled = compiles_iw(model, iw_k, len(data), compile)
        result.update(
            _iw_report(model, config, batches, iw_k, chunk_size, iw_batch, seed, compiled)
        )
    if diagnostics:
        # The diagnostics draw their fixed-seed subsets and quadrature on the CPU, so they
        # run on a CPU copy of a GPU model (they are a small share of the evaluation).
        result["diagnostics"] = collapse_diagnostics(
            model if _device(model).type == "cpu" else copy.deepcopy(model).cpu(),
            data,
            config,
            seed=seed,
            binarization=binarize,
            batch_size=batch,
            kl_per_dim=passed.kl_per_dim if isinstance(model, HierarchicalVAE) else None,
        )
    return result


def _kl_per_layer(model: VAE | HierarchicalVAE, passed: ElboPass) -> dict[str, float]:
    """``kl_z1``, ``kl_z2`` ... of a ladder VAE from its ELBO pass (they sum to ``kl``)."""
    if not isinstance(model, HierarchicalVAE) or passed.kl_per_dim is None:
        return {}
    return {
        f"kl_z{i}": float(passed.kl_per_dim[s].sum())
        for i, s in enumerate(model.layer_slices, start=1)
    }


@torch.no_grad()
def score_examples(
    model: VAE,
    config: Any,
    data: ImageData,
    *,
    iw_k: int | None,
    seed: int,
    chunk_size: int = 100,
    binarization: str | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Per-example anomaly scores, [N] float64: -log p(x) estimated by IW (``iw_k``) or -ELBO
    (for a VQ-VAE its bound -log p(x|z_q) - log p(z_q), with the learned prior when it has one).

    ``data`` may come from another dataset than the model's but must have its image shape.
    "static" binarization uses images that are already binary as they are and otherwise
    samples them once with a seed derived from ``seed``.
    """
    reuse_freed_memory()
    if tuple(data.shape) != tuple(model.image_shape):
        have = "x".join(map(str, data.shape))
        want = "x".join(map(str, model.image_shape))
        raise DataError(
            f"{data.name}: images are {have} (C x H x W) but the model was trained on {want}"
        )
    binarize = resolve_binarization(config, binarization)
    if binarize == "static" and not bool(((data.images == 0) | (data.images == 255)).all()):
        data = binarize_static(data, derived_seed(seed, SEED_STATIC))
    model.eval()
    batch = batch_size or config.train.eval_batch_size
    if isinstance(model, VQVAE):
        if iw_k is not None:
            raise ConfigError("--iw: a VQ-VAE is scored by its exact bound; drop --iw")
        return vq_bound_per_example(model, data, config, binarize, seed, batch)
    if iw_k is None:
        batches = _inputs(model, data, config, binarize, seed, batch)
        return -_elbo_terms(model, batches, config, seed).values[0]
    if iw_k < 1:
        raise ConfigError(f"iw_k must be a positive number of importance samples, got {iw_k}")
    iw_batch = batch_size or iw_batch_size(model, iw_k, chunk_size, batch)
    batches = _inputs(model, data, config, binarize, seed, iw_batch)
    return -_iw_values(model, batches, iw_k, chunk_size, seed)[0]


def auroc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> float:
    """Area under the ROC curve for telling out-of-distribution (higher score) from in.

    The Mann-Whitney U statistic over all (in, out) pairs, ties counted half:
    AUROC = P(s_out > s_in) + P(s_out = s_in) / 2, from average ranks in O(n log n).
    """
    a = torch.as_tensor(scores_in, dtype=torch.float64).flatten()
    b = torch.as_tensor(scores_out, dtype=torch.float64).flatten()
    if len(a) == 0 or len(b) == 0:
        raise ValueError("auroc needs at least one in- and one out-of-distribution score")
    both = torch.cat([a, b])
    if torch.isnan(both).any():
        raise ValueError("auroc: scores contain NaN")
    _, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    # Tied values share the average of the ranks they span: 1-based ranks start..start+c-1.
    starts = torch.cumsum(counts, 0) - counts
    average_rank = starts.double() + (counts.double() + 1.0) / 2.0
    rank_sum_out = average_rank[inverse[len(a) :]].sum().item()
    u_out = rank_sum_out - len(b) * (len(b) + 1) / 2.0
    return u_out / (len(a) * len(b))


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    seed: int = 0,
    batch_size: int | None = None,
    iw_k: int | None = None,
    chunk_size: int = 100,
    binarization: str | None = None,
    diagnostics: bool = True,
    limit: int | None = None,
    compile: bool | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a run's checkpoint and write the result to ``eval.json`` in the run.

    ``device`` is "cpu", "cuda" or "auto" (the GPU when there is one); the result names
    the device, since importance samples drawn on a GPU come from another random stream.
    """
    run_dir = Path(run_dir)
    where = pick_device(device, what="--device")
    model = ckpt.load_run(run_dir).to(where)
    result = evaluate_model(
        model,
        model.config,
        split=split,
        seed=seed,
        batch_size=batch_size,
        iw_k=iw_k,
        chunk_size=chunk_size,
        binarization=binarization,
        diagnostics=diagnostics,
        limit=limit,
        compile=compile,
    )
    result["device"] = where.type
    atomic_write_text(run_dir / ckpt.EVAL_FILE, json.dumps(result, indent=2) + "\n")
    return result
