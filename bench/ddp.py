"""Data-parallel training speed: `python bench/ddp.py` (see --help), or `make bench-ddp`.

Training samples/s of the mlp recipe (configs/mlp_fashion_binarized.toml, batch 128) for
three contenders: one process with 2 torch threads, one process with 1 thread, and two
processes started by torchrun (gloo, OMP_NUM_THREADS=1, 1 thread each). Each is a real
`vaekit train` run in a fresh run directory; its samples/s is the one rank 0 writes to
metrics.jsonl (global training samples over the epoch's training time, validation left out).
The contenders take turns repeat by repeat (a, b, c, a, b, c, ...), so that a busy machine
slows all of them alike. Results go to bench/results/<name>.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import machine
import report
from run import summary

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "mlp_fashion_binarized.toml"
QUICK_LIMIT = 3000
TIMEOUT_S = 3600

# id, label, processes, torch threads per process.
CONTENDERS = (
    ("1proc-2threads", "1 process, 2 threads", 1, 2),
    ("1proc-1thread", "1 process, 1 thread", 1, 1),
    ("2proc-torchrun", "2 processes (torchrun, gloo), 1 thread each", 2, 1),
)
BASELINE = "1proc-2threads"
RSS_NOTE = (
    "ru_maxrss of the command's process tree (wait4): for one process, that process; for "
    "torchrun, the largest single process among torchrun and its two workers (one worker), "
    "not their sum: the two workers together hold about twice it"
)


def data_settings(quick: bool) -> list[str]:
    """`--set` overrides for the data: the recipe's Fashion-MNIST (sprites when it is not
    installed), and with ``quick`` only the first QUICK_LIMIT training images."""
    from vaekit.data import catalog

    sets = []
    if catalog.locate("fashion-mnist") is None:
        sets.append('data.name="sprites"')
        if quick:
            sets.append(f"data.sprites_count={QUICK_LIMIT}")
    if quick:
        sets.append(f"data.limit={QUICK_LIMIT}")
    return sets


def command(procs: int, threads: int, run_dir: Path, sets: list[str]) -> list[str]:
    """The `vaekit train` command line of one contender."""
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    overrides = [*sets, f"train.num_threads={threads}"]
    return [
        *launcher,
        "-m",
        "vaekit",
        "train",
        str(CONFIG),
        "--run-dir",
        str(run_dir),
        *[arg for s in overrides for arg in ("--set", s)],
    ]


def run_one(cmd: list[str], threads: int, run_dir: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` and wait for it with wait4 (its tree's peak RSS); samples/s from the
    metrics.jsonl it wrote, or {"error": why}."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    log = run_dir.parent / "output.txt"
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        timer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip()[-800:]
        return {"error": f"exit status {proc.returncode}: {tail}"}
    metrics = run_dir / "metrics.jsonl"
    epochs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {
        "samples_per_s": statistics.mean(e["samples_per_s"] for e in epochs),
        "epoch_seconds": sum(e["epoch_seconds"] for e in epochs),
        "wall_seconds": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def git_commit() -> dict[str, Any]:
    """HEAD's commit and whether the working tree has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(git("status", "--short"))}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per contender: its values per repeat and their summaries; ratios taken per repeat."""
    out: dict[str, Any] = {}
    for key, label, procs, threads in CONTENDERS:
        ok = [r for r in runs[key] if "error" not in r]
        entry: dict[str, Any] = {"label": label, "processes": procs, "threads": threads}
        for field in ("samples_per_s", "wall_seconds", "epoch_seconds"):
            entry[f"{field}_runs"] = [r[field] for r in ok]
            if ok:
                entry[field] = summary(entry[f"{field}_runs"])
        if ok:
            entry["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
        errors = [r["error"] for r in runs[key] if "error" in r]
        if errors:
            entry["errors"] = errors[:2]
        out[key] = entry
    ratios: dict[str, Any] = {}
    for name, top, bottom in (
        ("1proc-1thread/1proc-2threads", "1proc-1thread", BASELINE),
        ("2proc-torchrun/1proc-2threads", "2proc-torchrun", BASELINE),
        ("2proc-torchrun/1proc-1thread", "2proc-torchrun", "1proc-1thread"),
    ):
        per_repeat = [
            a["samples_per_s"] / b["samples_per_s"]
            for a, b in zip(runs[top], runs[bottom], strict=True)
            if "error" not in a and "error" not in b
        ]
        if per_repeat:
            ratios[name] = summary(per_repeat)
    return {"contenders": out, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run on {QUICK_LIMIT} training images"
    )
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--name", default="cpu-ddp", help="results file name")
    parser.add_argument("--markdown", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.time()
    sets = [*data_settings(args.quick), f"train.epochs={args.epochs}", "train.progress=false"]
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key, *_ in CONTENDERS}
    for r in range(args.repeats):
        for key, label, procs, threads in CONTENDERS:
            with tempfile.TemporaryDirectory(prefix="vaekit-ddp-") as tmp:
                run_dir = Path(tmp) / "run"
                cmd = command(procs, threads, run_dir, sets)
                res = run_one(cmd, threads, run_dir, TIMEOUT_S)
            runs[key].append(res)
            if "error" in res:
                log(f"  repeat {r + 1}/{args.repeats} {label}: {res['error']}")
            else:
                log(
                    f"  repeat {r + 1}/{args.repeats} {label}: {res['samples_per_s']:,.0f} "
                    f"samples/s, {res['wall_seconds']:.1f} s wall, "
                    f"{res['peak_rss_mb']:,.0f} MiB peak RSS"
                )
    result: dict[str, Any] = {
        "kind": "ddp",
        "name": args.name,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine.facts("cpu"),
        **git_commit(),
        "repeats": args.repeats,
        "quick": args.quick,
        "settings": {
            "config": str(CONFIG.relative_to(ROOT)),
            "batch": tomllib.loads(CONFIG.read_text())["train"]["batch_size"],
            "epochs": args.epochs,
            "set": sets,
            "commands": {
                key: [
                    f"OMP_NUM_THREADS={threads}",
                    *command(procs, threads, Path("RUN_DIR"), sets),
                ]
                for key, _, procs, threads in CONTENDERS
            },
        },
        "unit": "samples/s",
        "rss_note": RSS_NOTE,
        **summarise(runs),
    }
    report.finish(result, started, Path(args.out), Path(args.markdown), log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
