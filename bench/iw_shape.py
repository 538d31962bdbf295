"""How the shape of one importance-sampling step sets the speed of IW evaluation on a CPU.

``vaekit evaluate`` decodes ``chunk_size`` samples of ``batch`` images per step. The decoder's
matrix products run at about the same rate for a few hundred rows as for thousands, but the
likelihood's elementwise passes over the [rows, 784] logits (softplus, products, sums) run
from cache only while those tensors fit in it; at thousands of rows each pass goes to main
memory. This script times the iw-eval workload's estimator (``iw_log_likelihood``, K = 500 on
the mlp workload's model, fp32) at several images-per-step, interleaved over repeats, and the
bare decoder products at each shape, so that the speed and the ratio to the limit can be read
side by side. Run: ``python bench/iw_shape.py [--k 500] [--images 160] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import limits
import torch
from workloads import CONFIG, Trainer

from vaekit.data import load_dataset
from vaekit.diagnostics import seeded_model_inputs
from vaekit.evaluate import decoder_bytes_per_sample, iw_batch_size
from vaekit.objectives import iw_log_likelihood


def images_per_s(model, inputs: list[torch.Tensor], k: int, chunk: int) -> float:
    """Images per second of the K-sample estimate over ``inputs`` (fixed noise)."""
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        for x in inputs:
            iw_log_likelihood(model, x, k, chunk_size=chunk, generator=generator)
    return sum(len(x) for x in inputs) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=100)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--batches", default="80,40,16,8,4,2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    trainer = Trainer(CONFIG, "mlp", "fp32", "cpu", batch=128, latent=32)
    trainer.run(200)  # a model past its first steps, as the iw-eval workload's
    model, cfg = trainer.model.eval(), trainer.cfg
    test = load_dataset(cfg.data, "test")
    test = test.subset(torch.arange(args.images))
    default = iw_batch_size(model, args.k, args.chunk, cfg.train.eval_batch_size)
    per_sample = decoder_bytes_per_sample(model)
    print(f"default images per step: {default} (decoder bytes per sample {per_sample:,})")
    sizes = [int(b) for b in args.batches.split(",")]
    inputs = {
        b: list(
            seeded_model_inputs(test, binarize="dynamic", dequantize=False, seed=0, batch_size=b)
        )
        for b in sizes
    }
    ops = {
        b: limits.layer_ops(model, args.chunk * b, (1, 28, 28), backward=False, modules="decoder")
        for b in sizes
    }
    rates: dict[int, list[float]] = {b: [] for b in sizes}
    limit: dict[int, list[float]] = {b: [] for b in sizes}
    for b in sizes:
        images_per_s(model, inputs[b][:1], min(args.k, 2 * args.chunk), args.chunk)  # warm-up
    for _ in range(args.repeats):
        for b in sizes:
            rates[b].append(images_per_s(model, inputs[b], args.k, args.chunk))
            t = limits.time_ops(ops[b], torch.device("cpu"), 0.5)
            limit[b].append(b / (t * math.ceil(args.k / args.chunk)))
    base = sizes[0]
    print(f"K = {args.k}, chunk {args.chunk}, {args.images} test images, {args.repeats} repeats")
    print("| images per step | rows | MiB per step | images/s | limit | / limit | / first |")
    print("|---|---|---|---|---|---|---|")
    for b in sizes:
        ratio = [r / lim for r, lim in zip(rates[b], limit[b], strict=True)]
        rel = [r / r0 for r, r0 in zip(rates[b], rates[base], strict=True)]
        mib = args.chunk * b * per_sample / 2**20
        print(
            f"| {b} | {args.chunk * b:,} | {mib:.1f} | {statistics.median(rates[b]):.1f} "
            f"({min(rates[b]):.1f}-{max(rates[b]):.1f}) | {statistics.median(limit[b]):.1f} | "
            f"{statistics.median(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}) | "
            f"{statistics.median(rel):.2f} ({min(rel):.2f}-{max(rel):.2f}) |"
        )


if __name__ == "__main__":
    main()
