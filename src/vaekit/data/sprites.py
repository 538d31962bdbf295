"""A dSprites-like procedural dataset: white shapes on black with known generative factors.

Like dSprites (Matthey et al. 2017, https://github.com/deepmind/dsprites-dataset) each image is
fixed by five independent factors: shape (square, ellipse, heart), scale (6 values in
[0.5, 1]), rotation (40 values in [0, 2 pi)) and x, y position (32 values each, as fractions of
the free range that keeps the shape inside the image). Knowing the factors lets traversal and
disentanglement pictures be checked against the truth. Images are rendered at any size, so
there is nothing to download.
"""

from __future__ import annotations

import math

import numpy as np

SPRITE_FACTORS = ("shape", "scale", "rotation", "x", "y")
SHAPE_NAMES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ROTATIONS = np.linspace(0.0, 2.0 * math.pi, 40, endpoint=False)
POSITIONS = np.linspace(0.0, 1.0, 32)
FACTOR_SIZES = (len(SHAPE_NAMES), len(SCALES), len(ROTATIONS), len(POSITIONS), len(POSITIONS))

RADIUS = 0.4  # circumradius of a shape at scale 1, as a fraction of the image side
MARGIN = 1.0  # pixels kept free between the shape's enclosing circle and the border
SUPERSAMPLE = 4  # edge pixels are the mean of SUPERSAMPLE x SUPERSAMPLE point samples

_SQRT2 = math.sqrt(2.0)
_ELLIPSE_MINOR = 0.5  # semi-axes 1 and 0.5 in unit coordinates
# Heart: a diamond |X| + |Y| <= 1 with two discs of radius 1/sqrt(2) on its upper edges; the
# centre of its smallest enclosing circle sits at Y = c, where the bottom tip and the far side of
# a disc are equally distant: c + 1 = sqrt(0.25 + (0.5 - c)^2) + r.
_HEART_R = math.sqrt(0.5)
_HEART_C = (0.5 - (1.0 - _HEART_R) ** 2) / (1.0 + 2.0 * (1.0 - _HEART_R))
_HEART_SCALE = 1.0 + _HEART_C  # enclosing radius in heart coordinates


def _unit_distance(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A 1-Lipschitz bound on the signed distance to a unit-circumradius shape (negative inside).

    ``u`` points right and ``v`` up in the shape's own (rotated) frame. Being 1-Lipschitz, a value
    above the half-diagonal of a pixel proves the whole pixel is outside (below minus it, inside).
    """
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) - np.float32(1.0 / _SQRT2)
    if shape == 1:
        return _ELLIPSE_MINOR * (np.sqrt(u * u + (v / _ELLIPSE_MINOR) ** 2) - 1.0)
    x = np.abs(u) * np.float32(_HEART_SCALE)
    y = v * np.float32(_HEART_SCALE) + np.float32(_HEART_C)
    diamond = (x + np.abs(y) - 1.0) / np.float32(_SQRT2)
    disc = np.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2) - np.float32(_HEART_R)
    return np.minimum(diamond, disc) / np.float32(_HEART_SCALE)


def _render(shape: int, params: np.ndarray, size: int) -> np.ndarray:
    """Coverage in [0, 1], float32 [m, size, size], of one shape under per-image parameters.

    ``params`` is float32 [m, 5]: centre x, centre y (pixels), cos, sin of the rotation and the
    radius in pixels. Pixels whose centre is further than half a diagonal from the edge are exactly
    0 or 1; only edge pixels are supersampled, which gives the same image as supersampling all.
    """
    cx, cy, cos, sin, radius = (params[:, i, None, None] for i in range(5))
    grid = np.arange(size, dtype=np.float32) + np.float32(0.5)
    dx = (grid[None, None, :] - cx) / radius
    dy = (grid[None, :, None] - cy) / radius
    u = dx * cos + dy * sin
    v = dx * sin - dy * cos  # image rows grow downwards; v grows upwards
    distance = _unit_distance(shape, u, v) * radius
    coverage = (distance < 0).astype(np.float32)
    edge = np.abs(distance) < np.float32(0.5 * _SQRT2 + 1e-3)
    which, row, col = np.nonzero(edge)
    offsets = (np.arange(SUPERSAMPLE, dtype=np.float32) + 0.5) / SUPERSAMPLE
    p = params[which]
    ex = (col[:, None, None] + offsets[None, None, :] - p[:, 0, None, None]) / p[:, 4, None, None]
    ey = (row[:, None, None] + offsets[None, :, None] - p[:, 1, None, None]) / p[:, 4, None, None]
    eu = ex * p[:, 2, None, None] + ey * p[:, 3, None, None]
    ev = ex * p[:, 3, None, None] - ey * p[:, 2, None, None]
    coverage[edge] = (_unit_distance(shape, eu, ev) < 0).mean(axis=(1, 2), dtype=np.float32)
    return coverage


def sprite_factors(n: int, seed: int = 0) -> np.ndarray:
    """Draw ``n`` factor index rows int64 [n, 5] uniformly and independently from a seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, FACTOR_SIZES, size=(n, len(FACTOR_SIZES)))


def render_sprites(index: np.ndarray, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Render factor index rows [n, 5] as uint8 [n, 1, size, size] images and float32 factors."""
    if size < 16:
        raise ValueError(f"sprites need an image size of at least 16, got {size}")
    index = np.asarray(index, dtype=np.int64)
    n = len(index)
    scale = SCALES[index[:, 1]]
    rotation = ROTATIONS[index[:, 2]]
    x, y = POSITIONS[index[:, 3]], POSITIONS[index[:, 4]]
    radius = scale * RADIUS * size
    low = radius + MARGIN
    free = size - 2.0 * low  # the centre moves over [low, size - low]
    params = np.stack(
        [low + x * free, low + y * free, np.cos(rotation), np.sin(rotation), radius], axis=1
    ).astype(np.float32)
    images = np.empty((n, 1, size, size), dtype=np.uint8)
    chunk = max(1, 200_000 // (size * size))  # keep temporaries in cache
    for shape in range(len(SHAPE_NAMES)):
        members = np.flatnonzero(index[:, 0] == shape)
        for start in range(0, len(members), chunk):
            rows = members[start : start + chunk]
            coverage = _render(shape, params[rows], size)
            images[rows, 0] = np.rint(coverage * 255.0).astype(np.uint8)
    factors = np.stack([index[:, 0], scale, rotation, x, y], axis=1).astype(np.float32)
    return images, factors


def make_sprites(n: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random sprites: uint8 images [n, 1, size, size] and float32 factors [n, 5].

    Factors are (shape index, scale, rotation in radians, x, y) with x, y in [0, 1] across the
    free range; the same seed always gives the same bytes.
    """
    if n <= 0:
        raise ValueError(f"make_sprites needs n > 0, got {n}")
    return render_sprites(sprite_factors(n, seed), size)
