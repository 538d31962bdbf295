"""Image grids as PNG files: the basic picture every other figure is made of."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vaekit.atomic import atomic_write_bytes


def grid_array(
    images: torch.Tensor, nrow: int | None = None, pad: int = 2, row_group: int = 1
) -> np.ndarray:
    """Tile [N, C, H, W] images in [0, 1] into one uint8 array [rows*H, cols*W, C].

    Tiles are separated by ``pad`` pixels of mid grey so that black-background images
    still show where one ends and the next begins; after every ``row_group`` rows the gap
    is wider, so rows that belong together (an original above its reconstruction) read
    as a pair.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    gap = 3 * pad if row_group > 1 else 0
    tops = [pad + r * (h + pad) + (r // row_group) * gap for r in range(rows)]
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    out = np.full((tops[-1] + h + pad, cols * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, cols)
        y, x = tops[r], pad + col * (w + pad)
        out[y : y + h, x : x + w] = pixels[i].transpose(1, 2, 0)
    return out


def to_png_bytes(array: np.ndarray, scale: int = 1) -> bytes:
    """Encode an [H, W, C] uint8 array (C = 1 or 3) as PNG, optionally upscaled by ``scale``."""
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_grid(
    images: torch.Tensor,
    path: str | Path,
    nrow: int | None = None,
    scale: int = 2,
    row_group: int = 1,
) -> Path:
    """Save images in [0, 1] as one PNG grid (atomically); small images are upscaled."""
    atomic_write_bytes(path, to_png_bytes(grid_array(images, nrow, row_group=row_group), scale))
    return Path(path)


def save_pairs(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: str | Path, nrow: int = 8
) -> Path:
    """Save rows of originals, each directly above the row of its reconstructions."""
    both = interleave_rows(originals, reconstructions, nrow)
    return save_grid(both, path, nrow=nrow, row_group=2)


def interleave_rows(top: torch.Tensor, bottom: torch.Tensor, nrow: int) -> torch.Tensor:
    """Stack two equal batches so each row of ``top`` sits directly above its ``bottom`` row."""
    n = top.shape[0]
    rows = []
    for start in range(0, n, nrow):
        rows += [top[start : start + nrow], bottom[start : start + nrow]]
    return torch.cat(rows)


def tile_layout(
    n: int, h: int, w: int, nrow: int | None = None, pad: int = 2, row_group: int = 1
) -> tuple[list[int], list[int]]:
    """Top and left pixel offsets of the rows and columns of :func:`grid_array`'s tiles."""
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    gap = 3 * pad if row_group > 1 else 0
    tops = [pad + r * (h + pad) + (r // row_group) * gap for r in range(rows)]
    lefts = [pad + c * (w + pad) for c in range(cols)]
    return tops, lefts


def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` px, else Pillow's default font."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default(size=size)


def _text_size(font: ImageFont.ImageFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return right - left, bottom - top


def _thinned(n: int, step: int) -> set[int]:
    """Every ``step``-th of range(n), moved so that the first and the last are both kept."""
    keep = list(range(0, n, step))
    if n and keep[-1] != n - 1:
        if n - 1 - keep[-1] < step and len(keep) > 1:
            keep.pop()
        keep.append(n - 1)
    return set(keep)


def labelled_grid_png(
    images: torch.Tensor,
    nrow: int | None = None,
    *,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    corner: str = "",
    scale: int = 2,
    pad: int = 2,
    font_size: int = 13,
) -> bytes:
    """A PNG grid with text beside its rows and above its columns (white margins).

    Labels never cover the images. Column labels that would overlap are thinned out to
    every k-th column (empty strings are skipped); ``corner`` goes above the row labels.
    """
    array = grid_array(images, nrow, pad=pad)
    n, c, h, w = images.shape
    tops, lefts = tile_layout(n, h, w, nrow, pad)
    grid = Image.fromarray(array[..., 0] if c == 1 else array)
    grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    font = label_font(font_size)
    row_labels = row_labels or []
    col_labels = col_labels or []
    text_h = _text_size(font, "Ag0")[1]
    left_w = max([_text_size(font, t)[0] for t in [*row_labels, corner] if t] + [0])
    margin_left = left_w + 10 if left_w else 0
    margin_top = text_h + 12 if (col_labels or corner) else 0
    white = 255 if grid.mode == "L" else (255, 255, 255)
    ink = 30 if grid.mode == "L" else (30, 30, 30)
    canvas = Image.new(grid.mode, (grid.width + margin_left, grid.height + margin_top), white)
    canvas.paste(grid, (margin_left, margin_top))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(row_labels[: len(tops)]):
        if text:
            tw, _ = _text_size(font, text)
            y = margin_top + (tops[r] + h / 2) * scale
            draw.text((margin_left - 6 - tw, y), text, fill=ink, font=font, anchor="lm")
    if col_labels:
        widest = max(_text_size(font, t)[0] for t in col_labels)
        step = max(1, math.ceil((widest + 8) / ((w + pad) * scale)))
        shown = _thinned(min(len(col_labels), len(lefts)), step)
        for i, text in enumerate(col_labels[: len(lefts)]):
            if text and i in shown:
                x = margin_left + (lefts[i] + w / 2) * scale
                draw.text((x, margin_top - 5), text, fill=ink, font=font, anchor="ms")
    if corner:
        draw.text((4, margin_top - 5), corner, fill=ink, font=font, anchor="ls")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def save_labelled_grid(
    images: torch.Tensor,
    path: str | Path,
    nrow: int | None = None,
    *,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    corner: str = "",
    scale: int = 2,
    font_size: int = 13,
) -> Path:
    """Save :func:`labelled_grid_png` atomically; returns the path."""
    png = labelled_grid_png(
        images,
        nrow,
        row_labels=row_labels,
        col_labels=col_labels,
        corner=corner,
        scale=scale,
        font_size=font_size,
    )
    atomic_write_bytes(path, png)
    return Path(path)
