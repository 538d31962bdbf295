"""`vaekit train-prior RUN`: fit the prior over a trained VQ-VAE's codes, inside its run.

The second stage of VQ-VAE training (van den Oord et al. 2017, section 3.2): encode the
training and validation images to code maps with the frozen VQ-VAE, fit a
:class:`~vaekit.models.code_prior.CodePrior` to them by maximum likelihood, and store it in
the run directory beside the autoencoder: ``prior.safetensors``, its per-epoch record in
``prior_metrics.jsonl`` and the settings used in the ``[prior]`` section of ``config.toml``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console

from vaekit.atomic import atomic_write_text
from vaekit.config import apply_overrides, config_from_dict, read_toml
from vaekit.data import load_dataset
from vaekit.errors import RunError
from vaekit.evaluate_vq import encode_dataset
from vaekit.train import checkpoint as ckpt
from vaekit.train.prior_fit import PriorEpoch, fit_prior

CODE_SEED = 7_919  # the one binarization draw of images whose codes the prior learns


@dataclass
class PriorResult:
    """Where the prior went and what its last epoch measured (nats per code map)."""

    path: Path
    epochs: list[PriorEpoch]
    bits_per_code: float


def train_prior(
    run_dir: str | Path,
    *,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> PriorResult:
    """Fit and save the prior over codes of the VQ-VAE in ``run_dir``."""
    console = console or Console(stderr=True)
    run_dir = Path(run_dir)
    config_path = run_dir / ckpt.CONFIG_FILE
    config = ckpt.read_run_config(run_dir)
    if config.model.kind != "vqvae":
        raise RunError(
            f"{run_dir}: a {config.model.kind!r} model; train-prior fits the prior over the "
            "codes of a VQ-VAE (model.kind = 'vqvae')"
        )
    if overrides:
        bad = [o for o in overrides if not o.strip().startswith("prior.")]
        if bad:
            raise RunError(f"--set {bad[0]!r}: train-prior only takes prior.* settings")
        raw = apply_overrides(read_toml(config_path), overrides)
        config = config_from_dict(raw, f"{config_path} (with --set overrides)")
    prior_path = run_dir / ckpt.PRIOR_FILE
    if prior_path.exists() and not overwrite:
        raise RunError(f"{prior_path}: this run already has a prior; pass --overwrite to refit it")

    model = ckpt.load_run(run_dir)
    model.config = config
    train_data = load_dataset(config.data, "train")
    val_data = load_dataset(config.data, "val")
    if len(val_data) == 0:
        val_data = train_data
    console.print(f"encoding {len(train_data)} training and {len(val_data)} validation images")
    train_codes = encode_dataset(model, train_data, seed=CODE_SEED)
    val_codes = encode_dataset(model, val_data, seed=CODE_SEED)

    p = config.prior
    torch.manual_seed(p.seed)
    prior = ckpt.build_code_prior(model, config)
    h, w = model.code_shape
    uniform = h * w * math.log(model.num_codes)
    console.print(
        f"fitting a {p.layers}-layer transformer prior over {h}x{w} maps of {model.num_codes} "
        f"codes (uniform prior: {uniform:.1f} nats per map)"
    )
    records: list[str] = []

    def log_epoch(e: PriorEpoch) -> None:
        record = {
            "epoch": e.epoch,
            "train/nll": e.train_nll,
            "val/nll": e.val_nll,
            "val/bits_per_code": e.val_nll / (h * w * math.log(2)),
            "epoch_seconds": e.seconds,
        }
        records.append(json.dumps(record) + "\n")
        console.print(
            f"prior epoch {e.epoch}/{p.epochs}  train nll {e.train_nll:.2f}  "
            f"val nll {e.val_nll:.2f} nats per map ({record['val/bits_per_code']:.3f} bits "
            f"per code)  {e.seconds:.1f} s",
            soft_wrap=True,
        )

    epochs = fit_prior(
        prior,
        train_codes,
        val_codes,
        epochs=p.epochs,
        batch_size=p.batch_size,
        lr=p.lr,
        seed=p.seed,
        on_epoch=log_epoch,
        progress=config.train.progress,
    )
    ckpt.save_weights(run_dir, prior, ckpt.PRIOR_FILE)
    atomic_write_text(run_dir / ckpt.PRIOR_METRICS_FILE, "".join(records))
    ckpt.write_config(run_dir, config)
    return PriorResult(prior_path, epochs, epochs[-1].val_nll / (h * w * math.log(2)))
