"""vaekit's side of the benchmark: training steps and importance-weighted evaluation through
vaekit's own code (``vaekit.train.loop.train_step``, ``vaekit.objectives.iw_log_likelihood``).

The training timer runs the body of ``vaekit.train.loop.train`` on a recipe's config: uint8
batches from ``iterate_batches``, ``to_model_input`` (dynamic binarization for the mlp recipe,
plain scaling for the 8-bit VQ-VAE), ``train_step`` with the KL warm-up weight and the cosine
schedule, and the loop's ``TermTotals``, read back every 20 steps as the progress bar does.
Validation, pictures and checkpoints (once per epoch) are left out.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

import limits
import torch
from machine import minor_faults, peak_rss_mb

import nets

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
CONFIG = CONFIGS / "mlp_fashion_binarized.toml"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def load_config(path: Path, precision: str, *, batch: int | None = None, latent: int | None = None):
    """A recipe's config for the bench: sprites if Fashion-MNIST is not installed, the
    workload's precision, and its batch and latent sizes where given (else the recipe's)."""
    from vaekit.config import load_config as load

    cfg = load(path)
    if cfg.data.name == "fashion-mnist":
        from vaekit.data import catalog

        if catalog.locate("fashion-mnist") is None:
            cfg.data.name = "sprites"
    if latent is not None:
        cfg.model.latent_dim = latent
    if batch is not None:
        cfg.train.batch_size = batch
    cfg.train.precision = precision
    cfg.train.progress = False
    return cfg


def build(arch: str, cfg, image_shape, device: torch.device):
    """The workload's model: for arch "conv" the bench's conv nets in vaekit's VAE, else the
    recipe's own model (``build_model``: vaekit's MLP VAE, or its VQ-VAE)."""
    from vaekit.models import VAE
    from vaekit.probability.likelihoods import Bernoulli
    from vaekit.probability.priors import StandardNormal
    from vaekit.train import checkpoint as ckpt

    torch.manual_seed(0)
    if arch == "conv":
        enc, dec = nets.make_nets(arch, cfg.model.latent_dim)
        model = VAE(
            enc,
            dec,
            StandardNormal(cfg.model.latent_dim),
            Bernoulli(),
            cfg.model.latent_dim,
            tuple(image_shape),
        )
    else:
        model = ckpt.build_model(cfg)
    return model.to(device)


class Trainer:
    """The per-batch work of vaekit's training loop, runnable for any number of steps."""

    def __init__(
        self,
        config: Path,
        arch: str,
        precision: str,
        device: str,
        *,
        batch: int | None = None,
        latent: int | None = None,
        reuse_memory: bool = True,
    ) -> None:
        from vaekit.allocator import reuse_freed_memory
        from vaekit.data import load_dataset
        from vaekit.train.loop import make_optimizer, prepare_for_training, resolve_config

        if reuse_memory:
            reuse_freed_memory()  # as vaekit.train.loop.train does
        self.device = torch.device(device)
        cfg = load_config(config, precision, batch=batch, latent=latent)
        data = load_dataset(cfg.data, "train")
        self.cfg = resolve_config(cfg, data)
        self.images = data.images.to(self.device)
        self.model = prepare_for_training(build(arch, self.cfg, data.shape, self.device))
        self.model.train()
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.steps_per_epoch = math.ceil(len(data) / self.cfg.train.batch_size)
        self.total_steps = self.steps_per_epoch * self.cfg.train.epochs
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=self.total_steps
        )
        self.shuffle_gen = torch.Generator().manual_seed(1)
        self.noise_gen = torch.Generator(device=self.device).manual_seed(2)
        self.step = 0
        self._batches = self._forever()

    def _forever(self):
        from vaekit.data.pipeline import batch_indices

        n = len(self.images)
        while True:
            for index in batch_indices(
                n,
                self.cfg.train.batch_size,
                shuffle=True,
                generator=self.shuffle_gen,
                drop_last=False,
            ):
                # iterate_batches, with the index moved to the images' device (a GPU run).
                yield self.images.index_select(0, index.to(self.images.device))

    def run(self, steps: int) -> int:
        """``steps`` optimiser steps; returns the number of examples seen."""
        from vaekit.data import to_model_input
        from vaekit.objectives import kl_weight
        from vaekit.train.loop import TermTotals, train_step

        cfg = self.cfg
        totals = TermTotals()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, xb in enumerate(itertools.islice(self._batches, steps)):
            x = to_model_input(
                xb,
                binarize=cfg.data.binarize,
                dequantize=cfg.data.dequantize,
                generator=self.noise_gen,
            )
            result = train_step(
                self.model,
                self.optimizer,
                x,
                cfg,
                kl_scale=kl_weight(cfg.objective, self.step, self.total_steps),
                scheduler=self.scheduler,
            )
            self.step += 1
            totals.add(result.terms)
            loss_sum += result.loss.detach().double() * x.shape[0]
            if (i + 1) % 20 == 0:
                totals.means()
                loss_sum.item()
        totals.means()
        _sync(self.device)
        return totals.seen

    def timed(self, steps: int) -> float:
        """Training samples/s over ``steps`` steps."""
        _sync(self.device)
        start = time.perf_counter()
        seen = self.run(steps)
        return seen / (time.perf_counter() - start)


def train_limit_ops(trainer: Trainer, channels_last: bool = False):
    """The bare forward and backward products of the trainer's model at its batch size."""
    dtype = torch.bfloat16 if trainer.cfg.train.precision == "bf16" else torch.float32
    return limits.layer_ops(
        trainer.model,
        trainer.cfg.train.batch_size,
        tuple(trainer.cfg.image_shape),
        backward=True,
        dtype=dtype,
        channels_last=channels_last,
    )


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """vaekit training samples/s, and the bare-product limit measured in turn with it."""
    trainer = Trainer(
        CONFIGS / spec.get("config", CONFIG.name),
        spec["arch"],
        spec["precision"],
        spec["device"],
        batch=spec["batch"],
        latent=spec.get("latent"),
        reuse_memory=spec.get("reuse_memory", True),
    )
    trainer.run(spec["warmup"])
    rates, limit_rates = [], []
    # The limit is the bare products in whichever memory layout runs them faster (vaekit lays
    # conv weights out channels-last; a contiguous-input limit would then run mixed layouts).
    layouts = (False, True) if spec["arch"] != "mlp" else (False,)
    ops = [train_limit_ops(trainer, cl) for cl in layouts] if spec.get("limit", True) else None
    batch = spec["batch"]
    rss = None
    faults = 0
    for r in range(spec["inner"]):
        before = minor_faults()
        rates.append(trainer.timed(spec["steps"]))
        faults += minor_faults() - before
        if r == 0:
            rss = peak_rss_mb()  # before the limit's buffers exist: vaekit's own footprint
        if ops is not None:
            seconds = min(limits.time_ops(o, trainer.device, spec["limit_seconds"]) for o in ops)
            limit_rates.append(batch / seconds)
    out: dict[str, Any] = {
        "samples_per_s": rates,
        "peak_rss_mb": rss,
        "minor_faults_per_step": faults / (spec["inner"] * spec["steps"]),
        "data": trainer.cfg.data.name,
    }
    if ops is not None:
        out["limit_samples_per_s"] = limit_rates
        cfg = trainer.cfg
        out["flops_per_sample"] = (
            limits.flops(trainer.model, batch, tuple(cfg.image_shape), backward=True) / batch
        )
    if trainer.device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def iw_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """IW-NLL images/s over the test images in blocks, with the decoder-product limit between;
    ``spec["compile"]`` evaluates as ``vaekit evaluate --compile`` does."""
    from vaekit.allocator import reuse_freed_memory
    from vaekit.data import load_dataset
    from vaekit.diagnostics import seeded_model_inputs
    from vaekit.evaluate import iw_batch_size
    from vaekit.objectives import iw_log_likelihood

    if spec.get("reuse_memory", True):
        reuse_freed_memory()  # as vaekit.evaluate.evaluate_model does
    device = torch.device(spec["device"])
    k, chunk = spec["k"], spec["chunk"]
    precision = spec["precision"]
    if spec.get("train_steps", 0):
        trainer = Trainer(
            CONFIG,
            "mlp",
            "fp32",
            spec["device"],
            batch=128,
            latent=32,
            reuse_memory=spec.get("reuse_memory", True),
        )
        trainer.run(spec["train_steps"])
        model, cfg = trainer.model, trainer.cfg
        del trainer.images
    else:
        cfg = load_config(CONFIG, "fp32", batch=128, latent=32)
        from vaekit.data import load_dataset as _ld
        from vaekit.train.loop import resolve_config

        cfg = resolve_config(cfg, _ld(cfg.data, "val"))
        model = build("mlp", cfg, tuple(cfg.image_shape), device)
    model.eval()
    test = load_dataset(cfg.data, "test")
    test = test.subset(torch.arange(min(spec["images"], len(test))))
    batch = iw_batch_size(model, k, chunk, cfg.train.eval_batch_size)
    rss_before = peak_rss_mb()
    inputs = [
        x.to(device)
        for x in seeded_model_inputs(
            test, binarize="dynamic", dequantize=False, seed=0, batch_size=batch
        )
    ]
    blocks = max(1, min(spec["blocks"], len(inputs)))
    per_block = math.ceil(len(inputs) / blocks)
    generator = torch.Generator(device=device).manual_seed(0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    log_px, compile_seconds = None, None
    if spec.get("compile"):
        # `vaekit evaluate --compile`: the decoder and likelihood through torch.compile. One
        # chunk of the first batch, timed apart, pays for compiling before the timed blocks
        # (with its own generator, so the timed estimate draws the same noise as eager).
        from vaekit.evaluate import CompiledLogLikelihood

        log_px = CompiledLogLikelihood(model)
        start = time.perf_counter()
        with torch.no_grad():
            iw_log_likelihood(
                model,
                inputs[0],
                min(k, chunk),
                chunk_size=chunk,
                generator=torch.Generator(device=device).manual_seed(1),
                log_likelihood=log_px,
            )
        _sync(device)
        compile_seconds = time.perf_counter() - start
    ops = None
    if spec.get("limit", True):
        ops = limits.layer_ops(
            model,
            min(k, chunk) * batch,
            (1, 28, 28),
            backward=False,
            modules="decoder",
            dtype=dtype,
        )
    rates, limit_rates, values = [], [], []
    total_seconds = 0.0
    faults = 0
    with torch.no_grad():
        for b in range(blocks):
            part = inputs[b * per_block : (b + 1) * per_block]
            if not part:
                continue
            _sync(device)
            before = minor_faults()
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                for x in part:
                    values.append(
                        iw_log_likelihood(
                            model,
                            x,
                            k,
                            chunk_size=chunk,
                            generator=generator,
                            log_likelihood=log_px,
                        ).cpu()
                    )
            _sync(device)
            seconds = time.perf_counter() - start
            faults += minor_faults() - before
            total_seconds += seconds
            rates.append(sum(len(x) for x in part) / seconds)
            if ops is not None:
                t = limits.time_ops(ops, device, spec["limit_seconds"])
                # One chunk of `batch` images costs t; an image needs ceil(K / chunk) chunks.
                limit_rates.append(batch / (t * math.ceil(k / min(k, chunk))))
    out: dict[str, Any] = {
        "images_per_s": rates,
        "seconds": total_seconds,
        "images": sum(len(v) for v in values),
        "minor_faults_per_image": faults / max(1, sum(len(v) for v in values)),
        "k": k,
        "chunk": chunk,
        "iw_batch": batch,
        "iw_nll": -torch.cat(values).mean().item(),
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_iw_mb": rss_before,
        "compiled": log_px is not None and log_px.compiled is not None,
    }
    if compile_seconds is not None:
        out["compile_seconds"] = compile_seconds
    if ops is not None:
        out["limit_images_per_s"] = limit_rates
    if device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out
