"""Image grids as PNG files: the basic picture every other figure is made of."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

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
