"""Where the mlp workload's training step goes: its bare products, its Adam update, the rest.

The speed issue's `mlp` target is 0.85 of the bare-product limit, which times only the
matrix products of a step. The optimizer's update is part of every step but not of that
limit, so this script times, interleaved over repeats on the mlp recipe (batch 128, fp32):

- ``products``: the step's forward and backward matrix products alone (bench/limits.py);
- ``adam``: the fused Adam update of the same parameters alone, gradients already in place;
- ``step``: vaekit's whole ``train_step`` on real batches.

It prints milliseconds per step and two ratios: products / step (what `make bench` reports
as vaekit / limit) and products / (products + adam), the most any step that also updates
its weights with Adam could reach. Run: ``python bench/step_budget.py``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import limits
import torch
from side_by_side import RecipeSteps

from vaekit.train.loop import train_step

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mlp_fashion_binarized.toml"
STEPS = 200
REPEATS = 5


def _adam_seconds(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> float:
    """Seconds per fused Adam update, with the gradients left by the last training step."""
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    bench = RecipeSteps(CONFIG)
    model, optimizer, cfg = bench.model, bench.optimizer, bench.cfg
    batch = cfg.train.batch_size
    ops = limits.layer_ops(model, batch, tuple(cfg.image_shape), backward=True)

    def step(m, o, x, c):
        return train_step(m, o, x, c, kl_scale=1.0)

    bench.seconds(step, 20)  # warm-up; leaves gradients for the Adam timing
    # Adam updates below move the weights but not the shapes or the cost of anything timed.
    times: dict[str, list[float]] = {"products": [], "adam": [], "step": []}
    for _ in range(REPEATS):
        times["products"].append(limits.time_ops(ops, torch.device("cpu"), 1.0))
        times["adam"].append(_adam_seconds(model, optimizer, STEPS))
        times["step"].append(bench.seconds(step, STEPS) / STEPS)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for name, values in times.items():
        ms = [v * 1e3 for v in values]
        print(f"{name:9s} {med[name]:6.2f} ms/step ({min(ms):.2f}-{max(ms):.2f})")
    per = [
        (p / s, p / (p + a))
        for p, a, s in zip(times["products"], times["adam"], times["step"], strict=True)
    ]
    achieved = [r[0] for r in per]
    ceiling = [r[1] for r in per]
    rest = med["step"] - med["products"] - med["adam"]
    print(f"rest (elementwise, autograd, Python) {rest:.2f} ms/step")
    print(
        f"products / step: {statistics.median(achieved):.3f} "
        f"({min(achieved):.3f}-{max(achieved):.3f})"
    )
    print(
        f"products / (products + adam): {statistics.median(ceiling):.3f} "
        f"({min(ceiling):.3f}-{max(ceiling):.3f})"
    )
    print(f"batch {batch}, {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
