"""Quality benchmark: train each recipe for a wall-clock budget, then the test NLL by the protocol.

The protocol (one, everywhere): dynamically binarized Fashion-MNIST for training; the test set
binarized once with a fixed seed (``vaekit evaluate --binarization dynamic --seed 0``); the
test NLL is the importance-weighted estimate with K = 5000 (``--iw 5000``), nats per image.
Each row (recipe, seed) is appended to ``bench/results/quality.json`` with the commit, the
machine and the budget, so the benchmark can run piecewise; ``BENCHMARKS.md`` is rewritten.

Run: ``make bench-quality RECIPES=fmnist-vae,fmnist-vamp MINUTES=60 SEEDS=0,1``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import report
from machine import facts

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RECIPES = ("fmnist-vae", "fmnist-iwae", "fmnist-vamp", "fmnist-iaf", "fmnist-hvae")

# Test NLL in nats on dynamically binarized Fashion-MNIST, K = 5000, from the table of
# Norouzi, Fleet & Norouzi (2020), "Exemplar VAE", cited beside vaekit's numbers.
PUBLISHED = {
    "VAE, N(0, I) prior": 228.70,
    "VampPrior": 227.35,
    "convolutional hierarchical VAE": 225.38,
    "Exemplar VAE with a PixelSNAIL decoder": 223.26,
}


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip()


def _vaekit(*args: str, log) -> float:
    """Run a vaekit command (its progress goes to our stderr); returns its wall seconds."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"vaekit {' '.join(args)} exited with {result.returncode}")
    seconds = time.perf_counter() - start
    log(f"  vaekit {args[0]}: {seconds:.0f} s")
    return seconds


def run_recipe(recipe: str, seed: int, args, log) -> dict[str, Any]:
    """Train one recipe for the budget, evaluate it by the protocol; the result row."""
    commit = _git("rev-parse", "--short=12", "HEAD")
    run = Path(args.runs) / f"{recipe}-s{seed}-{commit}-{int(time.time())}"
    config = ROOT / "configs" / f"{recipe}.toml"
    settings = [
        "--set", f"train.max_minutes={args.minutes}",
        "--set", f"train.seed={seed}",
        "--set", "train.progress=false",
    ]  # fmt: skip
    train_seconds = _vaekit("train", str(config), "--run-dir", str(run), *settings, log=log)
    evaluate = ["evaluate", str(run), "--iw", str(args.iw), "--binarization", "dynamic"]
    evaluate += ["--seed", "0", "--no-diagnostics"]
    if args.test_limit:
        evaluate += ["--limit", str(args.test_limit)]
    eval_seconds = _vaekit(*evaluate, log=log)
    result = json.loads((run / "eval.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "recipe": recipe,
        "seed": seed,
        "commit": commit,
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": facts("cpu"),
        "budget_minutes": args.minutes,
        "train_seconds": train_seconds,
        "epochs": len(epochs),
        "best_epoch": epochs[-1].get("best_epoch"),
        "test_nll": result["iw_nll"],
        "test_elbo": result["elbo"],
        "iw_k": result["iw_k"],
        "test_examples": result["examples"],
        "eval_seconds": eval_seconds,
        "run_dir": str(run),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget per run")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--iw", type=int, default=5000, help="importance samples (protocol: 5000)")
    parser.add_argument("--test-limit", type=int, help="evaluate only N test images (not protocol)")
    parser.add_argument("--runs", default=str(HERE / ".quality-runs"))
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    recipes = [r for r in args.recipes.split(",") if r]
    unknown = [r for r in recipes if not (ROOT / "configs" / f"{r}.toml").is_file()]
    if unknown:
        parser.error(f"no config for {', '.join(unknown)} under configs/ (known: {RECIPES})")
    path = Path(args.out) / "quality.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result.update(name="quality", kind="quality", published=PUBLISHED)
    rows = result.setdefault("rows", [])
    started = time.time()
    for recipe in recipes:
        for seed in (int(s) for s in args.seeds.split(",")):
            log(f"{recipe}, seed {seed}, {args.minutes:g} minutes ...")
            row = run_recipe(recipe, seed, args, log)
            log(f"  test NLL {row['test_nll']:.2f} nats (K = {row['iw_k']})")
            rows.append(row)
            report.save(result, Path(args.out), Path(args.markdown))  # after every row
    report.finish(result, started, Path(args.out), Path(args.markdown), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
