"""Does bf16 training cost likelihood? `python bench/precision.py` (see --help), or
`make bench-precision`.

The speed issue's bf16 check: the `mlp` workload (configs/mlp_fashion_binarized.toml:
784-512-256-(2x32), Bernoulli, Adam 1e-3, batch 128) trained for 20 epochs with
`train.precision = "fp32"` and again with `"bf16"` (autocast; weights, optimizer and the
probability terms stay fp32), same seed, each a real `vaekit train` run; then each scored by
`vaekit evaluate --iw K --binarization dynamic --seed 0` on the same test images, in fp32.
The target: the bf16 test IW-NLL within 0.5 nats of the fp32 one. Training samples/s (median
over epochs) comes along, measured in the same run. Results go to
bench/results/<name>.json and a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import machine
import report
from ddp import data_settings, git_commit
from quality import protocol_evaluation, run_vaekit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "mlp_fashion_binarized.toml"
PRECISIONS = ("fp32", "bf16")
TARGET_NATS = 0.5


def train_and_score(precision: str, run: Path, args, sets: list[str], log) -> dict[str, Any]:
    """One contender: train at ``precision``, evaluate in fp32; its numbers."""
    overrides = [*sets, f"train.precision={precision}"]
    train = ["train", str(CONFIG), "--run-dir", str(run)]
    train_seconds = run_vaekit(*train, *[a for s in overrides for a in ("--set", s)], log=log)
    evaluation = protocol_evaluation(run, args.iw, args.test_limit, "cpu")
    eval_seconds = run_vaekit(*evaluation, log=log)
    result = json.loads((run / "eval.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "test_iw_nll": result["iw_nll"],
        "test_elbo": result["elbo"],
        "test_examples": result["examples"],
        "epochs": len(epochs),
        "samples_per_s": statistics.median(e["samples_per_s"] for e in epochs),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
    }


def verdict(runs: dict[str, dict[str, Any]], target: float = TARGET_NATS) -> dict[str, Any]:
    """bf16 minus fp32 test IW-NLL (positive: bf16 worse), the speed ratio, and whether the
    NLLs are within ``target`` nats of each other."""
    diff = runs["bf16"]["test_iw_nll"] - runs["fp32"]["test_iw_nll"]
    return {
        "nll_bf16_minus_fp32": diff,
        "speed_bf16_over_fp32": runs["bf16"]["samples_per_s"] / runs["fp32"]["samples_per_s"],
        "target_nats": target,
        "met": abs(diff) <= target,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iw", type=int, default=5000, help="importance samples K")
    parser.add_argument("--test-limit", type=int, default=2000, help="test images scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 epoch, K = 20")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="cpu-precision", help="results file name")
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.iw, args.test_limit = 1, 20, 200

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.time()
    sets = [*data_settings(args.quick), f"train.epochs={args.epochs}"]
    sets += [f"train.seed={args.seed}", "train.progress=false", "train.device=cpu"]
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="vaekit-precision-") as tmp:
        for precision in PRECISIONS:
            log(f"{precision}: {args.epochs} epochs of {CONFIG.name}, then IW K = {args.iw}")
            runs[precision] = train_and_score(precision, Path(tmp) / precision, args, sets, log)
    result: dict[str, Any] = {
        "kind": "precision",
        "name": args.name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine.facts("cpu"),
        **git_commit(),
        "quick": args.quick,
        "settings": {
            "config": str(CONFIG.relative_to(ROOT)),
            "epochs": args.epochs,
            "iw_k": args.iw,
            "test_limit": args.test_limit,
            "set": sets,
        },
        "runs": runs,
        **verdict(runs),
    }
    report.finish(result, started, Path(args.out), Path(args.markdown), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
