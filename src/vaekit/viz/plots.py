"""Charts of numbers about a run: training curves, KL per latent dimension, anomaly scores.

Figures are built with ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot
state), so they draw the same way in tests, threads and headless machines. Every function
returns PNG bytes; :func:`save_png` writes them atomically.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaekit.atomic import atomic_write_bytes

DPI = 150  # figures are sized in inches for 100 px per inch on screen; 1.5x for sharpness
NATS = "nats per example"

P = ParamSpec("P")
R = TypeVar("R")

# The matplotlib defaults are a little small for a figure shown at page width.
_RC = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
}


def styled(func: Callable[P, R]) -> Callable[P, R]:
    """Run a plotting function under this module's font sizes (rc settings apply at creation)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(_RC):
            return func(*args, **kwargs)

    return wrapper


def style_axes(ax: Axes) -> None:
    """Light grid behind the data and no top/right frame lines."""
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a figure to PNG bytes (no timestamp metadata, so output is repeatable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def save_png(data: bytes, path: str | Path) -> Path:
    """Write PNG bytes to ``path`` atomically and return the path."""
    atomic_write_bytes(path, data)
    return Path(path)


# --------------------------------------------------------------------------- curves

# (metric, panel title, y-axis unit) of each panel of the training curves.
CURVE_PANELS = (
    ("elbo", "ELBO (higher is better)", NATS),
    ("recon", "Reconstruction  \u2212log p(x|z)", NATS),
    ("kl", "KL(q(z|x) \u2016 p(z))", NATS),
)
# A VQ-VAE's KL is the constant H W log K while it trains; what moves is the commitment
# and how many codes are in use.
VQ_CURVE_PANELS = (
    ("recon", "Reconstruction  \u2212log p(x|z_q)", NATS),
    (
        "commitment",
        "Commitment  \u2016z_e \u2212 sg(z_q)\u2016\u00b2",
        "squared distance per example",
    ),
    ("perplexity", "Code perplexity", "effective number of codes"),
)


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and finite values of ``key`` over the records that have it."""
    xs, ys = [], []
    for r in records:
        value = r.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            xs.append(r["epoch"])
            ys.append(float(value))
    return np.asarray(xs), np.asarray(ys)


@styled
def training_curves(
    records: Sequence[Mapping[str, Any]],
    panels: Sequence[tuple[str, str, str]] = CURVE_PANELS,
) -> bytes:
    """PNG of train and validation ELBO, reconstruction and KL per epoch (metrics.jsonl records).

    Series missing from the records are left out; records without an ``epoch`` or holding
    none of the curve keys raise ValueError naming what is missing.
    """
    if not records:
        raise ValueError("no metrics records to plot (metrics.jsonl is empty or missing)")
    for i, r in enumerate(records):
        if not isinstance(r, Mapping) or "epoch" not in r:
            raise ValueError(f"metrics record {i + 1} has no 'epoch' key")
    keys = [f"{split}/{name}" for name, _, _ in panels for split in ("train", "val")]
    if not any(k in r for r in records for k in keys):
        raise ValueError(f"metrics records hold none of the curve keys {', '.join(keys)}")
    fig, axes = _figure(9.4, 3.4, ncols=len(panels))
    many = len(records) > 30
    for ax, (name, title, unit) in zip(axes, panels, strict=True):
        drawn = False
        for split, label, colour in (("train", "train", "C0"), ("val", "validation", "C1")):
            x, y = _series(records, f"{split}/{name}")
            if len(x):
                ax.plot(x, y, color=colour, label=label, marker=None if many else "o", ms=4)
                drawn = True
        if not drawn:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        style_axes(ax)
        if drawn:
            ax.legend(frameon=False)
    return figure_png(fig)


# --------------------------------------------------------------------------- KL per dim


@styled
def kl_per_dimension_plot(
    kl: Sequence[float],
    *,
    dims: Sequence[int] | None = None,
    active: Sequence[bool] | None = None,
    active_rule: str = "Cov_x E[z] > 0.01",
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> bytes:
    """PNG bar chart of the mean KL of each latent dimension, sorted from most to least.

    ``dims`` names the bars "z<d>" (default 0..D-1, the index of each value in ``kl``), or
    ``labels`` names them outright (a ladder VAE's "z<layer>[<d>]"); ``active`` (aligned with
    ``kl``) colours active units apart from inactive ones. ``title`` replaces the default.
    """
    values = np.asarray(list(kl), dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError("kl must hold one value per latent dimension")
    names = list(range(values.size)) if dims is None else [int(d) for d in dims]
    names = [f"z{n}" for n in names] if labels is None else [str(t) for t in labels]
    if len(names) != values.size:
        raise ValueError(f"{len(names)} dims for {values.size} KL values")
    if active is not None and len(active) != values.size:
        raise ValueError(f"{len(active)} active flags for {values.size} KL values")
    order = sorted(range(values.size), key=lambda i: -values[i])
    values = values[order]
    names = [names[i] for i in order]
    flags = None if active is None else [bool(active[i]) for i in order]
    d = values.size
    fig, (ax,) = _figure(min(9.4, max(5.5, 0.22 * d + 2.5)), 3.8)
    x = np.arange(d)
    if flags is None:
        ax.bar(x, values, color="C0")
    else:
        colours = ["C0" if f else "0.7" for f in flags]
        ax.bar(x, values, color=colours)
        from matplotlib.patches import Patch

        n_active = sum(flags)
        ax.legend(
            handles=[
                Patch(color="C0", label=f"active ({n_active}): {active_rule}"),
                Patch(color="0.7", label=f"inactive ({d - n_active})"),
            ],
            loc="upper right",
            frameon=False,
        )
    step = max(1, math.ceil(d / 40))
    rotate = d > 12 or (d > 6 and labels is not None)  # "z1[3]" is wider than "z3"
    ax.set_xticks(x[::step], names[::step], rotation=90 if rotate else 0)
    ax.set_xlim(-0.6, d - 0.4)
    ax.set_ylim(0, max(float(values.max()), 1e-3) * (1.3 if flags is not None else 1.08))
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("KL (nats, mean per example)")
    ax.set_title(
        title or f"KL per latent dimension: total {values.sum():.2f} nats over {d} dimensions"
    )
    style_axes(ax)
    ax.grid(False, axis="x")
    return figure_png(fig)


# --------------------------------------------------------------------------- scores


@styled
def score_histogram(
    scores_by_name: Mapping[str, Sequence[float] | np.ndarray],
    auroc: float | None = None,
    *,
    xlabel: str = "anomaly score: \u2212ELBO or IW-NLL (nats, higher = more anomalous)",
    bins: int = 60,
) -> bytes:
    """PNG of overlaid, normalised histograms of anomaly scores, one per dataset, AUROC in title.

    All histograms share their bins; the range spans the 0.5th to 99.5th percentile of all
    scores so that a few extreme values do not squash the rest (they fall outside the bins).
    """
    arrays = {}
    for name, values in scores_by_name.items():
        a = np.asarray(values, dtype=float).ravel()
        a = a[np.isfinite(a)]
        if a.size == 0:
            raise ValueError(f"scores for {name!r} are empty (or all non-finite)")
        arrays[name] = a
    if not arrays:
        raise ValueError("no score sets to plot")
    everything = np.concatenate(list(arrays.values()))
    lo, hi = np.percentile(everything, [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig, (ax,) = _figure(8.0, 4.2)
    top = 0.0
    for i, (name, a) in enumerate(arrays.items()):
        colour = f"C{i % 10}"
        heights, _, _ = ax.hist(a, bins=edges, density=True, alpha=0.35, color=colour)
        top = max(top, float(np.max(heights)))
        ax.hist(
            a,
            bins=edges,
            density=True,
            histtype="step",
            color=colour,
            linewidth=1.5,
            label=f"{name} (n={a.size}, median {np.median(a):.1f})",
        )
    title = "Anomaly scores"
    if auroc is not None:
        title += f": AUROC {auroc:.3f}"
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_ylim(0, top * (1.2 + 0.12 * len(arrays)))  # headroom for the legend
    ax.legend(frameon=False)
    style_axes(ax)
    return figure_png(fig)
