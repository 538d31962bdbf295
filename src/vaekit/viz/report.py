"""One self-contained HTML page that explains a trained VAE: numbers, curves and pictures.

:func:`build_report` is the whole ``vaekit report RUN`` command: it loads the run and its
test data, draws every picture into ``RUN/pictures/`` and writes ``RUN/report.html`` with
:func:`write_report`. The page needs nothing but itself: each image is inlined as a base64
``data:`` URI and the style sheet is inline, so it opens offline and can be mailed around.

Anomaly scores live in ``RUN/scores/``: ``<name>.csv`` (columns ``index,score``) for the
scored dataset, ``<name>.reference.csv`` for the run's own test images, and ``<name>.json``
with ``dataset``, ``auroc`` and ``iw_k``; :func:`write_scores` writes all three.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vaekit.atomic import atomic_write_text
from vaekit.data import ImageData, load_dataset, to_model_input
from vaekit.errors import RunError
from vaekit.models import VAE
from vaekit.train import checkpoint as ckpt
from vaekit.train.logging import read_metrics
from vaekit.viz.animation import GIF_FILE, frame_paths, training_gif
from vaekit.viz.grid import save_grid, save_pairs
from vaekit.viz.latents import (
    ACTIVE_THRESHOLD,
    LatentSummary,
    Mode,
    save_interpolation,
    save_latent_scatter,
    save_manifold,
    save_traversals,
    summarize_posteriors,
)
from vaekit.viz.plots import DPI, kl_per_dimension_plot, save_png, score_histogram, training_curves

REPORT_FILE = "report.html"
SCORES_DIR = "scores"

# File names of the report's pictures under RUN/pictures/. Training's own pictures
# (samples.png, reconstructions.png and the per-epoch folders) are never written here.
PICTURES: dict[str, str] = {
    "curves": "training_curves.png",
    "kl": "kl_per_dimension.png",
    "samples": "prior_samples.png",
    "reconstructions": "test_reconstructions.png",
    "interpolation_linear": "interpolation_linear.png",
    "interpolation_slerp": "interpolation_slerp.png",
    "manifold": "manifold.png",
    "traversals": "traversals.png",
    "scatter": "latent_scatter.png",
    "gif": GIF_FILE,
}


@dataclass(frozen=True)
class ReportSettings:
    """How many images each picture of the report shows (and the seed that picks them)."""

    seed: int = 0
    samples: int = 64
    temperature: float = 1.0
    reconstructions: int = 32
    pairs: int = 8
    steps: int = 10
    manifold_n: int = 20
    traversal_dims: int = 10
    scatter_points: int = 5000
    gif_frames: int = 40


# --------------------------------------------------------------------------- pictures
#
# draw_* are the pictures of a run, one file each, as the command line asks for them:
# a model from load_run (it carries .config), an output path, the sizes and a seed. The
# test data and its posterior summary load on demand; build_report passes them in once.


def display_images(data: ImageData) -> torch.Tensor:
    """A dataset's uint8 images as floats in [0, 1], the way pictures show them.

    Statically binarized data is already 0/255; dynamically binarized data is shown grey
    (its Bernoulli means), like training's own reconstruction pictures.
    """
    return to_model_input(data.images, binarize="none", dequantize=False)


def load_test_split(model: VAE) -> ImageData:
    """The test images of the dataset a loaded run was trained on (RunError when empty)."""
    data = load_dataset(model.config.data, "test")
    if len(data) == 0:
        raise RunError("the run's test split holds no images")
    return data


def _or_test(model: VAE, data: ImageData | None) -> ImageData:
    return data if data is not None else load_test_split(model)


def pick_images(data: ImageData, n: int, seed: int) -> torch.Tensor:
    """``n`` images in [0, 1] drawn by a seeded permutation (repeating if the data is small)."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return display_images(data.subset(order[torch.arange(n) % len(data)]))


def posterior_summary(model: VAE, data: ImageData, seed: int = 0) -> LatentSummary:
    """Posterior means, KL per dimension and activity over ``data``, the images prepared as in
    training (seeded binarization or dequantization noise)."""
    cfg = model.config.data
    x = to_model_input(
        data.images,
        binarize=cfg.binarize,
        dequantize=cfg.dequantize,
        generator=torch.Generator().manual_seed(seed),
    )
    return summarize_posteriors(model, x)


def draw_samples(
    model: VAE, out: str | Path, *, n: int = 64, temperature: float = 1.0, seed: int = 0
) -> Path:
    """``n`` seeded prior draws decoded to the mean of p(x|z), as one PNG grid 8 wide."""
    generator = torch.Generator().manual_seed(seed)
    images = model.sample(n, temperature=temperature, generator=generator)
    return save_grid(images, out, nrow=8)


def draw_reconstructions(
    model: VAE, out: str | Path, *, n: int = 32, seed: int = 0, data: ImageData | None = None
) -> Path:
    """Rows of ``n`` seeded test images, each above its reconstruction from the posterior mean."""
    x = pick_images(_or_test(model, data), n, seed)
    return save_pairs(x, model.reconstruct(x), out, nrow=8)


def draw_interpolation(
    model: VAE,
    out: str | Path,
    *,
    mode: Mode = "linear",
    pairs: int = 8,
    steps: int = 10,
    seed: int = 0,
    data: ImageData | None = None,
) -> Path:
    """Interpolations between ``pairs`` seeded pairs of test images (the same pairs for
    either ``mode``), one pair per row with the originals at the ends."""
    x = pick_images(_or_test(model, data), 2 * pairs, seed + 1)
    return save_interpolation(model, x[0::2], x[1::2], out, steps=steps, mode=mode)


def draw_manifold(model: VAE, out: str | Path, *, n: int = 20) -> Path:
    """The decoded 2-D latent plane, n x n (LatentDimError unless latent_dim == 2)."""
    return save_manifold(model, out, n=n)


def draw_traversals(
    model: VAE,
    out: str | Path,
    *,
    dims: int = 10,
    seed: int = 0,
    data: ImageData | None = None,
    summary: LatentSummary | None = None,
) -> Path:
    """Traversals of the ``dims`` dimensions with the most KL on the test set, around the
    posterior mean of one seeded test image."""
    data = _or_test(model, data)
    summary = summary if summary is not None else posterior_summary(model, data, seed)
    return save_traversals(
        model,
        pick_images(data, 1, seed),
        out,
        order=summary.order(),
        max_dims=dims,
        kl_per_dim=summary.kl_per_dim,
    )


def draw_scatter(
    model: VAE,
    out: str | Path,
    *,
    points: int = 5000,
    seed: int = 0,
    data: ImageData | None = None,
    summary: LatentSummary | None = None,
) -> Path:
    """Posterior means of (at most ``points``) test images, PCA to 2-D, coloured by class."""
    data = _or_test(model, data)
    summary = summary if summary is not None else posterior_summary(model, data, seed)
    return save_latent_scatter(
        summary.means, data.labels, data.class_names, out, max_points=points, seed=seed
    )


def draw_kl_per_dimension(
    model: VAE,
    out: str | Path,
    *,
    seed: int = 0,
    data: ImageData | None = None,
    summary: LatentSummary | None = None,
) -> Path:
    """Bar chart of each latent dimension's mean KL on the test set, active units marked."""
    summary = (
        summary if summary is not None else posterior_summary(model, _or_test(model, data), seed)
    )
    png = kl_per_dimension_plot(
        summary.kl_per_dim.tolist(),
        active=summary.active.tolist(),
        active_rule=f"Cov_x E[z] > {ACTIVE_THRESHOLD:g}",
    )
    return save_png(png, out)


def draw_curves(run_dir: str | Path, out: str | Path) -> Path:
    """Train and validation curves of a run from its ``metrics.jsonl`` (RunError if none)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / ckpt.METRICS_FILE)
    if not records:
        raise RunError(f"{run_dir}: no training metrics ({ckpt.METRICS_FILE} empty or missing)")
    try:
        png = training_curves(records)
    except ValueError as err:
        raise RunError(f"{run_dir / ckpt.METRICS_FILE}: {err}") from None
    return save_png(png, out)


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


# --------------------------------------------------------------------------- build


def build_report(
    run_dir: str | Path, *, seed: int = 0, settings: ReportSettings | None = None
) -> Path:
    """Draw every picture of a run into ``RUN/pictures/`` and write ``RUN/report.html``.

    ``settings`` (sizes of the pictures) wins over ``seed`` when given. Deterministic for
    a given ``seed``: the same run gives the same pictures and page.
    A missing ``eval.json`` or missing scores leave a note in the report, not an error.
    """
    run_dir = Path(run_dir)
    s = settings or ReportSettings(seed=seed)
    model = ckpt.load_run(run_dir)
    config = model.config
    data = load_test_split(model)
    pictures_dir = run_dir / ckpt.PICTURES_DIR
    out: dict[str, Path] = {}
    notes: dict[str, str] = {}

    def pic(key: str) -> Path:
        return pictures_dir / PICTURES[key]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        summary = posterior_summary(model, data, s.seed)
        if read_metrics(run_dir / ckpt.METRICS_FILE):
            out["curves"] = draw_curves(run_dir, pic("curves"))
        else:
            notes["curves"] = f"{ckpt.METRICS_FILE} is empty or missing."
        out["kl"] = draw_kl_per_dimension(model, pic("kl"), summary=summary)
        out["samples"] = draw_samples(
            model, pic("samples"), n=s.samples, temperature=s.temperature, seed=s.seed
        )
        out["reconstructions"] = draw_reconstructions(
            model, pic("reconstructions"), n=s.reconstructions, seed=s.seed, data=data
        )
        for mode in ("linear", "slerp"):
            key = f"interpolation_{mode}"
            out[key] = draw_interpolation(
                model, pic(key), mode=mode, pairs=s.pairs, steps=s.steps, seed=s.seed, data=data
            )
        if model.latent_dim == 2:
            out["manifold"] = draw_manifold(model, pic("manifold"), n=s.manifold_n)
        out["traversals"] = draw_traversals(
            model, pic("traversals"), dims=s.traversal_dims, seed=s.seed, data=data, summary=summary
        )
        out["scatter"] = draw_scatter(
            model, pic("scatter"), points=s.scatter_points, seed=s.seed, data=data, summary=summary
        )
        if frame_paths(run_dir):
            out["gif"] = training_gif(run_dir, pic("gif"), max_frames=s.gif_frames)
        else:
            notes["gif"] = "the run has no per-epoch sample frames (pictures/samples/)."
        for score_set in read_scores(run_dir):
            path = pictures_dir / score_picture_name(score_set.name)
            out[f"scores:{score_set.name}"] = save_score_histogram(
                score_set, path, test_name=f"{config.data.name or 'test data'} test"
            )
    return write_report(run_dir, pictures=out, settings=s, summary=summary, notes=notes)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{margin:0;background:#f4f4f2;color:#1f1f1f;
 font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1000px;margin:0 auto;padding:28px 28px 64px;background:#fff;
 box-shadow:0 0 0 1px #e4e4e0}
h1{font-size:1.75em;margin:0 0 .15em}
h2{font-size:1.3em;margin:2.2em 0 .6em;padding-bottom:.25em;border-bottom:1px solid #e2e2dd}
.meta{color:#555;margin:.2em 0}
nav{margin:1em 0 0;font-size:.93em;display:flex;flex-wrap:wrap;gap:.2em .9em}
nav a{color:#2459a8;text-decoration:none;white-space:nowrap}
nav a:hover{text-decoration:underline}
figure{margin:1em 0 1.6em}
figure img{display:block;max-width:100%;height:auto;margin:0 auto}
img.pixels{image-rendering:crisp-edges;image-rendering:pixelated}
figcaption{margin-top:.6em;color:#333}
code{font:13px/1.45 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
code.cmd{display:block;margin-top:.4em;padding:.45em .7em;background:#f3f3f0;
 border-radius:4px;white-space:pre-wrap;word-break:break-all;color:#333}
.note{background:#fff8e0;border-left:4px solid #e6b000;padding:.55em .85em;margin:1em 0}
table#metrics{border-collapse:collapse;margin:.5em 0;min-width:60%}
#metrics th,#metrics td{padding:.35em .9em;border-bottom:1px solid #ecece8;text-align:left}
#metrics th{background:#f6f6f3;font-weight:600}
#metrics td.value{text-align:right;font-variant-numeric:tabular-nums;
 font-family:ui-monospace,"DejaVu Sans Mono",monospace}
#metrics td.unit{color:#666}
pre.config{background:#f6f6f3;padding:1em;border-radius:4px;overflow-x:auto;
 font:13px/1.45 ui-monospace,"DejaVu Sans Mono",monospace}
footer{margin-top:3em;color:#777;font-size:.88em}
""".strip()

MAX_WIDTH_PX = 940  # content width of <main>

# Known eval.json keys, in table order: (label, unit). Other numeric keys follow by name.
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "elbo": ("ELBO", "nats"),
    "recon": ("Reconstruction \u2212log p(x|z)", "nats"),
    "kl": ("KL(q(z|x) \u2016 p(z))", "nats"),
    "nll_upper_bound": ("NLL upper bound (\u2212ELBO)", "nats"),
    "iw_nll": ("IW-NLL (importance-weighted)", "nats"),
    "iw_elbo": ("IW bound log p\u0302(x)", "nats"),
    "iw_k": ("IW samples K", ""),
    "bits_per_dim": ("bits/dim", "bits"),
    "iw_bits_per_dim": ("bits/dim from the IW-NLL", "bits"),
    "active_units": ("active units", "of D"),
    "mutual_information": ("mutual information I(x; z)", "nats"),
    "mi": ("mutual information I(x; z)", "nats"),
}
# Numbers about how a metric was computed rather than about the model: shown under the
# table as settings, not as table rows.
SETTING_KEYS = {
    "seed",
    "examples",
    "chunk_size",
    "iw_batch_size",
    "iw_step_activations_mb",
    "iw_seconds",
    "peak_rss_mb",
    "latent_dim",
    "active_threshold",
    "mi_examples",
    "mi_upper_limit",
}


def _flat_scalars(result: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level scalars of eval.json, and those of nested sections as "section.key"."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                if isinstance(inner, str | int | float):
                    flat[f"{key}.{sub}"] = inner
        elif isinstance(value, str | int | float):
            flat[key] = value
    return flat


def format_metric(key: str, value: Any) -> str:
    """The text a metric cell shows: 2 decimals for nats, 4 below 10 (bits/dim, MI)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def _metrics_table(result: Mapping[str, Any], latent_dim: int) -> str:
    flat = _flat_scalars(result)

    def leaf(key: str) -> str:
        return key.rsplit(".", 1)[-1]

    numeric = {
        k: v
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and leaf(k) not in SETTING_KEYS
    }
    rank = {name: i for i, name in enumerate(METRIC_LABELS)}
    keys = sorted(numeric, key=lambda k: (rank.get(leaf(k), len(rank)), k))
    rows = []
    for key in keys:
        label, unit = METRIC_LABELS.get(leaf(key), (key, ""))
        if leaf(key) == "iw_nll" and "iw_k" in flat:
            label = f"IW-NLL (K = {flat['iw_k']})"
        if leaf(key) == "active_units":
            unit = f"of {latent_dim}"
        if unit == "nats":
            unit = "nats per example"
        if leaf(key) in ("mutual_information", "mi"):
            limit = next((v for k, v in flat.items() if leaf(k) == "mi_upper_limit"), None)
            if isinstance(limit, int | float):
                unit = f"nats (at most log N = {limit:.2f})"
        rows.append(
            f'<tr><th scope="row">{_e(label)}</th>'
            f'<td class="value" data-key="{_e(key)}" data-value="{_e(repr(numeric[key]))}">'
            f"{_e(format_metric(key, numeric[key]))}</td>"
            f'<td class="unit">{_e(unit)}</td></tr>'
        )
    head = '<tr><th scope="col">metric</th><th scope="col">value</th><th scope="col">unit</th></tr>'
    settings = [
        f"{k} {format_metric(k, v) if not isinstance(v, str) else v}"
        for k, v in flat.items()
        if k not in numeric and k != "units"
    ]
    extra = f'<p class="meta">{_e(", ".join(settings))}</p>' if settings else ""
    return f'<table id="metrics"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>{extra}'


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(path: Path) -> tuple[str, int, int]:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as img:
        fmt, (width, height) = img.format, img.size
    mime = {"PNG": "image/png", "GIF": "image/gif"}.get(fmt or "")
    if mime is None:
        raise RunError(f"{path}: not a PNG or GIF picture (found {fmt})")
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}", width, height


def _img(path: Path, alt: str, pixels: bool) -> str:
    uri, width, height = _data_uri(path)
    if pixels and width <= MAX_WIDTH_PX:
        # Whole-number upscaling keeps every image pixel the same size on screen.
        factor = max(1, min(3, MAX_WIDTH_PX // width))
        shown, cls = width * factor, ' class="pixels"'
    elif pixels:  # too wide: a smooth downscale reads better than dropped pixel columns
        shown, cls = MAX_WIDTH_PX, ""
    else:  # charts are drawn at DPI for 100 px per inch on screen (sharp on dense screens)
        shown, cls = min(MAX_WIDTH_PX, round(width * 100 / DPI)), ""
    shown_h = round(height * shown / width)
    return (
        f'<img{cls} src="{uri}" alt="{_e(alt)}" width="{shown}" height="{shown_h}" loading="eager">'
    )


@dataclass(frozen=True)
class _Figure:
    key: str
    title: str
    caption: str
    command: str
    pixels: bool


def _figures(run: str, cfg: Any, s: ReportSettings, summary: LatentSummary | None) -> list[_Figure]:
    """The pictures of the report in page order: what each shows and how to redraw it."""
    p = f"{run}/{ckpt.PICTURES_DIR}"
    d = cfg.model.latent_dim
    shown = min(d, s.traversal_dims)
    seed = f"--seed {s.seed}"
    active = "" if summary is None else f" ({int(summary.active.sum())} of {d} active here)"
    spread = ""
    if summary is not None and d == 2 and len(summary.means) > 1:
        std = summary.means.std(0)
        if float(std.max()) > 1.5:  # the aggregate posterior is much wider than N(0, I)
            spread = (
                f" Here the test images' posterior means spread wider than the prior (standard "
                f"deviations {float(std[0]):.1f} and {float(std[1]):.1f}, see the scatter "
                "below), so this grid shows only their centre; longer training pulls them in."
            )
    return [
        _Figure(
            "curves",
            "Training curves",
            "Train and validation ELBO, reconstruction and KL per epoch; a growing gap "
            "between train and validation means overfitting, and a KL falling towards 0 "
            "means the posterior is collapsing onto the prior.",
            f"vaekit curves {run} -o {p}/{PICTURES['curves']}",
            False,
        ),
        _Figure(
            "kl",
            "KL per latent dimension",
            f"Mean KL(q(z_d|x) \u2016 N(0,1)) of each of the {d} latent dimensions over the "
            f"test set, largest first; dimensions near 0 nats are inactive, unused by the "
            f"decoder{active}.",
            f"vaekit report {run} {seed}",
            False,
        ),
        _Figure(
            "samples",
            "Samples from the prior",
            f"{s.samples} images decoded from z ~ N(0, I) at temperature {s.temperature:g}, "
            "each the mean of p(x|z) rather than a noisy draw; look for variety and for "
            "objects a person would recognise.",
            f"vaekit sample {run} -n {s.samples} --temperature {s.temperature:g} {seed} "
            f"-o {p}/{PICTURES['samples']}",
            True,
        ),
        _Figure(
            "reconstructions",
            "Reconstructions of test images",
            "Each row of test images sits above its reconstruction from the posterior mean; "
            "look for what the model keeps (shape, pose) and what it blurs away (fine detail).",
            f"vaekit reconstruct {run} -n {s.reconstructions} {seed} "
            f"-o {p}/{PICTURES['reconstructions']}",
            True,
        ),
        _Figure(
            "interpolation_linear",
            "Interpolation, linear",
            f"Each row walks a straight line in z between the posterior means of two test "
            f"images in {s.steps} steps, with the originals at both ends; in a smooth latent "
            "space every step is a plausible image and the change is gradual.",
            f"vaekit interpolate {run} --mode linear --pairs {s.pairs} --steps {s.steps} "
            f"{seed} -o {p}/{PICTURES['interpolation_linear']}",
            True,
        ),
        _Figure(
            "interpolation_slerp",
            "Interpolation, spherical (slerp)",
            "The same pairs along a great-circle arc (White 2016), which keeps the path as far "
            "from the origin as typical prior draws; compare its middle columns with the "
            "linear ones, which pass closer to the origin and can look washed out.",
            f"vaekit interpolate {run} --mode slerp --pairs {s.pairs} --steps {s.steps} "
            f"{seed} -o {p}/{PICTURES['interpolation_slerp']}",
            True,
        ),
        _Figure(
            "manifold",
            "The learned 2-D manifold",
            f"Decoded images on a {s.manifold_n}\u00d7{s.manifold_n} grid of the latent plane "
            "at standard-normal quantiles from 5% to 95% (z1 grows to the right, z2 upward); "
            "look for smooth transitions and for every region decoding to something plausible."
            + spread,
            f"vaekit manifold {run} -n {s.manifold_n} -o {p}/{PICTURES['manifold']}",
            True,
        ),
        _Figure(
            "traversals",
            "Latent traversals",
            f"Each row sets one latent dimension to values from \u22123 to 3 while the others "
            f"stay at a test image's posterior mean, rows sorted by KL ({shown} of {d} "
            "dimensions); an active dimension changes the image in one consistent way, an "
            "inactive one leaves it unchanged.",
            f"vaekit traverse {run} --dims {s.traversal_dims} {seed} "
            f"-o {p}/{PICTURES['traversals']}",
            True,
        ),
        _Figure(
            "scatter",
            "Posterior means of test images",
            "Posterior means of test images"
            + (" projected on their two principal components" if d > 2 else "")
            + ", coloured by class; classes the encoder separates without ever seeing a label "
            "form their own clusters.",
            f"vaekit scatter {run} --points {s.scatter_points} {seed} -o {p}/{PICTURES['scatter']}",
            False,
        ),
        _Figure(
            "gif",
            "Training, epoch by epoch",
            "The same fixed prior latents decoded after every epoch; watch the samples "
            "sharpen from blobs into objects and then settle.",
            f"vaekit animate {run} -o {p}/{PICTURES['gif']}",
            True,
        ),
    ]


def _figure_html(fig: _Figure, path: Path | None, note: str | None) -> str:
    parts = [f'<section id="{_e(fig.key)}"><h2>{_e(fig.title)}</h2>']
    if path is not None and path.is_file():
        parts.append(
            f"<figure>{_img(path, fig.title, fig.pixels)}<figcaption>{_e(fig.caption)}"
            f'<code class="cmd">{_e(fig.command)}</code></figcaption></figure>'
        )
    else:
        parts.append(
            f'<p class="note">Not drawn: {_e(note or "the picture file is missing.")} '
            f"Command: <code>{_e(fig.command)}</code></p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _scores_html(run: str, run_dir: Path, pictures: Mapping[str, Path]) -> str:
    sets = read_scores(run_dir)
    parts = ['<section id="scores"><h2>Anomaly scores</h2>']
    if not sets:
        parts.append(
            '<p class="note">No anomaly scores yet. Score another dataset against this run '
            f"with <code>{_e(f'vaekit score {run} --data DATASET -o scores.csv')}</code> "
            "and rebuild the report.</p>"
        )
    for score_set in sets:
        info = score_set.summary
        dataset = str(info.get("dataset", score_set.name))
        auroc = info.get("auroc")
        k = info.get("iw_k")
        path = pictures.get(f"scores:{score_set.name}")
        what = (
            f"AUROC {auroc:.3f} for telling {dataset} from the run's test images by score"
            if isinstance(auroc, int | float)
            else f"Scores of {dataset} and of the run's test images"
        )
        caption = (
            f"{what} (higher score = more anomalous{f', K = {k} importance samples' if k else ''})"
            "; the less the two histograms overlap, the better the model flags data unlike "
            "its training set."
        )
        iw = f" --iw {k}" if k else ""
        command = f"vaekit score {run} --data {shlex.quote(dataset)}{iw} -o scores.csv"
        parts.append(f"<h3>{_e(dataset)}</h3>")
        if path is not None and Path(path).is_file():
            parts.append(
                f"<figure>{_img(Path(path), f'anomaly scores of {dataset}', False)}"
                f'<figcaption>{_e(caption)}<code class="cmd">{_e(command)}</code>'
                "</figcaption></figure>"
            )
        else:
            parts.append(f'<p class="note">{_e(caption)} <code>{_e(command)}</code></p>')
    parts.append("</section>")
    return "".join(parts)


def _default_pictures(run_dir: Path) -> dict[str, Path]:
    folder = run_dir / ckpt.PICTURES_DIR
    found = {k: folder / name for k, name in PICTURES.items() if (folder / name).is_file()}
    for score_set in read_scores(run_dir):
        path = folder / score_picture_name(score_set.name)
        if path.is_file():
            found[f"scores:{score_set.name}"] = path
    return found


def write_report(
    run_dir: str | Path,
    *,
    pictures: Mapping[str, Path] | None = None,
    settings: ReportSettings | None = None,
    summary: LatentSummary | None = None,
    notes: Mapping[str, str] | None = None,
) -> Path:
    """Write ``RUN/report.html`` from pictures already drawn (keys of :data:`PICTURES`).

    With ``pictures=None`` the files of :data:`PICTURES` found in ``RUN/pictures/`` are used.
    Reads ``config.toml``, ``metrics.jsonl``, ``eval.json`` and ``scores/`` of the run.
    """
    run_dir = Path(run_dir)
    config = ckpt.read_run_config(run_dir)
    s = settings or ReportSettings()
    pictures = dict(_default_pictures(run_dir) if pictures is None else pictures)
    notes = dict(notes or {})
    run = shlex.quote(str(run_dir))
    name = run_dir.resolve().name
    records = read_metrics(run_dir / ckpt.METRICS_FILE)
    weights = run_dir / ckpt.WEIGHTS_FILE
    when = (
        datetime.fromtimestamp(weights.stat().st_mtime, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        if weights.is_file()
        else "no checkpoint"
    )
    dataset = config.data.name or str(config.data.path)
    m = config.model
    epochs = records[-1].get("epoch", "?") if records else 0
    meta = (
        f"{dataset} ({config.data.binarize} binarization)"
        if config.data.binarize != "none"
        else dataset
    )
    header = (
        f"<header><h1>VAE report: {_e(name)}</h1>"
        f'<p class="meta">data: {_e(meta)} \u00b7 model: {_e(m.arch)} VAE, '
        f"{_e(str(m.latent_dim))}-D latent, {_e(m.likelihood)} likelihood \u00b7 "
        f"{_e(str(epochs))} epochs \u00b7 checkpoint {_e(when)}</p>"
        f'<p class="meta">run directory: <code>{_e(str(run_dir))}</code></p>'
    )
    figures = _figures(run, config, s, summary)
    if m.latent_dim != 2:
        notes.setdefault(
            "manifold",
            f"the manifold needs a 2-D latent space and this model has {m.latent_dim} "
            "dimensions (train with --set model.latent_dim=2 to see it).",
        )
    links = [("evaluation", "Evaluation")] + [(f.key, f.title) for f in figures]
    links += [("scores", "Anomaly scores"), ("config", "Configuration")]
    nav = " ".join(f'<a href="#{_e(k)}">{_e(t)}</a>' for k, t in links)
    header += f"<nav>{nav}</nav></header>"

    eval_path = run_dir / ckpt.EVAL_FILE
    evaluation = ['<section id="evaluation"><h2>Evaluation on the test set</h2>']
    eval_cmd = f"vaekit evaluate {run} --iw 1000"
    result = None
    if eval_path.is_file():
        try:
            result = json.loads(eval_path.read_text())
        except (OSError, ValueError) as err:
            evaluation.append(f'<p class="note">{_e(f"{eval_path}: unreadable ({err}).")}</p>')
    if isinstance(result, dict):
        if isinstance(result.get("iw_k"), int):
            eval_cmd = f"vaekit evaluate {run} --iw {result['iw_k']}"
        evaluation.append(_metrics_table(result, m.latent_dim))
        evaluation.append(f'<p class="meta">Recompute: <code>{_e(eval_cmd)}</code></p>')
    elif result is None and not eval_path.is_file():
        evaluation.append(
            f'<p class="note">No {_e(ckpt.EVAL_FILE)} in this run yet, so no test metrics. '
            f"Compute them with <code>{_e(eval_cmd)}</code> and rebuild the report with "
            f"<code>{_e(f'vaekit report {run}')}</code>.</p>"
        )
    evaluation.append("</section>")

    body = [header, "".join(evaluation)]
    for fig in figures:
        body.append(_figure_html(fig, pictures.get(fig.key), notes.get(fig.key)))
    body.append(_scores_html(run, run_dir, pictures))
    config_text = (run_dir / ckpt.CONFIG_FILE).read_text()
    body.append(
        '<section id="config"><h2>Configuration</h2>'
        f"<p>The resolved <code>{_e(ckpt.CONFIG_FILE)}</code> of the run; retrain with "
        f"<code>{_e(f'vaekit train {run}/{ckpt.CONFIG_FILE} --run-dir NEW_RUN')}</code>.</p>"
        f'<pre class="config">{_e(config_text)}</pre></section>'
    )
    from vaekit import __version__

    body.append(
        f"<footer>Written by vaekit {_e(__version__)} with report seed {s.seed}. "
        "Every picture is embedded in this file; it needs no network.</footer>"
    )
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(f'VAE report: {name}')}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
    out = run_dir / REPORT_FILE
    atomic_write_text(out, page)
    return out
