"""The speed section of BENCHMARKS.md (bench/report.py): the iw-eval rows, eager and compiled."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report


def _summary(median: float, low: float, high: float) -> dict:
    return {"median": median, "min": low, "max": high, "n": 3}


def _iw(rate: float, ratio: float, **extra) -> dict:
    return {
        "k": 5000,
        "images": 2000,
        "seconds": 2000 / rate,
        "peak_rss_mb": 600.0,
        "images_per_s": _summary(rate, rate - 1, rate + 1),
        "limit_images_per_s": _summary(rate / ratio, rate / ratio - 1, rate / ratio + 1),
        "ratio_vs_limit": _summary(ratio, ratio - 0.02, ratio + 0.02),
        **extra,
    }


def _result(workloads: dict) -> dict:
    machine = {
        "cpu": "AMD EPYC",
        "cpu_count": 2,
        "torch_threads": 2,
        "torch": "2.13.0+cpu",
        "blas": "mkl",
        "python": "3.11.7",
        "device": "cpu",
    }
    return {
        "name": "cpu-fp32",
        "date": "2026-11-27 17:00:00",
        "machine": machine,
        "precision": "fp32",
        "repeats": 3,
        "workloads": workloads,
    }


def _line(lines: list[str], start: str) -> str:
    found = [line for line in lines if line.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def test_eager_and_compiled_evaluation_get_a_row_and_a_target_each():
    result = _result(
        {
            "iw-eval": _iw(24.0, 0.59),
            "iw-eval-compiled": _iw(34.0, 0.83, compile_seconds=7.25, compiled=True),
        }
    )
    lines = report.section(result)
    eager = _line(lines, "| `iw-eval` K=5000, 2000 images |")
    compiled = _line(lines, "| `iw-eval-compiled` K=5000, 2000 images |")
    assert "24.0 (23.0-25.0) images/s" in eager and "compil" not in eager
    assert "34.0 (33.0-35.0) images/s" in compiled
    assert "compiled; compiling took 7.2 s more" in compiled
    assert "| 0.59 (0.57-0.61) |" in eager and "| 0.83 (0.81-0.85) |" in compiled
    assert _line(lines, "| `iw-eval` vaekit / limit >= 0.8 |").endswith("| no |")
    assert _line(lines, "| `iw-eval-compiled` vaekit / limit >= 0.8 |").endswith("| yes |")


def test_a_compile_that_fell_back_to_eager_says_so():
    result = _result({"iw-eval-compiled": _iw(24.0, 0.59, compile_seconds=0.5, compiled=False)})
    row = _line(report.section(result), "| `iw-eval-compiled` K=5000, 2000 images |")
    assert "compile failed: eager" in row
