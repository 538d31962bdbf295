"""Two variants of one measurement, interleaved over repeats: medians, spreads and the ratio.

Interleaving puts both variants under the same load of a shared, noisy machine; the ratio is
taken per repeat, so a slow stretch of the machine cancels out of it.
"""

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vaekit.config import Config, load_config
from vaekit.data import load_dataset, to_model_input
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import make_optimizer, resolve_config

Step = Callable[[torch.nn.Module, torch.optim.Optimizer, torch.Tensor, Config], Any]


class RecipeSteps:
    """A recipe's model and optimizer, stepped on real training batches (seeded, dynamic
    binarization), for timing variants of one training step against each other."""

    def __init__(self, config: Path | str) -> None:
        cfg = load_config(config)
        self.data = load_dataset(cfg.data, "train")
        self.cfg = resolve_config(cfg, self.data)
        torch.manual_seed(0)
        self.model = ckpt.build_model(self.cfg)
        self.optimizer = make_optimizer(self.model, self.cfg)
        self.generator = torch.Generator().manual_seed(0)

    def seconds(self, step: Step, steps: int) -> float:
        """Wall seconds of ``steps`` calls of ``step(model, optimizer, x, cfg)``."""
        batch = self.cfg.train.batch_size
        idx = torch.randint(0, len(self.data), (steps, batch), generator=self.generator)
        start = time.perf_counter()
        for i in range(steps):
            xb = self.data.images.index_select(0, idx[i])
            x = to_model_input(xb, binarize="dynamic", dequantize=False, generator=self.generator)
            step(self.model, self.optimizer, x, self.cfg)
        return time.perf_counter() - start


def compare(
    first: tuple[str, Callable[[], float]],
    second: tuple[str, Callable[[], float]],
    unit: str,
    repeats: int = 5,
) -> list[float]:
    """Call each measurement ``repeats`` times, alternately; print both and second / first.

    Returns the per-repeat ratios second / first.
    """
    (name_a, measure_a), (name_b, measure_b) = first, second
    a, b = [], []
    for _ in range(repeats):
        a.append(measure_a())
        b.append(measure_b())
    for name, values in ((name_a, a), (name_b, b)):
        spread = f"{min(values):,.1f}-{max(values):,.1f}"
        print(f"{name}: {statistics.median(values):,.1f} {unit} ({spread})")
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(
        f"{name_b} / {name_a}: {statistics.median(ratios):.3f} "
        f"({min(ratios):.3f}-{max(ratios):.3f})"
    )
    return ratios
