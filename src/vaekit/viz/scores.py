"""Anomaly scores of a run: per-example -log p(x) estimates of another dataset, stored in
``RUN/scores/``.

``<name>.csv`` (columns ``index,score``) holds the scored dataset, ``<name>.reference.csv`` the
run's own test images, and ``<name>.json`` the summary (``dataset``, ``auroc``, ``iw_k``);
:func:`write_scores` writes all three and :func:`read_scores` reads them back.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaekit.atomic import atomic_write_text
from vaekit.errors import RunError
from vaekit.viz.plots import save_png, score_histogram

SCORES_DIR = "scores"

# --------------------------------------------------------------------------- scores


def _safe_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return safe or "scores"


def _write_csv(path: Path, scores: Sequence[float] | np.ndarray | torch.Tensor) -> None:
    values = np.asarray(torch.as_tensor(scores).detach().cpu().double()).ravel()
    lines = ["index,score"] + [f"{i},{float(v)!r}" for i, v in enumerate(values)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_scores(
    run_dir: str | Path,
    name: str,
    scores: Sequence[float] | np.ndarray | torch.Tensor,
    in_scores: Sequence[float] | np.ndarray | torch.Tensor | None,
    auroc: float | None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Record anomaly scores of dataset ``name`` in ``RUN/scores/`` for the report.

    Writes ``<name>.csv`` (``index,score``: one row per scored image),
    ``<name>.reference.csv`` (the same for the run's test images, ``in_scores``) and
    ``<name>.json`` holding ``dataset``, ``auroc`` and ``iw_k`` (from ``meta``, else None)
    plus the rest of ``meta``. Characters outside ``[A-Za-z0-9._-]`` in ``name`` become
    ``_``. Returns the path of ``<name>.csv``.
    """
    folder = Path(run_dir) / SCORES_DIR
    safe = _safe_name(name)
    scores_path = folder / f"{safe}.csv"
    _write_csv(scores_path, scores)
    reference_file = None
    if in_scores is not None:
        reference_file = f"{safe}.reference.csv"
        _write_csv(folder / reference_file, in_scores)
    meta = dict(meta or {})
    summary = {
        "name": safe,
        "dataset": meta.pop("dataset", name),
        "auroc": None if auroc is None else float(auroc),
        "iw_k": meta.pop("iw_k", None),
        "count": len(np.asarray(torch.as_tensor(scores)).ravel()),
        "reference_count": None if in_scores is None else len(np.asarray(in_scores).ravel()),
        "scores_file": scores_path.name,
        "reference_file": reference_file,
        **meta,
    }
    atomic_write_text(folder / f"{safe}.json", json.dumps(summary, indent=2) + "\n")
    return scores_path


def _read_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "score" not in rows[0]:
        raise RunError(f"{path}: expected columns index,score")
    return np.asarray([float(r["score"]) for r in rows], dtype=float)


@dataclass
class ScoreSet:
    """Anomaly scores of one dataset against the run's test data, as ``write_scores`` left them."""

    name: str
    summary: dict[str, Any]
    scores: np.ndarray
    reference: np.ndarray | None


def read_scores(run_dir: str | Path) -> list[ScoreSet]:
    """Every score set recorded in ``RUN/scores/`` (sorted by name); unreadable ones raise."""
    folder = Path(run_dir) / SCORES_DIR
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            summary = json.loads(path.read_text())
            scores = _read_csv(folder / summary["scores_file"])
            ref = summary.get("reference_file")
            reference = _read_csv(folder / ref) if ref else None
        except (OSError, ValueError, KeyError, TypeError) as err:
            why = f"{type(err).__name__}: {err}"
            raise RunError(f"{path}: unreadable score summary ({why})") from None
        out.append(ScoreSet(summary.get("name", path.stem), summary, scores, reference))
    return out


def save_score_histogram(score_set: ScoreSet, path: str | Path, test_name: str = "test") -> Path:
    """Overlaid histograms of a score set and its reference scores, AUROC in the title."""
    groups: dict[str, np.ndarray] = {}
    if score_set.reference is not None:
        groups[f"{test_name} (in-distribution)"] = score_set.reference
    groups[str(score_set.summary.get("dataset", score_set.name))] = score_set.scores
    return save_png(score_histogram(groups, score_set.summary.get("auroc")), path)


def score_picture_name(name: str) -> str:
    """File name under RUN/pictures/ of the histogram of score set ``name``."""
    return f"scores_{_safe_name(name)}.png"
