"""The quality benchmark's comparison table (bench/report.py): which rows it compares."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import report


def _row(nll, seed, peer=None, minutes=10, k=5000, examples=10000):
    row = {"recipe": "fmnist-vamp", "budget_minutes": minutes, "seed": seed, "test_nll": nll}
    row.update(iw_k=k, test_examples=examples)
    return row | ({"peer": peer, "peer_model": "vamp"} if peer else {})


def _comparison(rows):
    lines = report.peer_comparison(rows)
    body = [line for line in lines if line.startswith("| `")]
    assert len(body) == 1, lines
    return [cell.strip() for cell in body[0].strip("|").split("|")]


def test_a_seed_rerun_after_a_code_change_replaces_its_older_row():
    rows = [
        _row(232.91, 0),  # seed 0 before the change
        _row(231.27, 0, peer="pythae"),
        _row(229.92, 0),  # seed 0 again, newer code
        _row(229.76, 1),
        _row(231.51, 1, peer="pythae"),
    ]
    cells = _comparison(rows)
    assert cells[2] == "229.84 (229.76-229.92, 2 seeds)"  # 232.91 is no longer counted
    assert cells[4] == "231.39 (231.27-231.51, 2 seeds)"
    assert cells[5] == "+1.55"
    assert cells[6] == "yes (spread 0.24)"


def test_rows_off_the_protocol_and_a_side_without_rows_are_left_out():
    rows = [_row(200.0, 0, k=100), _row(200.0, 1, examples=500), _row(231.0, 0, peer="pythae")]
    assert report.peer_comparison(rows) == []
    cells = _comparison([*rows, _row(230.0, 0)])
    assert cells[2] == "230.00 (1 seed)" and cells[5] == "+1.00"
    assert cells[6] == "spread not measured (needs 2 seeds of each)"


def test_a_gpu_run_is_listed_but_not_compared_with_the_cpu_peer():
    gpu = _row(225.0, 0) | {"machine": {"device": "cuda", "gpu": "NVIDIA H200"}}
    cells = _comparison([_row(230.0, 1), _row(231.0, 0, peer="pythae"), gpu])
    assert cells[2] == "230.00 (1 seed)" and cells[5] == "+1.00"  # 225.0 is not counted
    machine = {"cpu": "EPYC", "cpu_count": 16, "device": "cuda", "gpu": "NVIDIA H200"}
    row = gpu | {"machine": machine, "iw_k": 5000, "test_examples": 10000, "test_elbo": -228.0}
    row |= {"epochs": 90, "train_seconds": 360.0, "commit": "abc", "budget_minutes": 6}
    lines = report.quality_section({"rows": [row]})
    assert any("| **225.00** |" in line and "16 CPUs, NVIDIA H200 |" in line for line in lines)


def test_an_epoch_budget_row_shows_its_epochs_and_is_not_compared_with_minutes_rows():
    epochs_row = _row(225.0, 1, minutes=None) | {"budget_epochs": 341}
    cells = _comparison([_row(230.0, 0), _row(231.0, 0, peer="pythae"), epochs_row])
    assert cells[2] == "230.00 (1 seed)"  # the 341-epoch row has no same-minutes peer
    machine = {"cpu": "AMD EPYC", "cpu_count": 2}
    row = epochs_row | {"machine": machine, "test_elbo": -228.0, "epochs": 341}
    row |= {"train_seconds": 4860.0, "commit": "abc"}
    lines = report.quality_section({"rows": [row]})
    assert any("| 81.0 (341 epochs) |" in line for line in lines), lines
