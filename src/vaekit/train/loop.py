"""The training loop: Adam on the ELBO, validation each epoch, pictures and checkpoints.

Reproducibility: all randomness comes from the run's seed through three generators
(torch's global one for the reparameterisation noise, one for shuffling, one for dynamic
binarization and dequantization noise). Their states are saved with each checkpoint, so a
resumed run continues exactly where a straight run would be.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from vaekit import distributed
from vaekit.allocator import reuse_freed_memory
from vaekit.compiling import CompiledOrEager
from vaekit.config import Config, check_image_shape
from vaekit.data import ImageData, iterate_batches, load_dataset, resolve_name, to_model_input
from vaekit.data.pipeline import batch_indices
from vaekit.errors import ConfigError, RunError
from vaekit.models import VAE, VQVAE
from vaekit.models.quantizer import usage_and_perplexity
from vaekit.objectives import Terms, VQTerms, iw_log_likelihood, kl_weight, training_loss
from vaekit.probability.noise import RowShare, row_share, rows_of
from vaekit.train import checkpoint as ckpt
from vaekit.train.logging import MetricsLog
from vaekit.viz.grid import save_grid, save_pairs

EVAL_SEED_OFFSET = 1_000_003  # validation noise is seeded apart from the training noise


@dataclass
class TrainResult:
    """Where a run lives and the record of its last epoch."""

    run_dir: Path
    epochs: int
    steps: int
    last: dict[str, float] = field(default_factory=dict)


def resolve_config(config: Config, train_data: ImageData) -> Config:
    """Fill in what the data decides: the dataset name for "auto" and the image shape."""
    updates = config.model_copy(deep=True)
    shape = list(train_data.shape)
    try:
        check_image_shape(config.model, shape)
    except ValueError as err:
        raise ConfigError(f"{err}") from None
    updates.image_shape = shape
    return updates


class TermTotals:
    """Running sums of a model's logged per-example terms, and code counts for a VQ-VAE.

    Everything stays on the device as tensors; :meth:`means` is the one read-back.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None
        self.code_counts: torch.Tensor | None = None
        self.seen = 0

    def add(self, terms: Terms | VQTerms) -> None:
        logged = terms.logged()
        rows = torch.stack([v.detach() for v in logged.values()]).double().sum(1)
        if self.sums is None:
            self.names, self.sums = list(logged), rows
        else:
            self.sums += rows
        if isinstance(terms, VQTerms):
            counts = torch.bincount(terms.codes.flatten(), minlength=terms.num_codes)
            self.code_counts = counts if self.code_counts is None else self.code_counts + counts
        self.seen += int(terms.recon.shape[0])

    def state(self) -> dict[str, Any]:
        """The running sums as plain tensors, for a mid-epoch checkpoint."""
        return {
            "names": list(self.names),
            "sums": self.sums,
            "code_counts": self.code_counts,
            "seen": self.seen,
        }

    def load(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` of a checkpoint."""
        self.names = list(state.get("names", []))
        self.sums = state.get("sums")
        self.code_counts = state.get("code_counts")
        self.seen = int(state.get("seen", 0))

    def zeroed(self) -> TermTotals:
        """Empty totals with the same names: what a process other than rank 0 resumes with
        (rank 0 carries the checkpoint's totals of the whole global batch)."""
        out = TermTotals()
        out.names = list(self.names)
        out.sums = None if self.sums is None else torch.zeros_like(self.sums)
        out.code_counts = None if self.code_counts is None else torch.zeros_like(self.code_counts)
        return out

    def reduced(self) -> TermTotals:
        """The totals summed over all training processes (a collective; self for one process).

        Every process has added the same number of batches, so either all or none hold sums.
        """
        if not distributed.active() or self.sums is None:
            return self
        parts = [
            self.sums,
            torch.tensor([float(self.seen)], dtype=torch.float64, device=self.sums.device),
        ]
        if self.code_counts is not None:
            parts.append(self.code_counts.double())
        flat = distributed.all_reduce_sum_(torch.cat(parts))
        out = TermTotals()
        out.names = list(self.names)
        n = len(self.names)
        out.sums, out.seen = flat[:n], int(flat[n].item())
        if self.code_counts is not None:
            out.code_counts = flat[n + 1 :].round().long()
        return out

    def means(self) -> dict[str, float]:
        """Mean of each term per example, plus codebook usage and perplexity for a VQ-VAE."""
        if self.sums is None:
            return {}
        out = dict(zip(self.names, (self.sums / self.seen).tolist(), strict=True))
        if self.code_counts is not None:
            usage, perplexity = usage_and_perplexity(self.code_counts.cpu())
            out["code_usage"], out["perplexity"] = usage, perplexity
        return out


@torch.no_grad()
def validate(
    model: VAE | VQVAE,
    data: ImageData,
    config: Config,
    seed: int,
    world: distributed.World | None = None,
    iw_samples: int = 0,
) -> dict[str, float]:
    """Mean ELBO, reconstruction and KL (nats per example) over ``data``, with fixed noise;
    for a VQ-VAE also its codebook and commitment terms, code usage and perplexity; with
    ``iw_samples`` also the mean importance-weighted bound ``iw_bound`` (Burda et al. 2016).

    Under DDP each process evaluates its rows of every batch with the global batch's noise and
    the sums are all-reduced: the numbers match one process evaluating the whole set.
    """
    world = world or distributed.World()
    device = world.device
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    totals = TermTotals()
    iw_sum = torch.zeros(2, dtype=torch.float64, device=device)  # sum of bounds, images
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for xb in iterate_batches(
            data, config.train.eval_batch_size, shuffle=False, generator=None
        ):
            share = rows_of(len(xb), world.rank, world.world_size) if world.parallel else None
            if share is not None and share.rows == 0:
                continue  # a last batch smaller than the number of processes
            with row_share(share):
                x = to_model_input(
                    xb if share is None else xb[share.start : share.stop],
                    binarize=config.data.binarize,
                    dequantize=config.data.dequantize,
                    generator=generator,
                )
                x = x.to(device)
                totals.add(model.elbo(x, config.objective, per_dim=False))  # sums only
                if iw_samples:
                    bound = iw_log_likelihood(model, x, iw_samples, chunk_size=min(iw_samples, 50))
                    iw_sum += torch.stack([bound.sum(), bound.new_tensor(float(len(bound)))])
    model.train(was_training)
    means = totals.reduced().means()
    if iw_samples:
        total, count = distributed.all_reduce_sum_(iw_sum).tolist()
        means["iw_bound"] = total / count
    return means


def prepare_for_training(model: torch.nn.Module) -> torch.nn.Module:
    """Lay out a convolutional model's weights channels-last (NHWC), in place.

    oneDNN's convolutions run channels-last without layout conversions: 1.29x (1.27-1.30)
    the training speed of the bench's conv workload on 2 CPU cores, side by side. MLPs have
    no 4-D weights and are left as they are.
    """
    if any(isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


def make_optimizer(model: VAE, cfg: Config) -> torch.optim.Adam:
    """Adam with the run's learning rate and weight decay, as one fused kernel per step.

    ``fused=True`` updates every parameter in a single kernel instead of about ten small
    kernels per parameter tensor: 1.15x the training speed of the mlp recipe on 2 CPU
    cores (bench/, side by side); the update is the same Adam.
    """
    return torch.optim.Adam(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True
    )


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """The autocast context of ``train.precision``: bfloat16 products for "bf16", off for "fp32".

    Under it only the networks' matrix products and convolutions run in bfloat16; the model
    returns float32 network outputs, so likelihoods, KL and the loss are computed in float32.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@dataclass
class StepResult:
    """One training step: the model's terms, the scalar loss, and whether the update was made
    (False when the loss or the gradient norm was NaN or Inf: the step was skipped)."""

    terms: Terms | VQTerms
    loss: torch.Tensor
    finite: bool


class CompiledELBO(CompiledOrEager):
    """``model.elbo`` through torch.compile (``train.compile``), eager after a failure.

    Inductor fuses the elementwise work around the products: the reparameterization, the
    likelihood terms, a mixture prior's log-sum-exp and the importance weights. That is what
    makes the VampPrior recipe's step 1.22x faster on 2 CPU cores; a plain MLP VAE gains
    nothing. Its random draws come from Inductor's generator, not eager's: the same
    distribution, a different stream. Without a C++ compiler the step runs eagerly.

    It compiles for the first batch's size only: a batch of another size (the smaller last
    batch of an epoch) runs eagerly, one step an epoch, instead of paying for a second,
    dynamic-shape compile (tens of seconds on a cold cache) and running every full batch
    through the dynamic graph.
    """

    def __init__(self, model: VAE | VQVAE) -> None:
        super().__init__(model.elbo, "training", dynamic=False)
        self.rows: int | None = None

    def __call__(self, x: torch.Tensor, *args: Any) -> Any:
        if self.rows is None:
            self.rows = x.shape[0]
        if x.shape[0] != self.rows:
            return self.eager(x, *args)
        return super().__call__(x, *args)


def train_step(
    model: VAE | VQVAE,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    cfg: Config,
    *,
    kl_scale: float,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    forward: Any = None,
    loss_weight: float = 1.0,
) -> StepResult:
    """One optimiser step on a batch of model inputs, skipped when the loss or gradient is not
    finite (the weights and optimizer state stay as they were; the schedule moves on).

    The whole per-batch work of :func:`train` (and of the speed benchmark in ``bench/``). The
    one read-back is the finiteness flag, checked before the optimizer may touch the weights.

    Under DDP ``forward`` is the DDP-wrapped ELBO (``vaekit.distributed.wrap``) and
    ``loss_weight`` is world size x local rows / global rows, so that DDP's average of the
    processes' gradients is the gradient of the global batch mean; the processes agree on
    skipping a step.
    """
    elbo = forward if forward is not None else model.elbo
    with autocast(cfg.train.precision, x.device):
        # The KL per latent costs extra under a mixture prior; only free bits read it.
        terms = elbo(x, cfg.objective, cfg.objective.free_bits > 0)
        objective = training_loss(terms, cfg.objective, kl_scale)
    optimizer.zero_grad(set_to_none=True)
    (objective * loss_weight if loss_weight != 1.0 else objective).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if cfg.train.grad_clip is not None:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
    else:
        norm = torch.nn.utils.get_total_norm(grads)
    finite = bool(torch.isfinite(objective) & torch.isfinite(norm))
    finite = not distributed.any_process(not finite, x.device)
    if finite:
        optimizer.step()
    else:
        optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return StepResult(terms, objective, finite)


class LrSchedule:
    """The multiple of ``train.lr`` at an optimiser step, LambdaLR's lambda: a linear rise over
    the warm-up steps (Goyal et al. 2017), times, for "cosine", a cosine decay that reaches 0
    at ``horizon`` steps.

    The horizon starts at the steps of all ``train.epochs``. Under a ``train.max_minutes``
    budget the loop moves it after each epoch to the step where the budget will end the run,
    so that the rate reaches 0 when training stops instead of at an epoch count it never
    reaches (budget-aware decay, Li et al. 2020, "Budgeted Training").
    """

    def __init__(self, total_steps: int, warmup_steps: int, schedule: str) -> None:
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.schedule = schedule
        self.horizon = total_steps

    def __call__(self, step: int) -> float:
        factor = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        if self.schedule == "cosine":
            progress = min(step, self.horizon) / max(1, self.horizon)
            factor *= 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor


def _make_scheduler(
    optimizer: torch.optim.Optimizer, config: Config, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR | None:
    tc = config.train
    if not tc.lr_warmup_steps and tc.lr_schedule == "constant":
        return None
    schedule = LrSchedule(total_steps, tc.lr_warmup_steps, tc.lr_schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _load_scheduler(scheduler: torch.optim.lr_scheduler.LambdaLR, state: dict[str, Any]) -> None:
    """Resume the schedule at the checkpoint's step, keeping this run's steps, warm-up and
    horizon (LambdaLR would restore the saved ones, and train.epochs may have been raised).
    A checkpoint of an older vaekit may hold a CosineAnnealingLR's state: the same step count
    and base rates, which is all that is read from it."""
    ours = [dict(vars(schedule)) for schedule in scheduler.lr_lambdas]
    scheduler.load_state_dict({**state, "lr_lambdas": ours})


def _budget_horizon(
    epochs_done: int, spent_s: float, epochs_before: int, budget_s: float, steps_per_epoch: int
) -> int:
    """The step at which a ``train.max_minutes`` budget will stop the run: as many epochs as
    fit at the mean epoch time so far (the rule the loop stops by), never fewer than done."""
    fit = math.floor(budget_s / (spent_s / epochs_done)) if spent_s > 0 else epochs_done
    return (epochs_before + max(epochs_done, fit)) * steps_per_epoch


def make_ema(model: torch.nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights (torch's AveragedModel), or None.

    Buffers are not averaged but copied (see :func:`update_ema`): a VQ-VAE's codebook is
    itself a moving average, and integer buffers have no average.
    """
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


@torch.no_grad()
def update_ema(ema: AveragedModel, model: torch.nn.Module) -> None:
    """One EMA step after an optimiser step: w_ema <- d w_ema + (1 - d) w (the first copies)."""
    ema.update_parameters(model)
    for mine, theirs in zip(ema.module.buffers(), model.buffers(), strict=True):
        mine.copy_(theirs)


def _progress_stats(means: dict[str, float]) -> str:
    """The few numbers worth watching while a model trains."""
    text = f"recon {means['recon']:.2f}"
    if "perplexity" in means:
        used, perplexity = means["code_usage"], means["perplexity"]
        return text + f"  codes used {used:.0%}  perplexity {perplexity:.0f}"
    return text + f"  kl {means['kl']:.2f}"


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=True,
    )


def _save_pictures(
    model: VAE | VQVAE,
    run_dir: Path,
    epoch: int,
    n_samples: int,
    picture_seed: int,
    x_fixed: torch.Tensor,
) -> None:
    """This epoch's grids: samples from the model's prior (not a VQ-VAE: it has no prior while
    it trains), drawn with the same noise every epoch so that the grid changes only as the
    model (and a learned prior) does, and reconstructions of fixed validation images."""
    pictures = run_dir / ckpt.PICTURES_DIR
    was_training = model.training
    model.eval()
    samples = None
    if not isinstance(model, VQVAE):
        device = x_fixed.device
        noise_source = torch.Generator(device=device).manual_seed(picture_seed)
        samples = model.sample(n_samples, generator=noise_source)
    recon = model.reconstruct(x_fixed)
    model.train(was_training)
    nrow = 8
    if samples is not None:
        save_grid(samples, pictures / "samples" / f"epoch_{epoch:03d}.png", nrow=nrow)
        save_grid(samples, pictures / "samples.png", nrow=nrow)
    save_pairs(x_fixed, recon, pictures / "recon" / f"epoch_{epoch:03d}.png", nrow)
    save_pairs(x_fixed, recon, pictures / "reconstructions.png", nrow)


class TrainingInterrupted(RunError):
    """SIGINT or SIGTERM stopped training after a checkpoint at the current step."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum  # the shell's convention for death by a signal


class _StopSignals:
    """Turn SIGINT / SIGTERM into a flag the loop checks after each step (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        try:
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.received = self.received or signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class _Health:
    """Counters of non-finite steps: consecutive bad steps, restores so far, skipped in total."""

    bad_in_a_row: int = 0
    restores: int = 0
    skipped: int = 0
    lr_scale: float = 1.0

    def state(self) -> dict[str, Any]:
        return {
            "bad_in_a_row": self.bad_in_a_row,
            "restores": self.restores,
            "skipped": self.skipped,
            "lr_scale": self.lr_scale,
        }


def _scale_lr(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    factor: float,
) -> None:
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    if scheduler is not None:
        scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]


def _track_best(stopping: dict[str, Any], val: dict[str, float], epoch: int, iw: bool) -> None:
    """Early stopping's record after an epoch's validation: the best bound so far (higher is
    better: a bound on log p(x)), the epoch it came from, and the epochs since."""
    value = val["iw_bound"] if iw else val["elbo"]
    if not stopping or value > stopping["best"]:
        stopping.update(best=value, best_epoch=epoch, since_best=0)
    else:
        stopping["since_best"] += 1


def _interrupted(
    received: int | None, where: str, run_dir: Path, world: distributed.World
) -> TrainingInterrupted:
    """The error a stop by signal raises once its checkpoint is written (under DDP another
    process may have received the signal: then it is called SIGTERM here)."""
    signum = received or signal.SIGTERM
    return TrainingInterrupted(
        f"{signal.Signals(signum).name} {where}: checkpoint written; "
        f"continue with: {resume_command(run_dir, world)}",
        signum,
    )


def resume_command(run_dir: Path, world: distributed.World) -> str:
    """The command that continues this run, in the launcher it was started with."""
    if world.parallel:
        return f"torchrun ... -m vaekit train --resume {run_dir}"
    return f"vaekit train --resume {run_dir}"


def steps_in_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Optimiser steps per epoch: the full batches, and the last partial one when every
    process gets at least one of its rows (under DDP a smaller last batch is left out)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= world_size else 0)


def _check_world(world: distributed.World, cfg: Config, n_val: int) -> None:
    if world.world_size > cfg.train.batch_size:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} is smaller than the {world.world_size} "
            "processes; the batch size is the global batch, split across processes"
        )
    if world.world_size > n_val:
        raise ConfigError(
            f"data: {n_val} validation images for {world.world_size} processes; "
            "each process needs at least one"
        )
    if cfg.train.compile and world.parallel:
        raise ConfigError(
            "train.compile: not supported under torchrun (DDP); set train.compile = false"
        )


def train(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    console: Console | None = None,
) -> TrainResult:
    """Train the model ``config`` describes, writing everything into ``run_dir``.

    With ``resume=True`` the run continues from its newest valid checkpoint (possibly in the
    middle of an epoch) up to ``config.train.epochs`` with the same weights, optimizer state,
    RNG streams and position in the data, so it ends with the weights of an uninterrupted run.
    SIGINT / SIGTERM write a checkpoint at the current step and raise TrainingInterrupted. A
    step whose loss or gradient is NaN/Inf is skipped; after ``train.max_bad_steps`` in a row
    the newest checkpoint is restored with a lower learning rate, up to ``train.max_restores``
    times, after which the run stops with a RunError saying what happened.

    Started by ``torchrun``, the run is data-parallel (``vaekit.distributed``): the same
    training, step for step, as one process with the same global batch; only rank 0 writes.
    """
    cfg = config.model_copy(deep=True)
    reuse_freed_memory()  # a step's large activations then reuse memory, not fresh pages
    world = distributed.start(cfg.train.device, cfg.train.dist_timeout)
    console = console or Console(stderr=True)
    if not world.is_main:
        console = Console(stderr=True, quiet=True)
    run_dir = Path(run_dir)
    if cfg.data.name == "auto":
        cfg.data.name = resolve_name(cfg.data)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)

    train_data = load_dataset(cfg.data, "train")
    val_data = load_dataset(cfg.data, "val")
    if len(train_data) == 0 or len(val_data) == 0:
        raise ConfigError(
            f"data: {len(train_data)} training and {len(val_data)} validation images; "
            "both must be non-empty (check data.limit and data.val_fraction)"
        )
    cfg = resolve_config(cfg, train_data)
    tc = cfg.train
    _check_world(world, cfg, len(val_data))
    device = world.device

    seed = tc.seed
    torch.manual_seed(seed)
    model = prepare_for_training(ckpt.build_model(cfg)).to(device)
    n_pics = 8 * max(1, tc.picture_count // 8)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = steps_in_epoch(len(train_data), tc.batch_size, world.world_size)
    total_steps = steps_per_epoch * tc.epochs
    scheduler = _make_scheduler(optimizer, cfg, total_steps)
    shuffle_gen = torch.Generator().manual_seed(seed + 1)
    noise_gen = torch.Generator().manual_seed(seed + 2)
    health = _Health()
    # What a restore falls back to before the first checkpoint exists.
    initial = (
        {k: v.clone() for k, v in model.state_dict().items()},
        copy.deepcopy(optimizer.state_dict()),
    )

    start_epoch, step, skip = 0, 0, 0
    stopping: dict[str, Any] = {}  # early stopping: best value, its epoch, epochs since
    resumed: ckpt.TrainState | None = None
    if resume:
        # Every process reads the checkpoint (the run directory must be on a filesystem they
        # all see); DDP then starts all of them from rank 0's weights.
        resumed = ckpt.load_checkpoint(run_dir, model, warn=console.print)
        assert resumed is not None
        optimizer.load_state_dict(resumed.optimizer)
        if scheduler is not None and resumed.scheduler is not None:
            _load_scheduler(scheduler, resumed.scheduler)
        torch.set_rng_state(resumed.rng["torch"])
        if device.type == "cuda" and "cuda" in resumed.rng:
            torch.cuda.set_rng_state(resumed.rng["cuda"], device)
        noise_gen.set_state(resumed.rng["noise"])
        start_epoch, step, skip = resumed.epoch, resumed.step, resumed.batch_in_epoch
        # Mid-epoch: replay the epoch's shuffle from its start and skip the batches done.
        shuffle_gen.set_state(resumed.rng["shuffle_epoch_start" if skip else "shuffle"])
        health = _Health(**resumed.health) if resumed.health else health
        stopping = dict(resumed.stopping)
        patience = tc.early_stopping_patience
        if patience and stopping.get("since_best", 0) >= patience:
            raise RunError(
                f"{run_dir}: stopped early after epoch {start_epoch}: the validation bound has "
                f"not improved since epoch {stopping['best_epoch']}; raise "
                "train.early_stopping_patience to continue"
            )
        if start_epoch >= tc.epochs:
            raise RunError(
                f"{run_dir}: already trained for {start_epoch} epochs; raise train.epochs "
                f"(e.g. --set train.epochs={start_epoch + 5}) to continue"
            )
        if skip:
            console.print(f"resuming at step {step} (epoch {start_epoch + 1}, batch {skip + 1})")
    else:
        if (run_dir / ckpt.WEIGHTS_FILE).exists() or ckpt.read_manifest(run_dir):
            raise RunError(
                f"{run_dir}: already holds a trained run; use --resume {run_dir} or a new --run-dir"
            )
        if world.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
    # Said only now, once the data and the run directory are known to be good, so that a bad
    # input's error is the only line the user sees.
    console.print(f"run directory: [bold]{run_dir}[/bold]")
    if world.parallel:
        low, high = tc.batch_size // world.world_size, -(-tc.batch_size // world.world_size)
        console.print(
            f"data-parallel: {world.world_size} processes ({world.backend} on {device.type}), "
            f"{low if low == high else f'{low}-{high}'} rows of each batch of {tc.batch_size} "
            "per process",
            soft_wrap=True,
        )
    if world.is_main:
        ckpt.write_config(run_dir, cfg)
    forward: Any = distributed.wrap(model, world) if world.parallel else None
    if tc.compile:
        forward = CompiledELBO(model)
    ema = make_ema(model, tc.ema_decay)
    if ema is not None and resumed is not None and resumed.ema is not None:
        ema.load_state_dict(resumed.ema)
    evaluated = ema.module if ema is not None else model  # what validation and pictures see

    # Fixed images: the per-epoch grids show the same z and x every epoch.
    n_x = min(n_pics, len(val_data))
    n_x = n_x - n_x % 8 if n_x >= 8 else n_x
    x_fixed = to_model_input(
        val_data.images[:n_x],
        binarize=cfg.data.binarize if cfg.data.binarize != "dynamic" else "none",
        dequantize=False,
    ).to(device)

    def save(epochs_done: int, batch_in_epoch: int, epoch_start: Any, totals: Any, loss_sum: Any):
        # A collective under DDP (the mid-epoch totals are summed); then rank 0 writes.
        if batch_in_epoch:
            totals = totals.reduced()
            loss_sum = distributed.all_reduce_sum_(loss_sum.clone())
        if not world.is_main:
            return
        rng = {
            "torch": torch.get_rng_state(),
            "shuffle": shuffle_gen.get_state(),
            "shuffle_epoch_start": epoch_start,
            "noise": noise_gen.get_state(),
        }
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        ckpt.write_checkpoint(
            run_dir,
            model,
            ckpt.TrainState(
                epoch=epochs_done,
                step=step,
                optimizer=optimizer.state_dict(),
                scheduler=scheduler.state_dict() if scheduler is not None else None,
                rng=rng,
                batch_in_epoch=batch_in_epoch,
                progress={"totals": totals.state(), "loss_sum": loss_sum} if batch_in_epoch else {},
                health=health.state(),
                ema=ema.state_dict() if ema is not None else None,
                stopping=dict(stopping),
            ),
            tc.keep_checkpoints,
        )

    def restore_after_bad_steps() -> None:
        health.restores += 1
        if health.restores > tc.max_restores:
            raise RunError(
                f"{run_dir}: training diverged: the loss or gradient was NaN/Inf for "
                f"{tc.max_bad_steps} steps in a row at step {step}, even after "
                f"{tc.max_restores} restores with the learning rate lowered to "
                f"{optimizer.param_groups[0]['lr']:.3g}; check the data for NaN/Inf, lower "
                "train.lr or set train.grad_clip (the last good checkpoint is kept)"
            )
        # Every process restores the same files (rank 0 finished writing them steps ago).
        if ckpt.read_manifest(run_dir):
            state = ckpt.load_checkpoint(run_dir, model, warn=console.print)
            assert state is not None
            optimizer.load_state_dict(state.optimizer)
        else:
            model.load_state_dict(initial[0])
            optimizer.load_state_dict(initial[1])
        health.lr_scale *= tc.bad_step_lr_factor
        _scale_lr(optimizer, scheduler, health.lr_scale)
        health.bad_in_a_row = 0
        console.print(
            f"[yellow]{tc.max_bad_steps} non-finite steps in a row at step {step}: restored "
            f"the last good weights, learning rate now {optimizer.param_groups[0]['lr']:.3g}"
        )

    log = (
        MetricsLog(
            run_dir / ckpt.METRICS_FILE, run_dir / ckpt.TENSORBOARD_DIR, keep_epochs=start_epoch
        )
        if world.is_main
        else None
    )
    last: dict[str, float] = {}
    model.train()
    started = time.perf_counter()
    try:
        with _progress(console, tc.progress and world.is_main) as progress, _StopSignals() as stop:
            for epoch in range(start_epoch, tc.epochs):
                task = progress.add_task(
                    "train", total=steps_per_epoch, epoch=f"{epoch + 1}/{tc.epochs}", stats=""
                )
                epoch_start = shuffle_gen.get_state()
                totals = TermTotals()
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                skipped_before = health.skipped
                if skip and resumed is not None and resumed.progress:
                    totals.load(resumed.progress["totals"])
                    loss_sum = resumed.progress["loss_sum"].to(device)
                    if not world.is_main:  # rank 0 alone carries the totals so far
                        totals, loss_sum = totals.zeroed(), torch.zeros_like(loss_sum)
                start = time.perf_counter()
                for i, index in enumerate(
                    batch_indices(
                        len(train_data),
                        tc.batch_size,
                        shuffle=True,
                        generator=shuffle_gen,
                        drop_last=False,
                    )
                ):
                    if i >= steps_per_epoch:
                        break  # DDP: a last batch too small to give every process a row
                    if i < skip:
                        continue
                    share: RowShare | None = None
                    weight = 1.0
                    if world.parallel:
                        share = rows_of(len(index), world.rank, world.world_size)
                        index = index[share.start : share.stop]
                        weight = share.rows * world.world_size / share.total
                    with row_share(share):
                        x = to_model_input(
                            train_data.images.index_select(0, index),
                            binarize=cfg.data.binarize,
                            dequantize=cfg.data.dequantize,
                            generator=noise_gen,
                        ).to(device, non_blocking=True)
                        result = train_step(
                            model,
                            optimizer,
                            x,
                            cfg,
                            kl_scale=kl_weight(cfg.objective, step, total_steps),
                            scheduler=scheduler,
                            forward=forward,
                            loss_weight=weight,
                        )
                    step += 1
                    if result.finite:
                        if ema is not None:
                            update_ema(ema, model)
                        health.bad_in_a_row = 0
                        totals.add(result.terms)
                        loss_sum += result.loss.detach().double() * x.shape[0]
                    else:
                        health.bad_in_a_row += 1
                        health.skipped += 1
                        if health.bad_in_a_row >= tc.max_bad_steps:
                            restore_after_bad_steps()
                    last_batch = i + 1 == steps_per_epoch
                    interrupted = distributed.any_process(stop.received is not None, device)
                    if interrupted and not last_batch:
                        save(epoch, i + 1, epoch_start, totals, loss_sum)
                        where = f"at step {step} (epoch {epoch + 1}, batch {i + 1})"
                        raise _interrupted(stop.received, where, run_dir, world)
                    if tc.checkpoint_every and step % tc.checkpoint_every == 0 and not last_batch:
                        save(epoch, i + 1, epoch_start, totals, loss_sum)
                    # Reading numbers back forces a sync; do it a few times per epoch only.
                    # Under DDP the bar shows rank 0's share (its rate times the processes).
                    if world.is_main and ((i + 1) % 20 == 0 or last_batch) and totals.seen:
                        means = totals.means()
                        rate = totals.seen * world.world_size / (time.perf_counter() - start)
                        progress.update(
                            task,
                            completed=i + 1,
                            stats=f"loss {loss_sum.item() / totals.seen:.2f}  "
                            f"{_progress_stats(means)}  {rate:,.0f} samples/s",
                        )
                skip = 0
                seconds = time.perf_counter() - start
                progress.remove_task(task)
                epoch_totals = totals.reduced()
                epoch_loss = distributed.all_reduce_sum_(loss_sum.clone())
                seen = max(epoch_totals.seen, 1)
                train_means = epoch_totals.means()
                val = validate(
                    evaluated, val_data, cfg, seed + EVAL_SEED_OFFSET, world, tc.val_iw_samples
                )
                last = {
                    "epoch": epoch + 1,
                    "step": step,
                    "train/loss": epoch_loss.item() / seen,
                    **{f"train/{k}": v for k, v in train_means.items()},
                    **{f"val/{k}": v for k, v in val.items()},
                    "kl_weight": kl_weight(cfg.objective, step, total_steps),
                    "lr": optimizer.param_groups[0]["lr"],
                    "samples_per_s": seen / seconds,
                    "epoch_seconds": seconds,
                    "skipped_steps": health.skipped - skipped_before,
                }
                if tc.early_stopping_patience:
                    _track_best(stopping, val, epoch + 1, tc.val_iw_samples > 0)
                    last["best_epoch"] = stopping["best_epoch"]
                    if world.is_main and stopping["best_epoch"] == epoch + 1:
                        ckpt.save_weights(run_dir, evaluated, ckpt.BEST_FILE)
                if log is not None:
                    log.write(last, step)
                    _save_pictures(evaluated, run_dir, epoch + 1, n_pics, seed + 3, x_fixed)
                save(epoch + 1, 0, shuffle_gen.get_state(), totals, loss_sum)
                console.print(
                    f"epoch {epoch + 1}/{tc.epochs}  train elbo "
                    f"{train_means.get('elbo', math.nan):.2f}  "
                    f"val elbo {val['elbo']:.2f} ({_progress_stats(val)})  "
                    f"{seen / seconds:,.0f} samples/s",
                    soft_wrap=True,
                )
                spent = distributed.rank0_float(time.perf_counter() - started, device)
                done = epoch + 1 - start_epoch
                next_end = spent + spent / done  # at the mean epoch time
                budget = 60 * tc.max_minutes if tc.max_minutes is not None else math.inf
                if scheduler is not None and tc.max_minutes is not None:
                    horizon = _budget_horizon(done, spent, start_epoch, budget, steps_per_epoch)
                    for schedule in scheduler.lr_lambdas:
                        schedule.horizon = min(total_steps, horizon)
                if next_end > budget and epoch + 1 < tc.epochs:
                    console.print(
                        f"stopping after epoch {epoch + 1}: another epoch would pass "
                        f"train.max_minutes = {tc.max_minutes:g} ({spent / 60:.1f} min so "
                        f"far); continue with: {resume_command(run_dir, world)}"
                    )
                    break
                if (
                    tc.early_stopping_patience
                    and stopping["since_best"] >= tc.early_stopping_patience
                    and epoch + 1 < tc.epochs
                ):
                    console.print(
                        f"stopping early: no better validation bound for "
                        f"{stopping['since_best']} epochs; the best, epoch "
                        f"{stopping['best_epoch']} ({stopping['best']:.2f}), is in "
                        f"{run_dir / ckpt.BEST_FILE}"
                    )
                    break
                interrupted = distributed.any_process(stop.received is not None, device)
                if interrupted and epoch + 1 < tc.epochs:
                    where = f"after epoch {epoch + 1} (step {step})"
                    raise _interrupted(stop.received, where, run_dir, world)
    except Exception as err:
        if world.parallel and distributed.is_collective_failure(err):
            first = _first_line(str(err))
            raise RunError(
                f"rank {world.rank}: lost contact with the other processes at step {step} "
                f"({first}); the last checkpoint in {run_dir} is kept: continue with "
                f"{resume_command(run_dir, world)}"
            ) from err
        raise
    finally:
        if log is not None:
            log.close()
    epochs_done = int(last.get("epoch", start_epoch))
    return TrainResult(run_dir=run_dir, epochs=epochs_done, steps=step, last=last)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:200] if lines else "no message"
