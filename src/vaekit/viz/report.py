"""One self-contained HTML page that explains a trained VAE: numbers, curves and pictures.

:func:`build_report` is the whole ``vaekit report RUN`` command: it loads the run and its
test data, draws every picture into ``RUN/pictures/`` and writes ``RUN/report.html`` with
:func:`write_report`. The page needs nothing but itself: each image is inlined as a base64
``data:`` URI and the style sheet is inline, so it opens offline and can be mailed around.

The pictures come from :mod:`vaekit.viz.figures`, anomaly scores from :mod:`vaekit.viz.scores`.
A ladder VAE's report has the VAE's pictures, with one traversal picture per layer, its
captions and numbers per layer where the layers differ, and a note in place of the manifold.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vaekit.atomic import atomic_write_text
from vaekit.errors import RunError
from vaekit.models import VQVAE, HierarchicalVAE
from vaekit.train import checkpoint as ckpt
from vaekit.train.logging import read_metrics
from vaekit.viz.animation import frame_paths, training_gif
from vaekit.viz.figures import (
    LADDER_SKIPS,
    PICTURES,
    ReportSettings,
    draw_code_usage,
    draw_codes,
    draw_curves,
    draw_interpolation,
    draw_kl_per_dimension,
    draw_manifold,
    draw_reconstructions,
    draw_samples,
    draw_scatter,
    draw_traversals,
    layer_traversal_key,
    load_test_split,
    picture_name,
    posterior_summary,
)
from vaekit.viz.latents import (
    LatentSummary,
)
from vaekit.viz.plots import DPI
from vaekit.viz.scores import read_scores, save_score_histogram, score_picture_name

REPORT_FILE = "report.html"

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
        return pictures_dir / picture_name(key)

    if isinstance(model, VQVAE):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s.seed)
            out, notes = _draw_vq_pictures(model, run_dir, data, s, pic)
        return write_report(run_dir, pictures=out, settings=s, notes=notes)
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
        ladder = isinstance(model, HierarchicalVAE)
        if model.latent_dim == 2 and not ladder:
            out["manifold"] = draw_manifold(model, pic("manifold"), n=s.manifold_n)
        for layer in range(1, len(model.latent_dims) + 1) if ladder else [None]:
            key = "traversals" if layer is None else layer_traversal_key(layer)
            out[key] = draw_traversals(
                model,
                pic(key),
                dims=s.traversal_dims,
                seed=s.seed,
                data=data,
                summary=summary,
                layer=layer,
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


def _draw_vq_pictures(
    model: VQVAE, run_dir: Path, data: Any, s: ReportSettings, pic: Any
) -> tuple[dict[str, Path], dict[str, str]]:
    """The VQ-VAE's pictures: curves, prior samples, reconstructions and its codes."""
    out: dict[str, Path] = {}
    notes: dict[str, str] = {}
    if read_metrics(run_dir / ckpt.METRICS_FILE):
        out["curves"] = draw_curves(run_dir, pic("curves"))
    else:
        notes["curves"] = f"{ckpt.METRICS_FILE} is empty or missing."
    if model.code_prior is not None:
        out["samples"] = draw_samples(
            model, pic("samples"), n=s.samples, temperature=s.temperature, seed=s.seed
        )
    else:
        notes["samples"] = (
            "this VQ-VAE has no prior over codes yet; fit one with "
            f"`vaekit train-prior {shlex.quote(str(run_dir))}` and rebuild the report."
        )
    out["reconstructions"] = draw_reconstructions(
        model, pic("reconstructions"), n=s.reconstructions, seed=s.seed, data=data
    )
    out["code_usage"] = draw_code_usage(model, pic("code_usage"), seed=s.seed, data=data)
    out["codes"] = draw_codes(model, pic("codes"), n=s.code_maps, seed=s.seed, data=data)
    return out, notes


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
    "prior_nll": ("prior NLL \u2212log p(z_q) (learned prior)", "nats"),
    "prior_bits_per_code": ("prior NLL per code position", "bits"),
    "nll_upper_bound_uniform_prior": ("NLL upper bound with a uniform prior", "nats"),
    "uniform_prior_nll": ("uniform prior cost H\u00b7W\u00b7log K", "nats"),
    "mse_per_pixel": ("squared error of the reconstruction", "per pixel, [0, 1] scale"),
    "codes_used": ("codes used on the test set", "of K"),
    "code_usage": ("codebook usage", "fraction of K"),
    "perplexity": ("code perplexity", "effective number of codes"),
    "active_units": ("active units", "of D"),
    "mutual_information": ("mutual information I(x; z)", "nats"),
    "mi": ("mutual information I(x; z)", "nats"),
}
# Numbers about how a metric was computed rather than about the model: shown under the
# table as settings, not as table rows.
SETTING_KEYS = {
    "seed",
    "num_codes",
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


# A ladder VAE's per-layer numbers, "kl_z2" and "active_units_z2": (metric, layer).
_LAYER_METRIC = re.compile(r"(kl|active_units)_z(\d+)")


def _metrics_table(
    result: Mapping[str, Any], latent_dim: int, layer_dims: tuple[int, ...] = ()
) -> str:
    flat = _flat_scalars(result)

    def leaf(key: str) -> str:
        return key.rsplit(".", 1)[-1]

    def per_layer(key: str) -> tuple[str, int]:
        """(the metric, the layer) of a per-layer key, else (the key's leaf, 0)."""
        match = _LAYER_METRIC.fullmatch(leaf(key))
        return (match.group(1), int(match.group(2))) if match else (leaf(key), 0)

    numeric = {
        k: v
        for k, v in flat.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and leaf(k) not in SETTING_KEYS
    }
    rank = {name: i for i, name in enumerate(METRIC_LABELS)}
    keys = sorted(numeric, key=lambda k: (rank.get(per_layer(k)[0], len(rank)), per_layer(k), k))
    top_layer = next((v for k, v in flat.items() if leaf(k) == "mi_layer"), None)
    rows = []
    for key in keys:
        label, unit = METRIC_LABELS.get(leaf(key), (key, ""))
        metric, layer = per_layer(key)
        if leaf(key) == "iw_nll" and "iw_k" in flat:
            label = f"IW-NLL (K = {flat['iw_k']})"
        if leaf(key) == "active_units":
            unit = f"of {latent_dim}"
        if layer and metric == "kl":
            label, unit = f"KL of layer z{layer}", "nats"
        if layer and metric == "active_units":
            label = f"active units of layer z{layer}"
            unit = f"of {layer_dims[layer - 1]}" if layer <= len(layer_dims) else ""
        if leaf(key) in ("mutual_information", "mi") and isinstance(top_layer, str):
            label = f"mutual information I(x; {top_layer}), the top layer"
        if unit in ("of K", "fraction of K") and "num_codes" in flat:
            unit = unit.replace("K", f"K = {flat['num_codes']}")
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


def _sample_command(run: str, s: ReportSettings) -> str:
    return (
        f"vaekit sample {run} -n {s.samples} --temperature {s.temperature:g} --seed {s.seed} "
        f"-o {run}/{ckpt.PICTURES_DIR}/{PICTURES['samples']}"
    )


def _reconstruct_command(run: str, s: ReportSettings) -> str:
    return (
        f"vaekit reconstruct {run} -n {s.reconstructions} --seed {s.seed} "
        f"-o {run}/{ckpt.PICTURES_DIR}/{PICTURES['reconstructions']}"
    )


def _vq_figures(run: str, cfg: Any, s: ReportSettings) -> list[_Figure]:
    """A VQ-VAE report's pictures in page order: what each shows and how to redraw it."""
    p = f"{run}/{ckpt.PICTURES_DIR}"
    seed = f"--seed {s.seed}"
    k = cfg.model.quantizer.num_codes
    return [
        _Figure(
            "curves",
            "Training curves",
            "Train and validation reconstruction, commitment and code perplexity per epoch; "
            "a perplexity that falls towards a handful of codes means the codebook is "
            "collapsing, a growing train/validation gap means overfitting.",
            f"vaekit curves {run} -o {p}/{PICTURES['curves']}",
            False,
        ),
        _Figure(
            "samples",
            "Samples from the learned prior",
            f"{s.samples} code maps drawn from the autoregressive prior over codes at "
            f"temperature {s.temperature:g}, each decoded to the mean of p(x|z_q); look for "
            "variety and for objects a person would recognise.",
            _sample_command(run, s),
            True,
        ),
        _Figure(
            "reconstructions",
            "Reconstructions of test images",
            "Each row of test images sits above its reconstruction from its nearest codes; "
            "what survives quantization is what the codes can say.",
            _reconstruct_command(run, s),
            True,
        ),
        _Figure(
            "code_usage",
            "Codebook usage",
            f"How often each of the {k} codes is chosen over the test set's code maps, most "
            "used first; unused (dead) codes are shaded. Perplexity is the effective number "
            "of codes: the closer to K, the more evenly the codebook is used.",
            f"vaekit code-usage {run} {seed} -o {p}/{PICTURES['code_usage']}",
            False,
        ),
        _Figure(
            "codes",
            "Codes as colours",
            f"{s.code_maps} test images beside their code maps, one colour per code: regions "
            "of one colour are parts of images the model describes with the same code, such "
            "as background.",
            f"vaekit codes {run} -n {s.code_maps} {seed} -o {p}/{PICTURES['codes']}",
            True,
        ),
    ]


_PRIOR_NAMES = {"mog": "learned mixture of Gaussians", "vamp": "VampPrior"}


def _figures(run: str, cfg: Any, s: ReportSettings, summary: LatentSummary | None) -> list[_Figure]:
    """The pictures of the report in page order: what each shows and how to redraw it."""
    if cfg.model.kind == "vqvae":
        return _vq_figures(run, cfg, s)
    if cfg.model.kind == "hvae":
        return _ladder_figures(run, cfg, s, summary)
    return _vae_figures(run, cfg, s, summary)


def _latent_width(cfg: Any) -> int:
    """Latent dimensions in all: a ladder VAE's sum over its layers, else model.latent_dim."""
    return sum(cfg.model.latent_dims) if cfg.model.kind == "hvae" else cfg.model.latent_dim


def _vae_figures(
    run: str, cfg: Any, s: ReportSettings, summary: LatentSummary | None
) -> list[_Figure]:
    """The pictures of a VAE with Gaussian latents, in page order."""
    p = f"{run}/{ckpt.PICTURES_DIR}"
    d = _latent_width(cfg)
    shown = min(d, s.traversal_dims)
    seed = f"--seed {s.seed}"
    active = "" if summary is None else f" ({int(summary.active.sum())} of {d} active here)"
    normal = cfg.model.prior == "standard_normal"
    prior = "N(0, I)" if normal else f"p(z) (the {_PRIOR_NAMES[cfg.model.prior]})"
    spread = ""
    if normal and summary is not None and d == 2 and len(summary.means) > 1:
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
            f"Mean KL(q(z_d|x) \u2016 {'N(0,1)' if normal else 'p(z_d)'}) of each of the {d} "
            f"latent dimensions{'' if normal else ' (p(z_d): the prior marginal)'} over the "
            f"test set, largest first; dimensions near 0 nats are inactive, unused by the "
            f"decoder{active}.",
            f"vaekit report {run} {seed}",
            False,
        ),
        _Figure(
            "samples",
            "Samples from the prior",
            f"{s.samples} images decoded from z ~ {prior} at temperature {s.temperature:g}, "
            "each the mean of p(x|z) rather than a noisy draw; look for variety and for "
            "objects a person would recognise.",
            _sample_command(run, s),
            True,
        ),
        _Figure(
            "reconstructions",
            "Reconstructions of test images",
            "Each row of test images sits above its reconstruction from the posterior mean; "
            "look for what the model keeps (shape, pose) and what it blurs away (fine detail).",
            _reconstruct_command(run, s),
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
            f"at {'standard-normal' if normal else 'prior marginal'} quantiles from 5% to 95% "
            "(z1 grows to the right, z2 upward); "
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


def _ladder_figures(
    run: str, cfg: Any, s: ReportSettings, summary: LatentSummary | None
) -> list[_Figure]:
    """A ladder VAE's pictures: the VAE's, with captions that say which layers each shows,
    and one traversal picture per layer in place of the one."""
    p = f"{run}/{ckpt.PICTURES_DIR}"
    dims = list(cfg.model.latent_dims)
    top = f"z{len(dims)}"
    names = ", ".join(f"z{i} ({d})" for i, d in enumerate(dims, start=1))
    active = {}
    if summary is not None and summary.layer_dims:
        active = {
            i: f"{int(summary.active[sl].sum())} of {d} active here"
            for i, (sl, d) in enumerate(zip(summary.layer_slices, dims, strict=True), start=1)
        }
    captions = {
        "kl": f"Mean KL of each latent dimension over the test set, largest first, named "
        f"z<layer>[<dim>] over the layers {names}: for the top layer {top} the KL to the "
        f"prior, for a lower layer z_i the KL to its conditional prior p(z_i | z_i+1), both "
        "the terms of the ELBO (the totals per layer are in the title). A top-layer dimension "
        "near 0 nats carries no information about x; a lower-layer one near 0 adds nothing "
        "to what the layer above says, yet may still pass that on to the decoder (see its "
        "traversals).",
        "samples": f"{s.samples} images decoded from ancestral draws: {top} from the prior, "
        f"then each lower layer from p(z_i | z_i+1), all at temperature {s.temperature:g}; "
        "each image is the mean of p(x|z1). Look for variety and for objects a person would "
        "recognise.",
        "reconstructions": "Each row of test images sits above its reconstruction: the "
        "posterior means taken layer by layer from the top down, z1 decoded. Look for what "
        "the model keeps (shape, pose) and what it blurs away (fine detail).",
        "interpolation_linear": f"Each row walks a straight line in z1, the layer the decoder "
        f"reads, between the posterior means of two test images in {s.steps} steps, with the "
        "originals at both ends; the end points decode to the reconstructions. In a smooth "
        "latent space every step is a plausible image and the change is gradual.",
        "interpolation_slerp": "The same pairs along a great-circle arc in z1 (White 2016). "
        "z1's prior is conditional on the layers above, not N(0, I), so the arc has less "
        "reason to beat the straight line here than in a one-layer VAE.",
        "scatter": "Posterior means of test images over all layers [z1 .. "
        f"{top}] (the mean path), projected on their two principal components and coloured "
        "by class; classes the encoder separates without ever seeing a label form their own "
        "clusters.",
    }
    figures = []
    for fig in _vae_figures(run, cfg, s, summary):
        if fig.key == "manifold":  # never drawn: a note says why, and no command draws it
            figures.append(replace(fig, command=""))
        elif fig.key != "traversals":
            figures.append(replace(fig, caption=captions.get(fig.key, fig.caption)))
        for i, d in enumerate(dims if fig.key == "traversals" else [], start=1):
            key = layer_traversal_key(i)
            shown = min(d, s.traversal_dims)
            what = f"; {active[i]}" if i in active else ""
            below = (
                "z1 is the layer the decoder reads"
                if i == 1
                else "the layers below follow as the means of their conditional priors, so a "
                "row shows what the dimension means to the generative model"
            )
            figures.append(
                _Figure(
                    key,
                    f"Latent traversals of layer z{i}",
                    f"Each row sets one dimension of z{i} from \u22123\u03c3 to +3\u03c3 about "
                    "the mean of its posterior means over the test images (\u03c3, their "
                    f"standard deviation, beside the row) while the rest of z{i} stays at a "
                    f"test image's posterior mean; {below}. Rows sorted by KL ({shown} of {d} "
                    f"dimensions{what}). A dimension whose row does not change is unused; "
                    + (
                        "one that changes the image with a KL near 0 carries what the layer "
                        "above decided."
                        if i < len(dims)
                        else "an active one changes the image in one consistent way."
                    ),
                    f"vaekit traverse {run} --layer {i} --dims {s.traversal_dims} "
                    f"--seed {s.seed} -o {p}/{picture_name(key)}",
                    True,
                )
            )
    return figures


def _figure_html(fig: _Figure, path: Path | None, note: str | None) -> str:
    parts = [f'<section id="{_e(fig.key)}"><h2>{_e(fig.title)}</h2>']
    if path is not None and path.is_file():
        parts.append(
            f"<figure>{_img(path, fig.title, fig.pixels)}<figcaption>{_e(fig.caption)}"
            f'<code class="cmd">{_e(fig.command)}</code></figcaption></figure>'
        )
    else:
        command = f" Command: <code>{_e(fig.command)}</code>" if fig.command else ""
        parts.append(
            f'<p class="note">Not drawn: {_e(note or "the picture file is missing.")}{command}</p>'
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
        if isinstance(auroc, int | float) and auroc < 0.5:
            caption += (
                f" Below 0.5 the model finds {dataset} more likely than its own test data, a "
                "known failure of likelihood-based detection on simpler images (Nalisnick "
                "et al. 2019): the score measures complexity as much as novelty."
            )
        options = "".join(
            f" --{flag} {info[key]}"
            for flag, key in (("split", "split"), ("iw", "iw_k"), ("limit", "limit"))
            if info.get(key) not in (None, "test")
        )
        command = f"vaekit score {run} --data {shlex.quote(dataset)}{options} -o scores.csv"
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
    for path in folder.glob("traversals_z*.png"):
        found[path.stem] = path
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
    if m.kind == "vqvae":
        _, h, w = config.image_shape or [1, 0, 0]
        prior = "learned prior" if (run_dir / ckpt.PRIOR_FILE).is_file() else "no prior yet"
        model_text = (
            f"VQ-VAE, {h // 4}\u00d7{w // 4} map of {m.quantizer.num_codes} codes of size "
            f"{m.quantizer.code_dim}, {prior}"
        )
    elif m.kind == "hvae":
        model_text = (
            f"{m.arch} ladder VAE, {len(m.latent_dims)} latent layers of "
            f"{', '.join(map(str, m.latent_dims))} dimensions (z1 first)"
        )
    else:
        model_text = f"{m.arch} VAE, {m.latent_dim}-D latent"
    kind = {"vqvae": "VQ-VAE", "hvae": "Hierarchical VAE"}.get(m.kind, "VAE")
    header = (
        f"<header><h1>{kind} report: {_e(name)}</h1>"
        f'<p class="meta">data: {_e(meta)} \u00b7 model: {_e(model_text)}, '
        f"{_e(m.likelihood)} likelihood \u00b7 "
        f"{_e(str(epochs))} epochs \u00b7 checkpoint {_e(when)}</p>"
        f'<p class="meta">run directory: <code>{_e(str(run_dir))}</code></p>'
    )
    figures = _figures(run, config, s, summary)
    if m.latent_dim != 2 and m.kind == "vae":
        notes.setdefault(
            "manifold",
            f"the manifold needs a 2-D latent space and this model has {m.latent_dim} "
            "dimensions (train with --set model.latent_dim=2 to see it).",
        )
    if m.kind == "hvae":
        notes.setdefault(
            "manifold",
            f"{LADDER_SKIPS['manifold']} (this one has layers of "
            f"{', '.join(map(str, m.latent_dims))} dimensions); its traversals show each "
            "layer instead.",
        )
    links = [("evaluation", "Evaluation")] + [(f.key, f.title) for f in figures]
    links += [("scores", "Anomaly scores"), ("config", "Configuration")]
    nav = " ".join(f'<a href="#{_e(k)}">{_e(t)}</a>' for k, t in links)
    header += f"<nav>{nav}</nav></header>"

    eval_path = run_dir / ckpt.EVAL_FILE
    evaluation = ['<section id="evaluation"><h2>Evaluation on the test set</h2>']
    eval_cmd = f"vaekit evaluate {run}" + (" --iw 1000" if m.kind != "vqvae" else "")
    result = None
    if eval_path.is_file():
        try:
            result = json.loads(eval_path.read_text())
        except (OSError, ValueError) as err:
            evaluation.append(f'<p class="note">{_e(f"{eval_path}: unreadable ({err}).")}</p>')
    if isinstance(result, dict):
        if isinstance(result.get("iw_k"), int):
            eval_cmd = f"vaekit evaluate {run} --iw {result['iw_k']}"
        layer_dims = tuple(m.latent_dims) if m.kind == "hvae" else ()
        evaluation.append(_metrics_table(result, _latent_width(config), layer_dims))
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
    title = f"{kind} report: {name}"
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>\n"
    )
    out = run_dir / REPORT_FILE
    atomic_write_text(out, page)
    return out
