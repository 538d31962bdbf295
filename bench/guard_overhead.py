"""Cost of the NaN/Inf guard in ``train_step`` (a gradient norm and one read-back per step).

Side by side on the mlp recipe: vaekit's ``train_step`` against the same step without the
check, interleaved over 5 repeats of 300 steps. Run: ``python bench/guard_overhead.py``.
"""

from pathlib import Path

from side_by_side import RecipeSteps, compare

from vaekit.objectives import training_loss
from vaekit.train.loop import autocast, train_step

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
    bench = RecipeSteps(CONFIG)

    def rate(step, steps=300):
        seconds = bench.seconds(lambda m, o, x, c: step(m, o, x, c, kl_scale=1.0), steps)
        return steps * bench.cfg.train.batch_size / seconds

    rate(train_step, 30)
    rate(unguarded, 30)
    compare(
        ("unguarded", lambda: rate(unguarded)),
        ("guarded", lambda: rate(train_step)),
        unit="samples/s",
    )


if __name__ == "__main__":
    main()
