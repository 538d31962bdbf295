"""vaekit with and without ``vaekit.allocator.reuse_freed_memory``, side by side.

The setting is process-wide and cannot be undone, so each contender runs in a fresh process
(bench/run.py's workers, the same ones ``make bench`` runs), and the two take turns repeat by
repeat. For each workload it prints vaekit's speed, its bare-product limit measured in the same
process, the ratio of the two, the minor page faults per step (or per image), and the speed
ratio reuse / glibc defaults per repeat. Run: ``python bench/reuse_memory.py [--repeats 3]
[--workloads conv,mlp,iw-eval] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import IW, IW_QUICK, QUICK_STEPS, TRAIN, spawn


def _spec(name: str, quick: bool) -> dict:
    if name == "iw-eval":
        cfg = dict(IW_QUICK if quick else {**IW, "images": 400})
        return {**cfg, "task": "vaekit-iw", "device": "cpu", "precision": "fp32",
                "blocks": 1, "limit_seconds": 1.0}  # fmt: skip
    cfg = dict(TRAIN[name])
    if quick:
        cfg["steps"], cfg["warmup"] = QUICK_STEPS[name]
    return {**cfg, "task": "vaekit-train", "batch": 128, "precision": "fp32", "device": "cpu",
            "inner": 1, "limit": True, "limit_seconds": 1.0}  # fmt: skip


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}-{max(values):,.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="conv,mlp,iw-eval")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print("| workload | malloc | speed | limit | / limit | minor faults | reuse / defaults |")
    print("|---|---|---|---|---|---|---|")
    for name in args.workloads.split(","):
        spec = _spec(name, args.quick)
        iw = name == "iw-eval"
        speed_key = "images_per_s" if iw else "samples_per_s"
        limit_key = "limit_images_per_s" if iw else "limit_samples_per_s"
        fault_key = "minor_faults_per_image" if iw else "minor_faults_per_step"
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeats):
            for reuse in (False, True):
                result = spawn(sys.executable, {**spec, "reuse_memory": reuse}, 3600)
                if "error" in result:
                    raise SystemExit(f"{name} (reuse_memory={reuse}): {result['error']}")
                runs[reuse].append(result)
        speed = {r: [statistics.median(x[speed_key]) for x in runs[r]] for r in runs}
        limit = {r: [statistics.median(x[limit_key]) for x in runs[r]] for r in runs}
        ratios = [b / a for a, b in zip(speed[False], speed[True], strict=True)]
        for reuse in (False, True):
            of_limit = [s / lim for s, lim in zip(speed[reuse], limit[reuse], strict=True)]
            faults = statistics.median(x[fault_key] for x in runs[reuse])
            label = "reuse_freed_memory" if reuse else "glibc defaults"
            last = _fmt(ratios) if reuse else ""
            print(
                f"| `{name}` | {label} | {_fmt(speed[reuse])} | {_fmt(limit[reuse])} | "
                f"{statistics.median(of_limit):.2f} ({min(of_limit):.2f}-{max(of_limit):.2f}) | "
                f"{faults:,.0f} | {last} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
