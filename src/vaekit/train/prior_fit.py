"""Fitting a CodePrior to the code maps of a trained VQ-VAE (the second stage of training).

van den Oord et al. (2017, sec. 3.2) train the VQ-VAE first and then fit the prior to the
codes its encoder assigns, by maximum likelihood; the codes are fixed data here, so this
loop knows nothing of images or of the VQ-VAE itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from vaekit.models.code_prior import CodePrior

MAX_GRAD_NORM = 1.0


@dataclass
class PriorEpoch:
    """What one epoch of prior training measured; NLLs are nats per code map."""

    epoch: int
    train_nll: float
    val_nll: float
    seconds: float


def check_codes(prior: CodePrior, codes: torch.Tensor, name: str = "codes") -> None:
    """Raise ValueError unless ``codes`` is a non-empty integer [N, H, W] map in [0, K)."""
    expected = (prior.height, prior.width)
    if codes.dim() != 3 or tuple(codes.shape[1:]) != expected:
        raise ValueError(
            f"{name}: expected shape [N, {prior.height}, {prior.width}], got {tuple(codes.shape)}"
        )
    if codes.shape[0] == 0:
        raise ValueError(f"{name}: no code maps (N = 0)")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"{name}: expected an integer tensor, got {codes.dtype}")
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= prior.num_codes:
        raise ValueError(
            f"{name}: codes must lie in [0, {prior.num_codes}), found values in [{low}, {high}]"
        )


def _device(prior: CodePrior) -> torch.device:
    return next(prior.parameters()).device


@torch.no_grad()
def code_nll(prior: CodePrior, codes: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Per-map -log p(c) in nats, [N] float64, in eval mode (no dropout)."""
    check_codes(prior, codes)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    was_training = prior.training
    prior.eval()
    device = _device(prior)
    try:
        parts = [
            -prior.log_prob(codes[i : i + batch_size].to(device)).double()
            for i in range(0, len(codes), batch_size)
        ]
    finally:
        prior.train(was_training)
    return torch.cat(parts).to(codes.device)


def fit_prior(
    prior: CodePrior,
    train_codes: torch.Tensor,
    val_codes: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[PriorEpoch], None] | None = None,
    progress: bool = True,
) -> list[PriorEpoch]:
    """Fit ``prior`` to code maps by maximum likelihood; returns one record per epoch.

    AdamW on the mean NLL per map, a cosine learning-rate decay over all steps and gradient
    clipping at norm 1. Shuffling and dropout are seeded from ``seed``, so two fits of the
    same initial prior on the same codes agree exactly.
    """
    check_codes(prior, train_codes, "train_codes")
    check_codes(prior, val_codes, "val_codes")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr}")

    device = _device(prior)
    torch.manual_seed(seed)  # dropout
    shuffle = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train_codes) / batch_size)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    was_training = prior.training
    history: list[PriorEpoch] = []
    bar = Progress(
        TextColumn("[bold]prior epoch {task.fields[epoch]}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        transient=True,
        disable=not progress,
    )
    with bar:
        task = bar.add_task("prior", total=steps_per_epoch, epoch=1, stats="")
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            stats = f"val nll {history[-1].val_nll:.3f}" if history else ""
            # reset() replaces every field, so both are passed again.
            bar.reset(task, total=steps_per_epoch, epoch=epoch, stats=stats)
            prior.train()
            # Summed on the device and read once per epoch: no host sync per step.
            total_nll = torch.zeros((), dtype=torch.float64, device=device)
            order = torch.randperm(len(train_codes), generator=shuffle).to(train_codes.device)
            for i in range(0, len(order), batch_size):
                batch = train_codes[order[i : i + batch_size]].to(device)
                nll = -prior.log_prob(batch)
                optimizer.zero_grad(set_to_none=True)
                nll.mean().backward()
                torch.nn.utils.clip_grad_norm_(prior.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                schedule.step()
                total_nll += nll.detach().double().sum()
                bar.advance(task)
            record = PriorEpoch(
                epoch=epoch,
                train_nll=total_nll.item() / len(train_codes),
                val_nll=code_nll(prior, val_codes).mean().item(),
                seconds=time.perf_counter() - start,
            )
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    prior.train(was_training)
    return history
