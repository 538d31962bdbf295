"""The pictures of a trained run, one file each, as the command line and the report draw them.

Each ``draw_*`` takes a model from :func:`vaekit.load_run` (it carries ``.config``), an output
path, sizes and a seed; the test data and its posterior summary load on demand, or are passed
in once by the report. A ladder VAE (``model.kind = "hvae"``) draws every picture but the 2-D
manifold, with one traversal picture per layer (:func:`draw_traversals` with ``layer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vaekit.data import ImageData, load_dataset, to_model_input
from vaekit.errors import RunError
from vaekit.evaluate_vq import encode_dataset
from vaekit.models import VAE, VQVAE, HierarchicalVAE
from vaekit.models.quantizer import usage_and_perplexity
from vaekit.train import checkpoint as ckpt
from vaekit.train.logging import read_metrics
from vaekit.viz.animation import GIF_FILE
from vaekit.viz.codes import save_code_usage, save_codes_as_colour
from vaekit.viz.grid import save_grid, save_pairs
from vaekit.viz.latents import (
    ACTIVE_THRESHOLD,
    LatentSummary,
    Mode,
    save_interpolation,
    save_ladder_traversals,
    save_latent_scatter,
    save_manifold,
    save_traversals,
    summarize_posteriors,
)
from vaekit.viz.plots import (
    CURVE_PANELS,
    VQ_CURVE_PANELS,
    kl_per_dimension_plot,
    save_png,
    training_curves,
)

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
    "code_usage": "code_usage.png",
    "codes": "codes_as_colour.png",
}

# The pictures of the Gaussian latent space; a VQ-VAE has codes instead (code_usage, codes).
VAE_ONLY = (
    "kl",
    "interpolation_linear",
    "interpolation_slerp",
    "manifold",
    "traversals",
    "scatter",
)
VQVAE_ONLY = ("code_usage", "codes")

# Pictures a ladder VAE has no version of, and why.
LADDER_SKIPS = {
    "manifold": "a decoded 2-D latent plane exists for a one-layer VAE with latent_dim = 2; "
    "a hierarchical VAE's images depend on all of its layers",
}


def layer_traversal_key(layer: int) -> str:
    """The picture key of a ladder VAE's traversals of one layer ("traversals_z2")."""
    return f"traversals_z{layer}"


def picture_name(key: str) -> str:
    """File name under RUN/pictures/ of a picture key: :data:`PICTURES`, or a ladder VAE's
    per-layer traversals, "traversals_z<layer>.png"."""
    if key in PICTURES:
        return PICTURES[key]
    if key.startswith("traversals_z") and key.removeprefix("traversals_z").isdigit():
        return f"{key}.png"
    raise KeyError(f"no picture named {key!r}")


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
    code_maps: int = 16


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
    return summarize_posteriors(model, x, seed=seed)


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
    require_kind(model, "manifold")
    return save_manifold(model, out, n=n)


def draw_traversals(
    model: VAE,
    out: str | Path,
    *,
    dims: int = 10,
    seed: int = 0,
    data: ImageData | None = None,
    summary: LatentSummary | None = None,
    layer: int | None = None,
) -> Path:
    """Traversals of the ``dims`` dimensions with the most KL on the test set, around the
    posterior mean of one seeded test image.

    A ladder VAE shows the ``dims`` of each layer with the most KL, every layer bottom first,
    or ``layer`` alone; a one-layer VAE has layer 1 only (RunError for another).
    """
    layers = _traversal_layers(model, layer)
    data = _or_test(model, data)
    summary = summary if summary is not None else posterior_summary(model, data, seed)
    if isinstance(model, HierarchicalVAE):
        rows = [(i, d) for i in layers for d in summary.layer_order(i)[: max(1, dims)]]
        return save_ladder_traversals(
            model, pick_images(data, 1, seed), out, rows=rows, summary=summary
        )
    return save_traversals(
        model,
        pick_images(data, 1, seed),
        out,
        order=summary.order(),
        max_dims=dims,
        kl_per_dim=summary.kl_per_dim,
    )


def _traversal_layers(model: VAE | HierarchicalVAE, layer: int | None) -> list[int]:
    """The latent layers a traversal picture shows: ``layer``, or all (RunError if no such)."""
    count = len(model.latent_dims) if isinstance(model, HierarchicalVAE) else 1
    if layer is None:
        return list(range(1, count + 1))
    if not 1 <= layer <= count:
        has = "layer 1 only (a one-layer VAE)" if count == 1 else f"layers 1..{count}"
        raise RunError(f"--layer {layer}: this model has latent {has}")
    return [layer]


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
        summary.means,
        data.labels,
        data.class_names,
        out,
        max_points=points,
        seed=seed,
        names=summary.latent_names() if summary.layer_dims else None,
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
    title = None
    if summary.layer_dims:
        per_layer = ", ".join(f"z{i} {kl:.2f}" for i, kl in enumerate(summary.layer_kl(), 1))
        total = float(summary.kl_per_dim.sum())
        title = f"KL per latent dimension: total {total:.2f} nats ({per_layer})"
    png = kl_per_dimension_plot(
        summary.kl_per_dim.tolist(),
        active=summary.active.tolist(),
        active_rule=f"Cov_x E[z] > {ACTIVE_THRESHOLD:g}",
        labels=summary.latent_names() if summary.layer_dims else None,
        title=title,
    )
    return save_png(png, out)


def draw_curves(run_dir: str | Path, out: str | Path) -> Path:
    """Train and validation curves of a run from its ``metrics.jsonl`` (RunError if none)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / ckpt.METRICS_FILE)
    if not records:
        raise RunError(f"{run_dir}: no training metrics ({ckpt.METRICS_FILE} empty or missing)")
    try:
        vq = any("train/perplexity" in r for r in records)
        png = training_curves(records, VQ_CURVE_PANELS if vq else CURVE_PANELS)
    except ValueError as err:
        raise RunError(f"{run_dir / ckpt.METRICS_FILE}: {err}") from None
    return save_png(png, out)


def require_kind(model: VAE | VQVAE | HierarchicalVAE, picture: str) -> None:
    """RunError when ``picture`` does not exist for this kind of model."""
    is_vq = isinstance(model, VQVAE)
    if is_vq and picture in VAE_ONLY:
        raise RunError(
            f"{picture}: a picture of a Gaussian latent space; this run is a VQ-VAE, whose "
            "latents are codes (see `vaekit codes` and `vaekit code-usage`)"
        )
    ladder = isinstance(model, HierarchicalVAE)
    if not is_vq and picture in VQVAE_ONLY:
        kind = "hierarchical VAE" if ladder else "VAE"
        raise RunError(f"{picture}: a picture of a VQ-VAE's codes; this run is a {kind}")
    if ladder and picture in LADDER_SKIPS:
        raise RunError(
            f"{picture}: {LADDER_SKIPS[picture]} (this run is one, latent_dims "
            f"{list(model.latent_dims)}); see `vaekit traverse --layer` for each layer"
        )


def draw_code_usage(
    model: VQVAE, out: str | Path, *, seed: int = 0, data: ImageData | None = None
) -> Path:
    """Histogram of how often each code is chosen on the test set, most used first."""
    require_kind(model, "code_usage")
    codes = encode_dataset(model, _or_test(model, data), seed=seed)
    counts = torch.bincount(codes.flatten(), minlength=model.num_codes)
    usage, perplexity = usage_and_perplexity(counts)
    return save_code_usage(counts, out, usage=usage, perplexity=perplexity)


def draw_codes(
    model: VQVAE, out: str | Path, *, n: int = 16, seed: int = 0, data: ImageData | None = None
) -> Path:
    """``n`` seeded test images, each beside its code map coloured one colour per code."""
    require_kind(model, "codes")
    x = pick_images(_or_test(model, data), n, seed)
    return save_codes_as_colour(x, model.encode_codes(x), model.num_codes, out)
