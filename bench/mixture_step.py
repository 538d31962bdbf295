"""Cost of a mixture prior's per-latent KL split in a training step.

Side by side on a recipe with a mixture prior (default configs/fmnist-vamp.toml): vaekit's
``train_step``, which asks for the chain-rule split of log p(z) only when free bits read it,
against the same step forced to compute it (as every step did before). Interleaved over 5
repeats of 100 steps on real Fashion-MNIST batches. Run: ``python bench/mixture_step.py
[CONFIG]``.
"""

import sys
import time
from pathlib import Path

import torch
from side_by_side import compare

from vaekit.config import load_config
from vaekit.data import load_dataset, to_model_input
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import make_optimizer, resolve_config, train_step

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fmnist-vamp.toml"


def main() -> None:
    cfg = load_config(sys.argv[1] if len(sys.argv) > 1 else CONFIG)
    data = load_dataset(cfg.data, "train")
    cfg = resolve_config(cfg, data)
    torch.manual_seed(0)
    model = ckpt.build_model(cfg)
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)

    def exact_split(x, objective, per_dim):  # the step before: the split at every step
        return model.elbo(x, objective, True)

    def ms_per_step(forward, steps=100):
        idx = torch.randint(0, len(data), (steps, cfg.train.batch_size), generator=gen)
        start = time.perf_counter()
        for i in range(steps):
            xb = data.images.index_select(0, idx[i])
            x = to_model_input(xb, binarize="dynamic", dequantize=False, generator=gen)
            train_step(model, opt, x, cfg, kl_scale=1.0, forward=forward)
        return 1e3 * (time.perf_counter() - start) / steps

    ms_per_step(None, 10)
    ms_per_step(exact_split, 10)
    compare(
        ("split only for free bits", lambda: ms_per_step(None)),
        ("split every step", lambda: ms_per_step(exact_split)),
        unit="ms/step",
    )


if __name__ == "__main__":
    main()
