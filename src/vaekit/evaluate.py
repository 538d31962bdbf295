"""Metrics of a trained model on held-out data, seeded so that they repeat exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from vaekit.atomic import atomic_write_text
from vaekit.data import iterate_batches, load_dataset, to_model_input
from vaekit.models import VAE
from vaekit.probability.likelihoods import bits_per_dim
from vaekit.train import checkpoint as ckpt

EIGHT_BIT = ("discretized_logistic",)


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


@torch.no_grad()
def evaluate_model(
    model: VAE,
    config: Any,
    *,
    split: str = "test",
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Mean test ELBO, reconstruction and KL in nats per example, and bits/dim when 8-bit."""
    data = load_dataset(config.data, split)
    model.eval()
    noise = torch.Generator().manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for xb in iterate_batches(
            data, batch_size or config.train.eval_batch_size, shuffle=False, generator=None
        ):
            x = to_model_input(
                xb,
                binarize=config.data.binarize,
                dequantize=config.data.dequantize,
                generator=noise,
            )
            terms = model.elbo(x, config.objective.estimator)
            totals += torch.stack([terms.elbo, terms.recon, terms.kl]).double().sum(1)
    elbo, recon, kl = (totals / len(data)).tolist()
    num_dims = math.prod(model.image_shape)
    result: dict[str, Any] = {
        "dataset": config.data.name or str(config.data.path),
        "split": split,
        "examples": len(data),
        "estimator": config.objective.estimator,
        "binarization": config.data.binarize,
        "seed": seed,
        "elbo": elbo,
        "recon": recon,
        "kl": kl,
        "nll_upper_bound": -elbo,
        "units": "nats per example",
    }
    discrete = discrete_nll_nats(-elbo, config, num_dims)
    if discrete is not None:
        result["bits_per_dim"] = float(bits_per_dim(discrete, num_dims))
    return result


def evaluate_run(
    run_dir: str | Path, *, split: str = "test", seed: int = 0, batch_size: int | None = None
) -> dict[str, Any]:
    """Evaluate a run's checkpoint and write the result to ``eval.json`` in the run."""
    run_dir = Path(run_dir)
    model = ckpt.load_run(run_dir)
    result = evaluate_model(model, model.config, split=split, seed=seed, batch_size=batch_size)
    atomic_write_text(run_dir / ckpt.EVAL_FILE, json.dumps(result, indent=2) + "\n")
    return result
