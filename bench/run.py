"""Run vaekit's speed benchmark: `python bench/run.py` (see --help), or `make bench`.

Every measurement runs in a fresh subprocess (so ru_maxrss is that workload's peak), and the
contenders of a comparison take turns repeat by repeat, so that a busy machine slows all of
them alike. Results go to bench/results/<device>-<precision>.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache"
ALL_WORKLOADS = ("mlp", "conv", "iw-eval", "iw-eval-compiled", "vqvae")
# iw-eval-compiled is iw-eval through `vaekit evaluate --compile` (torch.compile).

# Full and --quick sizes: timed steps and warm-up steps. "config" is the recipe under configs/
# (default the mlp one); the vqvae warm-up covers its k-means codebook initialisation.
TRAIN = {
    "mlp": {"arch": "mlp", "latent": 32, "steps": 300, "warmup": 30},
    "conv": {"arch": "conv", "latent": 16, "steps": 40, "warmup": 5},
    "vqvae": {"config": "vqvae_fashion.toml", "arch": "resnet", "steps": 30, "warmup": 3},
}
QUICK_STEPS = {"mlp": (40, 10), "conv": (8, 2), "vqvae": (4, 2)}
# The issue asks a bare-product limit and the tutorial-loop and pythae peers for these only.
COMPARED = ("mlp", "conv")
NOT_COMPARED = "no bare-product limit or peer measured for this workload (not asked)"
IW = {"k": 5000, "images": 2000, "chunk": 100, "train_steps": 375}
IW_QUICK = {"k": 500, "images": 200, "chunk": 100, "train_steps": 40}
SCALING_BATCH = (32, 128, 512, 2048)
SCALING_LATENT = (2, 32, 128)
SCALING_K = (100, 1000, 5000)


def worker_main(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process (called in a subprocess)."""
    import numpy as np

    task = spec["task"]
    if task == "vaekit-train":
        import workloads

        return workloads.train_worker(spec)
    if task == "vaekit-iw":
        import workloads

        return workloads.iw_worker(spec)
    images = np.load(spec["images_path"])
    import peers

    if task == "plain":
        return peers.plain_worker(spec, images)
    if task == "pythae":
        return peers.pythae_worker(spec, images)
    raise ValueError(f"unknown task {task!r}")


def spawn(python: str | Path, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``spec`` in a fresh ``python`` process; its result, or {"error": why}."""
    cmd = [str(python), str(HERE / "run.py"), "--worker", json.dumps(spec)]
    path = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"error": (done.stderr.strip() or done.stdout.strip())[-800:]}


def summary(values: list[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def _collect(results: list[dict[str, Any]], key: str) -> list[float]:
    return [v for r in results if "error" not in r for v in r.get(key, [])]


def train_images_file() -> Path:
    """The training images the peers read (vaekit's train split, uint8), cached as .npy."""
    import numpy as np
    import workloads

    from vaekit.data import load_dataset

    cfg = workloads.load_config(workloads.CONFIG, "fp32", batch=128, latent=32)
    path = CACHE / f"train-{cfg.data.name}.npy"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        data = load_dataset(cfg.data, "train")
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, data.images.numpy())
        tmp.rename(path)
    return path


def bench_train(name: str, args, pythae_python, images_path, log) -> dict[str, Any]:
    """vaekit (with its limit), the tutorial loop and pythae, in turns, ``repeats`` times;
    vaekit alone for a workload outside COMPARED."""
    cfg = dict(TRAIN[name])
    if args.quick:
        cfg["steps"], cfg["warmup"] = QUICK_STEPS[name]
    compared = name in COMPARED
    base = {
        **cfg,
        "batch": 128,
        "precision": args.precision,
        "device": args.device,
        "inner": 1,
        "limit": compared,
    }
    if compared:
        base["limit_seconds"] = 0.5 if args.quick else 1.5
        base["images_path"] = str(images_path)
    runs: dict[str, list[dict[str, Any]]] = {"vaekit": [], "plain": [], "pythae": []}
    for r in range(args.repeats):
        runs["vaekit"].append(spawn(sys.executable, {**base, "task": "vaekit-train"}, 900))
        if compared and not args.no_peers:
            runs["plain"].append(spawn(sys.executable, {**base, "task": "plain"}, 900))
            if pythae_python is not None:
                # pythae has no bf16 on CPU (its amp is CUDA-only and off for "bce"): fp32.
                spec = {**base, "task": "pythae", "precision": "fp32"}
                runs["pythae"].append(spawn(pythae_python, spec, 900))
        log(f"  {name} repeat {r + 1}/{args.repeats}: " + _brief(runs))
    out: dict[str, Any] = {"config": base, "unit": "samples/s"}
    if not compared:
        out["note"] = NOT_COMPARED
    for who, results in runs.items():
        errors = [r["error"] for r in results if "error" in r]
        rates = _collect(results, "samples_per_s")
        entry: dict[str, Any] = {}
        if rates:
            entry["samples_per_s"] = summary(rates)
            rss = [r["peak_rss_mb"] for r in results if r.get("peak_rss_mb")]
            entry["peak_rss_mb"] = max(rss) if rss else None
        if errors:
            entry["errors"] = errors[:2]
        if who == "vaekit":
            limit = _collect(results, "limit_samples_per_s")
            if limit:
                entry["limit_samples_per_s"] = summary(limit)
            flops = [r["flops_per_sample"] for r in results if "flops_per_sample" in r]
            if flops:
                entry["flops_per_sample"] = flops[0]
            gpu = [r["peak_gpu_mb"] for r in results if "peak_gpu_mb" in r]
            if gpu:
                entry["peak_gpu_mb"] = max(gpu)
            data = [r["data"] for r in results if "data" in r]
            if data:
                entry["data"] = data[0]
        if who == "pythae":
            versions = [r["pythae_version"] for r in results if "pythae_version" in r]
            if versions:
                entry["version"] = versions[0]
        if entry:
            out[who] = entry
    # Ratios per repeat (each pair ran back to back), then their median.
    v = [r.get("samples_per_s", [None])[0] for r in runs["vaekit"]]
    for key, other in (
        ("limit", [r.get("limit_samples_per_s", [None])[0] for r in runs["vaekit"]]),
        ("plain", [r.get("samples_per_s", [None])[0] for r in runs["plain"]]),
        ("pythae", [r.get("samples_per_s", [None])[0] for r in runs["pythae"]]),
    ):
        ratios = [a / b for a, b in zip(v, other, strict=False) if a and b]
        if ratios:
            out[f"ratio_vs_{key}"] = summary(ratios)
    return out


def _brief(runs) -> str:
    parts = []
    for who, results in runs.items():
        if results:
            last = results[-1]
            rate = last.get("samples_per_s", [float("nan")])[0] if "error" not in last else None
            parts.append(f"{who} {rate:,.0f}/s" if rate else f"{who} error")
    return ", ".join(parts)


def bench_iw(args, log, *, compile: bool = False) -> dict[str, Any]:
    """IW-NLL images/s over the test images, in blocks alternating with its limit; with
    ``compile`` through torch.compile as ``vaekit evaluate --compile`` runs it."""
    cfg = dict(IW_QUICK if args.quick else IW)
    spec = {
        **cfg,
        "compile": compile,
        "task": "vaekit-iw",
        "device": args.device,
        "precision": args.precision,
        "blocks": max(args.repeats, 3),
        "limit_seconds": 0.5 if args.quick else 1.5,
    }
    result = spawn(sys.executable, spec, 3600)
    if "error" in result:
        log(f"  iw-eval error: {result['error']}")
        return {"config": spec, "errors": [result["error"]]}
    out = {"config": spec, "unit": "images/s", **result}
    out["images_per_s"] = summary(result["images_per_s"])
    if "limit_images_per_s" in result:
        out["limit_images_per_s"] = summary(result["limit_images_per_s"])
        ratios = [
            a / b for a, b in zip(result["images_per_s"], result["limit_images_per_s"], strict=True)
        ]
        out["ratio_vs_limit"] = summary(ratios)
    name = "iw-eval-compiled" if compile else "iw-eval"
    log(
        f"  {name}: {out['images_per_s']['median']:,.1f} images/s, "
        f"{result['seconds']:.1f} s for {result['images']} images"
    )
    return out


def bench_scaling(args, log) -> dict[str, Any]:
    """mlp samples/s over batch and latent sizes; iw-eval peak memory over K at fixed chunk."""
    steps, warm = QUICK_STEPS["mlp"] if args.quick else (100, 10)
    rows = []
    for batch, latent in [(b, 32) for b in SCALING_BATCH] + [
        (128, d) for d in SCALING_LATENT if d != 32
    ]:
        # Fewer steps at big batches keep each point near the same number of samples.
        n = max(5, steps * 128 // batch)
        spec = {
            "task": "vaekit-train",
            "arch": "mlp",
            "latent": latent,
            "batch": batch,
            "steps": n,
            "warmup": max(2, warm * 128 // batch),
            "precision": args.precision,
            "device": args.device,
            "inner": max(1, args.repeats),
            "limit": False,
        }
        res = spawn(sys.executable, spec, 900)
        row = {"batch": batch, "latent": latent}
        if "error" in res:
            row["error"] = res["error"]
        else:
            row["samples_per_s"] = summary(res["samples_per_s"])
            row["peak_rss_mb"] = res["peak_rss_mb"]
        rows.append(row)
        log(f"  scaling batch {batch} latent {latent}: {row.get('samples_per_s', row)}")
    mem = []
    images = 100 if args.quick else 200
    for k in SCALING_K if not args.quick else (100, 500):
        spec = {
            "task": "vaekit-iw",
            "k": k,
            "images": images,
            "chunk": 100,
            "train_steps": 0,
            "device": args.device,
            "precision": args.precision,
            "blocks": 1,
            "limit": False,
            "limit_seconds": 0,
        }
        res = spawn(sys.executable, spec, 1800)
        row = {"k": k, "images": images, "chunk": 100}
        if "error" in res:
            row["error"] = res["error"]
        else:
            row.update(
                peak_rss_mb=res["peak_rss_mb"],
                rss_before_iw_mb=res["rss_before_iw_mb"],
                seconds=res["seconds"],
                iw_batch=res["iw_batch"],
            )
            if "peak_gpu_mb" in res:
                row["peak_gpu_mb"] = res["peak_gpu_mb"]
        mem.append(row)
        log(f"  iw memory K={k}: {row}")
    return {"train": rows, "iw_memory": mem}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="mlp,conv,iw-eval,iw-eval-compiled,vqvae")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--no-peers", action="store_true", help="skip the plain and pythae peers")
    parser.add_argument("--scaling", action="store_true", help="add the batch/latent/K tables")
    parser.add_argument("--name", help="results file name (default <device>-<precision>)")
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker_main(json.loads(args.worker))
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    import machine
    import report

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(workloads) - set(ALL_WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    started = time.time()
    result: dict[str, Any] = {
        "name": args.name or f"{args.device}-{args.precision}",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine.facts(args.device),
        "precision": args.precision,
        "repeats": args.repeats,
        "quick": args.quick,
        "workloads": {},
    }
    pythae_python, pythae_note = None, "skipped (--no-peers)"
    images_path = None
    if any(w in COMPARED for w in workloads) and not args.no_peers:
        images_path = train_images_file()
        pythae_python, pythae_note = __import__("peers").ensure_pythae(log)
    result["pythae"] = pythae_note
    for name in workloads:
        log(f"{name} ...")
        if name in TRAIN:
            result["workloads"][name] = bench_train(name, args, pythae_python, images_path, log)
        else:
            result["workloads"][name] = bench_iw(args, log, compile=name == "iw-eval-compiled")
    if args.scaling:
        log("scaling ...")
        result["scaling"] = bench_scaling(args, log)
    report.finish(result, started, Path(args.out), Path(args.markdown), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
