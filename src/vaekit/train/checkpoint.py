"""Run directories and checkpoints: safe to write, safe to load.

Weights go to ``model.safetensors`` (no pickle); optimizer, scheduler, counters and RNG
states go to ``state.pt``, loaded with ``weights_only=True`` so that a tampered file cannot
run code. Every file is written atomically.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
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
PICTURES_DIR = "pictures"
TENSORBOARD_DIR = "tensorboard"


@dataclass
class TrainState:
    """Everything besides the weights that an exact resume needs."""

    epoch: int
    step: int
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    rng: dict[str, torch.Tensor]


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
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(run_dir / name, save_safetensors(tensors))


def load_weights(run_dir: Path, model: torch.nn.Module, name: str = WEIGHTS_FILE) -> None:
    """Load safetensors weights into ``model``, refusing a file that does not fit it."""
    path = run_dir / name
    if not path.is_file():
        raise RunError(f"{path}: missing (the run has no checkpoint yet)")
    try:
        tensors = load_safetensors(path.read_bytes())
    except (SafetensorError, ValueError) as err:
        raise RunError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise RunError(f"{path}: weights do not fit the model in {CONFIG_FILE} ({first})") from None


def save_state(run_dir: Path, state: TrainState) -> None:
    """Write optimizer, scheduler, counters and RNG states."""
    buf = io.BytesIO()
    torch.save(
        {
            "epoch": state.epoch,
            "step": state.step,
            "optimizer": state.optimizer,
            "scheduler": state.scheduler,
            "rng": state.rng,
        },
        buf,
    )
    atomic_write_bytes(run_dir / STATE_FILE, buf.getvalue())


def load_state(run_dir: Path) -> TrainState:
    """Read ``state.pt`` with ``weights_only=True`` (tensors and plain containers only)."""
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise RunError(f"{path}: missing, cannot resume this run")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return TrainState(
            epoch=int(raw["epoch"]),
            step=int(raw["step"]),
            optimizer=raw["optimizer"],
            scheduler=raw["scheduler"],
            rng=raw["rng"],
        )
    except Exception as err:  # any unpickling failure means the file is unusable
        raise RunError(f"{path}: unreadable training state ({type(err).__name__})") from None


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


def load_run(run_dir: str | Path) -> VAE | VQVAE:
    """The trained model of a run directory, in eval mode, ready to encode, decode and sample.

    The run's resolved config is attached as ``model.config``; a VQ-VAE whose run holds a
    trained prior over codes (``prior.safetensors``) gets it attached as ``code_prior``.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model = build_model(config)
    load_weights(run_dir, model)
    model.eval()
    model.config = config
    if isinstance(model, VQVAE) and (run_dir / PRIOR_FILE).is_file():
        prior = build_code_prior(model, config)
        load_weights(run_dir, prior, PRIOR_FILE)
        model.attach_prior(prior.eval())
    return model
