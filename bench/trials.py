"""Side-by-side speed trials: torch.compile (mlp, conv), channels_last (conv), threads (mlp),
and torch.compile of a recipe's whole ELBO (``compile-elbo``: forward, likelihood and prior).

Each contender trains through bench/workloads.Trainer (vaekit's own step); repeats interleave
the contenders; medians and per-repeat ratios are printed.
Run: ``python bench/trials.py [compile-mlp] [compile-conv] [channels-last] [threads]
[compile-elbo]``.
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from workloads import CONFIG, CONFIGS, Trainer


def rate(tr, steps):
    return tr.timed(steps)


def compare(name, make_a, make_b, steps, repeats=3, warm=5):
    a, b = make_a(), make_b()
    a.run(warm), b.run(warm)
    ra, rb = [], []
    for _ in range(repeats):
        ra.append(a.timed(steps))
        rb.append(b.timed(steps))
    ratios = [y / x for x, y in zip(ra, rb, strict=True)]
    print(
        f"{name}: base {statistics.median(ra):,.0f} ({min(ra):,.0f}-{max(ra):,.0f})  "
        f"trial {statistics.median(rb):,.0f} ({min(rb):,.0f}-{max(rb):,.0f})  "
        f"trial/base {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})",
        flush=True,
    )


def mlp():
    return Trainer(CONFIG, "mlp", "fp32", "cpu", batch=128, latent=32)


def conv():
    return Trainer(CONFIG, "conv", "fp32", "cpu", batch=128, latent=16)


def compiled(make):
    def build():
        tr = make()
        start = time.perf_counter()
        tr.model.encoder = torch.compile(tr.model.encoder)
        tr.model.decoder = torch.compile(tr.model.decoder)
        tr.run(3)
        print(f"  (compile + 3 steps: {time.perf_counter() - start:.1f} s)", flush=True)
        return tr

    return build


def channels_last():
    tr = conv()
    tr.model.to(memory_format=torch.channels_last)
    real = tr._batches

    def cl():
        for xb in real:
            yield xb.contiguous(memory_format=torch.channels_last)

    tr._batches = cl()
    return tr


def compile_elbo(config: str, steps: int) -> None:
    """vaekit's train_step with the recipe's ELBO eager, then through torch.compile, each on
    its own copy of the model (same seed), interleaved; training samples/s."""
    from side_by_side import RecipeSteps
    from side_by_side import compare as compare_pair

    from vaekit.train.loop import train_step

    eager, comp = RecipeSteps(CONFIGS / config), RecipeSteps(CONFIGS / config)
    elbo = torch.compile(comp.model.elbo)

    def plain(m, o, x, c):
        return train_step(m, o, x, c, kl_scale=0.5)

    def compiled_step(m, o, x, c):
        return train_step(m, o, x, c, kl_scale=0.5, forward=elbo)

    start = time.perf_counter()
    comp.seconds(compiled_step, 3)
    print(f"{config}: compile + 3 steps {time.perf_counter() - start:.1f} s", flush=True)
    eager.seconds(plain, 10)
    comp.seconds(compiled_step, 10)
    rows = steps * eager.cfg.train.batch_size
    compare_pair(
        ("eager", lambda: rows / eager.seconds(plain, steps)),
        ("compiled ELBO", lambda: rows / comp.seconds(compiled_step, steps)),
        "samples/s",
        repeats=3,
    )


which = sys.argv[1:] or ["compile-mlp", "compile-conv", "channels-last", "threads"]
if "compile-mlp" in which:
    compare("mlp torch.compile(encoder, decoder)", mlp, compiled(mlp), 300)
if "compile-conv" in which:
    compare("conv torch.compile(encoder, decoder)", conv, compiled(conv), 40)
if "channels-last" in which:
    compare("conv channels_last", conv, channels_last, 40)
if "compile-elbo" in which:
    compile_elbo("mlp_fashion_binarized.toml", 300)
    compile_elbo("fmnist-vamp-iwae.toml", 100)
if "threads" in which:
    torch.set_num_threads(2)
    a = mlp()
    a.run(10)
    r2 = [a.timed(300) for _ in range(3)]
    torch.set_num_threads(1)
    r1 = [a.timed(300) for _ in range(3)]
    torch.set_num_threads(2)
    print(
        f"mlp threads: 2 -> {statistics.median(r2):,.0f}, "
        f"1 -> {statistics.median(r1):,.0f} samples/s",
        flush=True,
    )
