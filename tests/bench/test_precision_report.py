"""The bf16 check (bench/precision.py): its verdict and its BENCHMARKS.md section."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import precision
import report


def _runs(fp32_nll: float, bf16_nll: float) -> dict:
    def run(nll: float, speed: float) -> dict:
        return {"test_iw_nll": nll, "test_elbo": -nll - 4, "samples_per_s": speed}

    return {"fp32": run(fp32_nll, 20_000.0), "bf16": run(bf16_nll, 30_000.0)}


@pytest.mark.parametrize(
    ("fp32", "bf16", "met"),
    [(230.00, 230.49, True), (230.00, 230.51, False), (230.00, 229.40, False)],
)
def test_the_target_is_half_a_nat_either_way(fp32, bf16, met):
    result = precision.verdict(_runs(fp32, bf16))
    assert result["met"] is met
    assert result["nll_bf16_minus_fp32"] == pytest.approx(bf16 - fp32)
    assert result["speed_bf16_over_fp32"] == pytest.approx(1.5)


def test_the_section_shows_both_numbers_and_the_verdict():
    runs = _runs(230.12, 230.47)
    for run in runs.values():
        run["train_seconds"] = 60.0
    result = {
        "name": "cpu-precision",
        "kind": "precision",
        "date": "2026-11-27 14:00:00",
        "machine": {"cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 2, "torch": "2.13.0",
                    "blas": "mkl", "python": "3.11.7"},
        "commit": "1aed5a9abcdef0",
        "settings": {"config": "configs/mlp_fashion_binarized.toml", "epochs": 20,
                     "iw_k": 5000, "test_limit": 2000},
        "runs": runs,
        **precision.verdict(runs),
    }  # fmt: skip
    text = "\n".join(report.section(result))
    assert "| fp32 | **230.12** |" in text and "| bf16 | **230.47** |" in text
    assert "+0.35 nats (bf16 - fp32)" in text and "1.50x" in text
    assert text.rstrip().endswith("| yes |")
