"""Run directories and checkpoints: safe to write, safe to load, checked before use.

Weights go to ``model.safetensors`` (no pickle); optimizer, scheduler, counters and RNG
states go to ``state.pt``, loaded with ``weights_only=True`` so that a tampered file cannot
run code. Every file is written atomically.

Each checkpoint is a folder ``checkpoints/step-NNNNNNNNN/`` holding both files; the small
``checkpoints/manifest.json`` lists the complete ones with the SHA-256 of each file and is
replaced (atomically) only after a new folder is fully on disk, so the previous checkpoint
stays valid until the new one is complete. Loading walks the manifest from the newest
checkpoint back and takes the first whose checksums match: a truncated or corrupted file is
reported and skipped. The run's top-level ``model.safetensors`` and ``state.pt`` are copies
of the newest checkpoint, for people and tools that look there.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from vaekit.atomic import atomic_write_bytes, atomic_write_text
from vaekit.config import Config, config_from_dict, read_toml, to_toml
from vaekit.errors import RunError
from vaekit.models import MODELS, VAE, VQVAE
from vaekit.models.code_prior import CodePrior

CONFIG_FILE = "config.toml"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
METRICS_FILE = "metrics.jsonl"
PRIOR_FILE = "prior.safetensors"  # a VQ-VAE's prior over codes, from `vaekit train-prior`
PRIOR_METRICS_FILE = "prior_metrics.jsonl"
EVAL_FILE = "eval.json"
BEST_FILE = "best.safetensors"  # the best validated weights, with train.early_stopping_patience
PICTURES_DIR = "pictures"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINTS_DIR = "checkpoints"
MANIFEST_FILE = "manifest.json"  # inside CHECKPOINTS_DIR


@dataclass
class TrainState:
    """Everything besides the weights that an exact resume needs."""

    epoch: int  # completed epochs
    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, torch.Tensor]
    batch_in_epoch: int = 0  # batches of epoch ``epoch + 1`` already done (a mid-epoch save)
    progress: dict[str, Any] = field(default_factory=dict)  # that epoch's running sums
    health: dict[str, Any] = field(default_factory=dict)  # bad-step and restore counters
    ema: dict[str, torch.Tensor] | None = None  # the AveragedModel's state (train.ema_decay)
    stopping: dict[str, Any] = field(default_factory=dict)  # early stopping's best so far


def write_config(run_dir: Path, config: Config) -> None:
    """Write the fully resolved config of a run."""
    atomic_write_text(run_dir / CONFIG_FILE, to_toml(config))


def read_run_config(run_dir: str | Path) -> Config:
    """The resolved config a run was trained with."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: not a vaekit run ({CONFIG_FILE} is missing)")
    return config_from_dict(read_toml(path), str(path))


def save_weights(run_dir: Path, model: torch.nn.Module, name: str = WEIGHTS_FILE) -> None:
    """Write the model's weights as safetensors."""
    atomic_write_bytes(run_dir / name, _weights_bytes(model))


def load_weights(run_dir: Path, model: torch.nn.Module, name: str = WEIGHTS_FILE) -> None:
    """Load safetensors weights into ``model``, refusing a file that does not fit it."""
    path = run_dir / name
    if not path.is_file():
        raise RunError(f"{path}: missing (the run has no checkpoint yet)")
    _load_weights_bytes(path.read_bytes(), model, path)


def _state_bytes(state: TrainState) -> bytes:
    buf = io.BytesIO()
    torch.save(
        {
            "epoch": state.epoch,
            "step": state.step,
            "optimizer": state.optimizer,
            "scheduler": state.scheduler,
            "rng": state.rng,
            "batch_in_epoch": state.batch_in_epoch,
            "progress": state.progress,
            "health": state.health,
            "ema": state.ema,
            "stopping": state.stopping,
        },
        buf,
    )
    return buf.getvalue()


def _weights_bytes(model: torch.nn.Module) -> bytes:
    return save_safetensors(
        {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    )


def save_state(run_dir: Path, state: TrainState) -> None:
    """Write optimizer, scheduler, counters and RNG states to ``RUN/state.pt``."""
    atomic_write_bytes(run_dir / STATE_FILE, _state_bytes(state))


def _parse_state(source: Path | bytes, where: Path) -> TrainState:
    try:
        f = io.BytesIO(source) if isinstance(source, bytes) else source
        raw = torch.load(f, map_location="cpu", weights_only=True)
        return TrainState(
            epoch=int(raw["epoch"]),
            step=int(raw["step"]),
            optimizer=raw["optimizer"],
            scheduler=raw["scheduler"],
            rng=raw["rng"],
            batch_in_epoch=int(raw.get("batch_in_epoch", 0)),
            progress=raw.get("progress", {}),
            health=raw.get("health", {}),
            ema=raw.get("ema"),
            stopping=raw.get("stopping", {}),
        )
    except Exception as err:  # any unpickling failure means the file is unusable
        raise RunError(
            f"{where}: unreadable training state ({type(err).__name__}; only tensors and plain "
            "containers are accepted)"
        ) from None


def load_state(run_dir: Path) -> TrainState:
    """Read ``RUN/state.pt`` with ``weights_only=True`` (tensors and plain containers only)."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise RunError(f"{path}: missing, cannot resume this run")
    return _parse_state(path, path)


# --------------------------------------------------------------------------- checkpoints


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(run_dir: Path) -> list[dict[str, Any]]:
    """The complete checkpoints of a run, oldest first ([] for a run without a manifest)."""
    path = run_dir / CHECKPOINTS_DIR / MANIFEST_FILE
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["checkpoints"]
        for e in entries:
            str(e["name"]), int(e["step"]), int(e["epoch"]), dict(e["files"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RunError(f"{path}: unreadable checkpoint manifest ({type(err).__name__})") from None
    return entries


def write_checkpoint(run_dir: Path, model: torch.nn.Module, state: TrainState, keep: int) -> str:
    """Save weights and state as a new checkpoint, then list it in the manifest.

    The order makes every crash safe: the folder is complete (and fsynced) before the
    manifest names it, the manifest swap is atomic, and older folders are deleted only after.
    A write error (a full disk) leaves the manifest and the checkpoints it lists untouched.
    """
    name = f"step-{state.step:09d}"
    weights, blob = _weights_bytes(model), _state_bytes(state)
    folder = run_dir / CHECKPOINTS_DIR / name
    try:
        atomic_write_bytes(folder / WEIGHTS_FILE, weights)
        atomic_write_bytes(folder / STATE_FILE, blob)
        entries = [e for e in read_manifest(run_dir) if e["name"] != name]
        entries.append(
            {
                "name": name,
                "step": state.step,
                "epoch": state.epoch,
                "batch_in_epoch": state.batch_in_epoch,
                "files": {WEIGHTS_FILE: _sha256(weights), STATE_FILE: _sha256(blob)},
            }
        )
        kept = entries[-keep:]
        manifest = json.dumps({"format": 1, "checkpoints": kept}, indent=1) + "\n"
        atomic_write_text(run_dir / CHECKPOINTS_DIR / MANIFEST_FILE, manifest)
        atomic_write_bytes(run_dir / WEIGHTS_FILE, weights)
        atomic_write_bytes(run_dir / STATE_FILE, blob)
    except OSError as err:
        valid = read_manifest(run_dir)
        last = f"step {valid[-1]['step']}" if valid else "none yet"
        reason = "disk full" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        raise RunError(
            f"{folder}: could not write the checkpoint at step {state.step} ({reason}); "
            f"the newest complete checkpoint ({last}) is intact"
        ) from None
    _remove_leftovers(run_dir, {e["name"] for e in kept})
    return name


def _remove_leftovers(run_dir: Path, keep: set[str]) -> None:
    """Delete checkpoint folders the manifest no longer lists and temp files of killed writes."""
    folder = run_dir / CHECKPOINTS_DIR
    for child in folder.iterdir():
        if child.is_dir() and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)  # older ones, or a crashed half-write
    # atomic_write_bytes names its temp files ".<name>.<random>.tmp" beside the target.
    stale = [*folder.glob(".*.tmp")]
    for name in (WEIGHTS_FILE, STATE_FILE):
        stale += run_dir.glob(f".{name}.*.tmp")
    for path in stale:
        path.unlink(missing_ok=True)


def _verified(folder: Path, entry: dict[str, Any], file: str) -> bytes:
    path = folder / file
    try:
        data = path.read_bytes()
    except OSError:
        raise RunError(f"{path}: missing") from None
    if _sha256(data) != entry["files"].get(file):
        raise RunError(f"{path}: checksum mismatch (truncated or corrupted)")
    return data


def _load_weights_bytes(data: bytes, model: torch.nn.Module, where: Path) -> None:
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError) as err:
        raise RunError(f"{where}: not a readable safetensors file ({err})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        # torch lists each mismatch after a header line; the first one names a tensor.
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "")
        raise RunError(
            f"{where}: weights do not fit the model in {CONFIG_FILE} ({detail.rstrip('.')})"
        ) from None


def load_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    *,
    with_state: bool = True,
    warn: Callable[[str], None] | None = None,
) -> TrainState | None:
    """Load the newest checkpoint whose checksums match into ``model``; return its state.

    Checkpoints that fail (missing, truncated, corrupted, unreadable) are reported through
    ``warn`` and the next older one is tried; RunError when none is usable. A run written
    before checkpoints had a manifest loads from its top-level files.
    """
    entries = read_manifest(run_dir)
    if not entries:
        load_weights(run_dir, model)
        return load_state(run_dir) if with_state else None
    problems: list[str] = []
    for entry in reversed(entries):
        folder = run_dir / CHECKPOINTS_DIR / entry["name"]
        try:
            weights = _verified(folder, entry, WEIGHTS_FILE)
            blob = _verified(folder, entry, STATE_FILE) if with_state else b""
            _load_weights_bytes(weights, model, folder / WEIGHTS_FILE)
            state = _parse_state(blob, folder / STATE_FILE) if with_state else None
        except RunError as err:
            problems.append(str(err))
            continue
        if problems and warn is not None:
            warn(f"skipped: {'; '.join(problems)}; using {entry['name']} (step {entry['step']})")
        return state
    raise RunError(f"{run_dir}: no usable checkpoint: {'; '.join(problems)}")


def build_model(config: Config) -> VAE | VQVAE:
    """The untrained model a config describes (its image_shape must be resolved)."""
    if config.image_shape is None:
        raise RunError("config has no image_shape; it is filled in when a run starts")
    c, h, w = config.image_shape
    return MODELS[config.model.kind](config.model, (c, h, w))


def build_code_prior(model: VQVAE, config: Config) -> CodePrior:
    """The untrained prior over ``model``'s code maps that ``config.prior`` describes."""
    p = config.prior
    h, w = model.code_shape
    return CodePrior(
        model.num_codes, h, w, dim=p.dim, layers=p.layers, heads=p.heads, dropout=p.dropout
    )


def ema_weights(ema_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model state dict inside an AveragedModel's state (keys "module.*")."""
    return {k.removeprefix("module."): v for k, v in ema_state.items() if k.startswith("module.")}


def load_run(run_dir: str | Path) -> VAE | VQVAE:
    """The trained model of a run directory, in eval mode, ready to encode, decode and sample.

    With ``train.early_stopping_patience`` the weights are the best validated ones
    (``best.safetensors``); else with ``train.ema_decay`` the moving average kept in the newest
    checkpoint; else the newest checkpoint's.
    The run's resolved config is attached as ``model.config``; a VQ-VAE whose run holds a
    trained prior over codes (``prior.safetensors``) gets it attached as ``code_prior``.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model = build_model(config)
    state = load_checkpoint(run_dir, model, with_state=config.train.ema_decay is not None)
    if config.train.early_stopping_patience and (run_dir / BEST_FILE).is_file():
        load_weights(run_dir, model, BEST_FILE)  # the epoch early stopping chose
    elif state is not None and state.ema is not None:
        # The moving average of the weights (train.ema_decay) is the model to evaluate.
        model.load_state_dict(ema_weights(state.ema))
    model.eval()
    model.config = config
    if isinstance(model, VQVAE) and (run_dir / PRIOR_FILE).is_file():
        prior = build_code_prior(model, config)
        load_weights(run_dir, prior, PRIOR_FILE)
        model.attach_prior(prior.eval())
    return model
