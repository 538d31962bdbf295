"""Cost of a mixture prior's per-latent KL split in a training step.

Side by side on a recipe with a mixture prior (default configs/fmnist-vamp.toml): vaekit's
``train_step``, which asks for the chain-rule split of log p(z) only when free bits read it,
against the same step forced to compute it (as every step did before). Interleaved over 5
repeats of 100 steps on real Fashion-MNIST batches. Run: ``python bench/mixture_step.py
[CONFIG]``.
"""

import sys
from pathlib import Path

from side_by_side import RecipeSteps, compare

from vaekit.train.loop import train_step

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "fmnist-vamp.toml"


def main() -> None:
    bench = RecipeSteps(sys.argv[1] if len(sys.argv) > 1 else CONFIG)

    def now(model, optimizer, x, cfg):
        train_step(model, optimizer, x, cfg, kl_scale=1.0)

    def before(model, optimizer, x, cfg):  # the split at every step
        exact = lambda x, objective, per_dim: model.elbo(x, objective, True)  # noqa: E731
        train_step(model, optimizer, x, cfg, kl_scale=1.0, forward=exact)

    def ms_per_step(step, steps=100):
        return 1e3 * bench.seconds(step, steps) / steps

    ms_per_step(now, 10)
    ms_per_step(before, 10)
    compare(
        ("split only for free bits", lambda: ms_per_step(now)),
        ("split every step", lambda: ms_per_step(before)),
        unit="ms/step",
    )


if __name__ == "__main__":
    main()
