"""Pictures of a VQ-VAE's discrete codes: how evenly the codebook is used, and what each
code covers in an image.

A VQ-VAE (van den Oord et al. 2017) encodes an image to a small map of indices into a
codebook of K vectors. Two questions come up first: are the codes used at all (dead codes
waste capacity; perplexity exp(H) of the usage distribution is the effective number of
codes), and do codes mean something (a code map that follows the strokes or parts of the
image reads as regions).
"""

from __future__ import annotations

import colorsys
import io
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image, ImageDraw

from vaekit.viz.grid import grid_array, label_font, tile_layout
from vaekit.viz.plots import figure_png, save_png, style_axes, styled

USAGE_FIGSIZE = (8.0, 4.2)  # inches; the PNG is this times plots.DPI pixels
USED = "C0"
UNUSED = "#f2c4c4"  # a light warm red: dead codes are a problem worth seeing

GOLDEN = (math.sqrt(5) - 1) / 2  # hue step; consecutive indices land far apart on the wheel
PAIR_GAP = 3  # grey pixels between pairs (before scaling); one pixel inside a pair


# --------------------------------------------------------------------------- usage


@styled
def code_usage_plot(
    counts: torch.Tensor,
    *,
    usage: float,
    perplexity: float,
    title: str = "Codebook usage on the test set",
) -> bytes:
    """PNG of how often each code is used, codes sorted from most to least used (log scale).

    ``counts`` [K] holds the number of code-map positions assigned to each code; ``usage``
    (fraction of codes used) and ``perplexity`` go in the title as given. Unused codes
    cannot stand on a log axis, so their ranks are shaded and counted instead.
    """
    values = torch.as_tensor(counts).detach().cpu().double().numpy()
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"counts must be one number per code, shape [K]; got {values.shape}")
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise ValueError("counts must be finite and non-negative")
    total = values.sum()
    if total <= 0:
        raise ValueError("counts are all zero: no code was used, nothing to plot")
    k = values.size
    share = np.sort(values)[::-1] / total
    used = int((share > 0).sum())
    ranks = np.arange(1, k + 1)

    fig = Figure(figsize=USAGE_FIGSIZE, layout="constrained")
    ax = fig.add_subplot()
    ax.bar(ranks[:used], share[:used], width=0.85 if k <= 64 else 1.0, color=USED, linewidth=0)
    ax.set_yscale("log")
    low, high = min(share[used - 1], 1 / k) / 3, share[0] * 4  # headroom for the legend
    ax.set_ylim(low, high)
    ax.set_xlim(0.5, k + 0.5)
    handles = [Patch(color=USED, label=f"used ({used})")]
    uniform = ax.axhline(1 / k, color="0.35", linestyle="--", linewidth=1.2)
    uniform.set_label(f"uniform use, 1/K = {1 / k:.3g}")
    handles.append(uniform)
    if used < k:
        ax.axvspan(used + 0.5, k + 0.5, color=UNUSED, linewidth=0, zorder=0)
        handles.append(Patch(color=UNUSED, label=f"unused ({k - used})"))
        if k - used >= 0.08 * k:  # a narrow band has no room; the legend still gives the count
            # Low in the band, unless the uniform line runs there; the legend holds the top.
            line_at = math.log(1 / (k * low)) / math.log(high / low)  # 1/K in axes fraction
            ax.text(
                (used + k + 1) / 2,
                0.15 if abs(line_at - 0.15) > 0.12 else 0.45,
                f"{k - used}\nunused",
                ha="center",
                va="center",
                color="#8a2b2b",
                transform=ax.get_xaxis_transform(),
            )
    ax.legend(handles=handles, loc="upper right", frameon=True, framealpha=0.9)
    ax.set_xlabel("code rank (sorted by use; 1 = most used)")
    ax.set_ylabel("share of code-map positions")
    ax.set_title(
        f"{title}\nused {used} of {k} codes ({usage:.1%}), perplexity {perplexity:.1f} of {k}"
    )
    style_axes(ax)
    ax.grid(False, axis="x")
    return figure_png(fig)


def save_code_usage(
    counts: torch.Tensor,
    out: str | Path,
    *,
    usage: float,
    perplexity: float,
    title: str = "Codebook usage on the test set",
) -> Path:
    """Write :func:`code_usage_plot` to ``out`` atomically; returns the path."""
    return save_png(code_usage_plot(counts, usage=usage, perplexity=perplexity, title=title), out)


# --------------------------------------------------------------------------- code maps


def code_palette(num_codes: int) -> torch.Tensor:
    """[K, 3] colours in [0, 1], the same every call, with neighbouring indices far apart.

    Hues step round the wheel by the golden ratio; saturation and brightness cycle through
    three levels so that codes with near hues still differ. Values are multiples of 1/255,
    so a PNG carries them exactly, and no two rows are equal.
    """
    if num_codes < 1:
        raise ValueError(f"num_codes must be at least 1, got {num_codes}")
    levels = ((0.80, 0.95), (0.55, 0.85), (0.95, 0.65))  # (saturation, value)
    rows: list[tuple[int, int, int]] = []
    seen: set[tuple[int, int, int]] = set()
    i = 0
    while len(rows) < num_codes:
        s, v = levels[i % len(levels)]
        rgb = colorsys.hsv_to_rgb((i * GOLDEN) % 1.0, s, v)
        q = tuple(round(255 * c) for c in rgb)
        i += 1
        if q not in seen:  # rounding to 8 bits may collide for large K: skip to the next
            seen.add(q)
            rows.append(q)
    return torch.tensor(rows, dtype=torch.float32) / 255


def _check_pairs(images: torch.Tensor, codes: torch.Tensor, num_codes: int) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C 1 or 3, got {tuple(images.shape)}")
    if codes.ndim != 3:
        raise ValueError(f"codes must be [N, h, w] indices, got shape {tuple(codes.shape)}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"codes must be integer indices, got dtype {codes.dtype}")
    if images.shape[0] != codes.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {codes.shape[0]} code maps")
    if images.shape[0] == 0:
        raise ValueError("no images to draw")
    if num_codes < 1:
        raise ValueError(f"num_codes must be at least 1, got {num_codes}")
    lo, hi = int(codes.min()), int(codes.max())
    if lo < 0 or hi >= num_codes:
        raise ValueError(f"codes must lie in [0, {num_codes}), found values in [{lo}, {hi}]")
    if codes.shape[1] > images.shape[2] or codes.shape[2] > images.shape[3]:
        raise ValueError(
            f"code map {tuple(codes.shape[1:])} is larger than the images {tuple(images.shape[2:])}"
        )


def _cells(n_cells: int, n_pixels: int, scale: int) -> np.ndarray:
    """Code cell of each output pixel along one axis: nearest-neighbour upsampling to
    ``n_pixels`` (as ``F.interpolate(mode="nearest")``), then ``scale`` copies of each."""
    return np.repeat(np.arange(n_pixels) * n_cells // n_pixels, scale)


def _code_tile(
    codes: torch.Tensor, palette: np.ndarray, size: tuple[int, int], scale: int
) -> np.ndarray:
    """[H*scale, W*scale, 3] uint8 code map with thin darker lines between cells."""
    rows = _cells(codes.shape[0], size[0], scale)
    cols = _cells(codes.shape[1], size[1], scale)
    tile = palette[codes.numpy()[rows[:, None], cols[None, :]]]
    cell_px = min(size[0] * scale // codes.shape[0], size[1] * scale // codes.shape[1])
    if cell_px >= 6:  # a line on a smaller cell would hide too much of its colour
        edge = np.zeros(tile.shape[:2], dtype=bool)
        edge[1:] |= (rows[1:] != rows[:-1])[:, None]
        edge[:, 1:] |= (cols[1:] != cols[:-1])[None, :]
        tile[edge] = (tile[edge] * 0.7).astype(np.uint8)
    return tile


def codes_as_colour_png(
    images: torch.Tensor,
    codes: torch.Tensor,
    num_codes: int,
    *,
    scale: int = 3,
    pairs_per_row: int = 4,
    header: bool = True,
) -> bytes:
    """PNG of image / code-map pairs: each input beside its codes, coloured by code index.

    ``images`` [N, C, H, W] in [0, 1] (C = 1 or 3), ``codes`` [N, h, w] in [0, K). The code
    map is upsampled (nearest) to H x W, so each code covers the patch it encodes; the
    picture is scaled up by ``scale`` (nearest) so that cells are legible, and ``header``
    puts "input" and "codes" above the first row of pairs.
    """
    _check_pairs(images, codes, num_codes)
    if scale < 1 or pairs_per_row < 1:
        raise ValueError(f"scale and pairs_per_row must be >= 1, got {scale}, {pairs_per_row}")
    n, _, h, w = images.shape
    palette = (code_palette(num_codes) * 255).round().to(torch.uint8).numpy()
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    pixels = pixels.expand(n, 3, h, w).permute(0, 2, 3, 1).numpy()  # grey -> RGB
    codes = codes.detach().long().cpu()
    sep = np.full((h * scale, scale, 3), 128, dtype=np.uint8)
    pairs = []
    for i in range(n):
        image = pixels[i].repeat(scale, axis=0).repeat(scale, axis=1)
        pairs.append(np.concatenate([image, sep, _code_tile(codes[i], palette, (h, w), scale)], 1))
    tiles = torch.from_numpy(np.stack(pairs)).permute(0, 3, 1, 2).float() / 255
    cols = min(pairs_per_row, n)
    pad = PAIR_GAP * scale
    array = grid_array(tiles, nrow=cols, pad=pad)
    picture = Image.fromarray(array)
    if header:
        lefts = tile_layout(n, h * scale, tiles.shape[3], cols, pad)[1]
        picture = _with_header(picture, lefts, w * scale, scale)
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def _with_header(picture: Image.Image, lefts: list[int], w: int, sep: int) -> Image.Image:
    """Add a white strip naming the two halves of each pair (left out if the words won't fit)."""
    font = label_font(13)
    words = ("input", "codes")
    widest = max(font.getbbox(t)[2] - font.getbbox(t)[0] for t in words)
    if widest > w:
        return picture
    strip = font.getbbox("Ag")[3] + 10
    canvas = Image.new("RGB", (picture.width, picture.height + strip), (255, 255, 255))
    canvas.paste(picture, (0, strip))
    draw = ImageDraw.Draw(canvas)
    for left in lefts:
        for half, text in enumerate(words):
            x = left + half * (w + sep) + w / 2
            draw.text((x, strip - 4), text, fill=(30, 30, 30), font=font, anchor="ms")
    return canvas


def save_codes_as_colour(
    images: torch.Tensor,
    codes: torch.Tensor,
    num_codes: int,
    out: str | Path,
    *,
    scale: int = 3,
    pairs_per_row: int = 4,
    header: bool = True,
) -> Path:
    """Write :func:`codes_as_colour_png` to ``out`` atomically; returns the path."""
    png = codes_as_colour_png(
        images, codes, num_codes, scale=scale, pairs_per_row=pairs_per_row, header=header
    )
    return save_png(png, out)
