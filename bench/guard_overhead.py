"""Cost of the NaN/Inf guard in ``train_step`` (a gradient norm and one read-back per step).

Side by side on the mlp recipe: vaekit's ``train_step`` against the same step without the
check, interleaved over 5 repeats of 300 steps. Run: ``python bench/guard_overhead.py``.
"""

import time
from pathlib import Path

import torch
from side_by_side import compare

from vaekit.config import load_config
from vaekit.data import load_dataset, to_model_input
from vaekit.objectives import training_loss
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import autocast, make_optimizer, resolve_config, train_step

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mlp_fashion_binarized.toml"


def unguarded(model, optimizer, x, cfg, kl_scale):
    """The step as it was before the guard."""
    with autocast(cfg.train.precision, x.device):
        terms = model.elbo(x, cfg.objective)
        objective = training_loss(terms, cfg.objective, kl_scale)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()


def main() -> None:
    cfg = load_config(CONFIG)
    data = load_dataset(cfg.data, "train")
    cfg = resolve_config(cfg, data)
    torch.manual_seed(0)
    model = ckpt.build_model(cfg)
    opt = make_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(0)

    def rate(step, steps=300):
        idx = torch.randint(0, len(data), (steps, 128), generator=gen)
        start = time.perf_counter()
        for i in range(steps):
            xb = data.images.index_select(0, idx[i])
            x = to_model_input(xb, binarize="dynamic", dequantize=False, generator=gen)
            step(model, opt, x, cfg, kl_scale=1.0)
        return steps * 128 / (time.perf_counter() - start)

    rate(train_step, 30)
    rate(unguarded, 30)
    compare(
        ("unguarded", lambda: rate(unguarded)),
        ("guarded", lambda: rate(train_step)),
        unit="samples/s",
    )


if __name__ == "__main__":
    main()
