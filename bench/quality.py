"""Quality benchmark: train each recipe for a wall-clock budget, then the test NLL by the protocol.

The protocol (one, everywhere): dynamically binarized Fashion-MNIST for training; the test set
binarized once with a fixed seed (``vaekit evaluate --binarization dynamic --seed 0``); the
test NLL is the importance-weighted estimate with K = 5000 (``--iw 5000``), nats per image.
Each row (recipe, seed) is appended to ``bench/results/quality.json`` with the commit, the
machine and the budget, so the benchmark can run piecewise; ``BENCHMARKS.md`` is rewritten.

Run: ``make bench-quality RECIPES=fmnist-vae,fmnist-vamp MINUTES=60 SEEDS=0,1``.

``--peer pythae`` (``make bench-quality PEER=pythae``) trains pythae's model of the same kind
instead (``bench/quality_peer.py`` in pythae's own virtual environment): same nets, optimizer,
batch, budget, training binarization and test images; its rows carry ``"peer": "pythae"``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import report
from machine import facts
from peers import ensure_pythae

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# What the benchmark itself writes: changes there are results, not changes to the code.
OUTPUTS_EXCLUDED = (":!BENCHMARKS.md", ":!bench/results")
RECIPES = (
    "fmnist-vae",
    "fmnist-iwae",
    "fmnist-vamp",
    "fmnist-iaf",
    "fmnist-hvae",
    "fmnist-vamp-iwae",
    "fmnist-hvae-iwae",
)
# pythae's model of the same kind as each recipe (it has no ladder VAE to set beside hvae).
PYTHAE_KINDS = {"fmnist-vae": "vae", "fmnist-iwae": "iwae", "fmnist-vamp": "vamp",
                "fmnist-iaf": "iaf"}  # fmt: skip

# Test NLL in nats on dynamically binarized Fashion-MNIST, K = 5000, from the table of
# Norouzi, Fleet & Norouzi (2020), "Exemplar VAE", cited beside vaekit's numbers.
PUBLISHED = {
    "VAE, N(0, I) prior": 228.70,
    "VampPrior": 227.35,
    "convolutional hierarchical VAE": 225.38,
    "Exemplar VAE with a PixelSNAIL decoder": 223.26,
}


def _git(*args: str) -> str:
    """git's answer, or "" where there is no git or no repository (a copied tree)."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError:
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def run_vaekit(*args: str, log) -> float:
    """Run a vaekit command (its progress goes to our stderr); returns its wall seconds."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "vaekit", *args], cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"vaekit {' '.join(args)} exited with {result.returncode}")
    seconds = time.perf_counter() - start
    log(f"  vaekit {args[0]}: {seconds:.0f} s")
    return seconds


def protocol_evaluation(run: Path, iw: int, limit: int | None, device: str) -> list[str]:
    """The `vaekit evaluate` arguments of the protocol: K-sample IW-NLL on the test set
    binarized once with seed 0, no diagnostics; ``limit`` scores only the first images."""
    args = ["evaluate", str(run), "--iw", str(iw), "--binarization", "dynamic", "--seed", "0"]
    args += ["--no-diagnostics", "--device", device]
    return args + (["--limit", str(limit)] if limit else [])


def _provenance(args) -> dict[str, Any]:
    """Where a row came from: commit (and whether the tree was dirty), date, machine, budget."""
    commit = _git("rev-parse", "--short=12", "HEAD")
    return {
        "commit": commit or args.commit or "unknown",
        # The bench's own outputs, rewritten after every row, do not make the code dirty.
        "dirty": bool(
            _git("status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUTS_EXCLUDED)
        )
        if commit
        else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": facts(args.device),
        # An epoch budget (--epochs) trains that many epochs whatever they take: it repeats a
        # minutes row's epochs on a machine of another speed. The row keeps both apart.
        "budget_minutes": None if args.epochs else args.minutes,
        "budget_epochs": args.epochs,
    }


def run_recipe(recipe: str, seed: int, args, log) -> dict[str, Any]:
    """Train one recipe for the budget, evaluate it by the protocol; the result row."""
    provenance = _provenance(args)  # read before the run: the code it trains is this commit's
    run = Path(args.runs) / f"{recipe}-s{seed}-{provenance['commit']}-{int(time.time())}"
    config = ROOT / "configs" / f"{recipe}.toml"
    budget = f"train.epochs={args.epochs}" if args.epochs else f"train.max_minutes={args.minutes}"
    settings = [
        "--set", budget,
        "--set", f"train.seed={seed}",
        "--set", "train.progress=false",
        "--set", f"train.device={args.device}",
    ]  # fmt: skip
    train_seconds = run_vaekit("train", str(config), "--run-dir", str(run), *settings, log=log)
    eval_seconds = run_vaekit(
        *protocol_evaluation(run, args.iw, args.test_limit, args.device), log=log
    )
    result = json.loads((run / "eval.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "recipe": recipe,
        "seed": seed,
        **provenance,
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


def peer_data(path: Path, log) -> Path:
    """The protocol's images for the peer, as vaekit sees them, in one .npz (made once).

    ``train``: the training split's grey uint8 images (the peer binarizes them afresh each
    epoch); ``test``: the test split binarized exactly as ``vaekit evaluate --binarization
    dynamic --seed 0`` binarizes it, as uint8 0/1.
    """
    if path.is_file():
        return path
    import numpy as np
    import torch

    from vaekit import load_config, load_dataset
    from vaekit.diagnostics import seeded_model_inputs

    config = load_config(ROOT / "configs" / "fmnist-vae.toml")
    train = load_dataset(config.data, "train")
    test = load_dataset(config.data, "test")
    batches = seeded_model_inputs(test, binarize="dynamic", dequantize=False, seed=0,
                                  batch_size=1000)  # fmt: skip
    binarized = torch.cat(list(batches)).to(torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, train=train.images.numpy(), test=binarized.numpy())
    log(f"  peer data: {len(train.images):,} training and {len(binarized):,} test images")
    return path


def peer_spec(recipe: str, seed: int, args, n_train: int) -> dict[str, Any]:
    """What pythae's model of ``recipe``'s kind gets from the recipe's config."""
    from vaekit import load_config

    config = load_config(ROOT / "configs" / f"{recipe}.toml")
    model, objective, train = config.model, config.objective, config.train
    steps_per_epoch = math.ceil(n_train / train.batch_size)
    return {
        "kind": PYTHAE_KINDS[recipe],
        "seed": seed,
        "minutes": args.minutes,
        "lr": train.lr,
        "batch": train.batch_size,
        "latent": model.latent_dim,
        "iw_samples": objective.iw_samples,
        "components": model.prior_components,
        # pythae's VampPrior warms its KL up over epochs; the recipe's steps, in epochs.
        "warmup_epochs": math.ceil(objective.warmup_steps / steps_per_epoch),
        "iaf_steps": model.iaf_steps,
        "iaf_hidden": list(model.iaf_hidden),
        "iw": args.iw,
        "eval_seed": 0,
        "test_limit": args.test_limit,
    }


def run_peer(recipe: str, seed: int, args, log) -> dict[str, Any]:
    """pythae's model of the recipe's kind, trained and scored by the protocol; the row."""
    import numpy as np

    python, why = ensure_pythae(log)
    if python is None:
        raise RuntimeError(f"pythae is not available: {why}")
    data = peer_data(HERE / ".cache" / "quality-peer-data.npz", log)
    with np.load(data) as npz:
        n_train = len(npz["train"])
    spec = peer_spec(recipe, seed, args, n_train)
    provenance = _provenance(args)
    run = Path(args.runs) / f"pythae-{recipe}-s{seed}-{int(time.time())}"
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps(spec, indent=1))
    cmd = [str(python), str(HERE / "quality_peer.py"), str(run / "spec.json"), str(data),
           str(run / "result.json")]  # fmt: skip
    with open(run / "log.txt", "w") as out:
        done = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = (run / "log.txt").read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"pythae {spec['kind']} exited with {done.returncode}: {tail}")
    result = json.loads((run / "result.json").read_text())
    log(f"  pythae {spec['kind']}: {result['epochs']} epochs, {result['eval_seconds']:.0f} s eval")
    return {
        "recipe": recipe,
        "peer": "pythae",
        "peer_model": spec["kind"],
        "seed": seed,
        **provenance,
        "best_epoch": None,
        **result,
        "run_dir": str(run),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget per run")
    parser.add_argument(
        "--epochs",
        type=int,
        help="train exactly this many epochs instead of the minutes budget (to repeat a "
        "minutes row's epochs on a machine of another speed)",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--iw", type=int, default=5000, help="importance samples (protocol: 5000)")
    parser.add_argument("--test-limit", type=int, help="evaluate only N test images (not protocol)")
    parser.add_argument("--peer", choices=["pythae"], help="train this peer's model instead")
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="train and evaluate vaekit's recipes here (default cpu, the 2-core protocol); "
        "GPU rows are kept apart from the CPU comparison with pythae",
    )
    parser.add_argument(
        "--commit", help="the commit to record where the tree is a copy without git (a GPU box)"
    )
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
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if args.peer and args.epochs:
        parser.error("--epochs applies to vaekit's recipes; pythae's rows use the minutes budget")
    if args.peer and args.device != "cpu":
        parser.error("--peer pythae runs on the CPU only, beside vaekit's CPU rows")
    if args.peer and any(r not in PYTHAE_KINDS for r in recipes):
        parser.error(f"--peer pythae has models for {', '.join(PYTHAE_KINDS)} only")
    path = Path(args.out) / "quality.json"
    result = json.loads(path.read_text()) if path.is_file() else {}
    result.update(name="quality", kind="quality", published=PUBLISHED)
    rows = result.setdefault("rows", [])
    started = time.time()
    for recipe in recipes:
        for seed in (int(s) for s in args.seeds.split(",")):
            who = f"pythae's {PYTHAE_KINDS[recipe]} for " if args.peer else ""
            budget = f"{args.epochs} epochs" if args.epochs else f"{args.minutes:g} minutes"
            log(f"{who}{recipe}, seed {seed}, {budget} ...")
            row = (run_peer if args.peer else run_recipe)(recipe, seed, args, log)
            log(f"  test NLL {row['test_nll']:.2f} nats (K = {row['iw_k']})")
            rows.append(row)
            report.save(result, Path(args.out), Path(args.markdown))  # after every row
    report.finish(result, started, Path(args.out), Path(args.markdown), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
