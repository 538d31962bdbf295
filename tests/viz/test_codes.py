import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vaekit.viz.codes import (
    PAIR_GAP,
    UNUSED,
    USAGE_FIGSIZE,
    code_palette,
    code_usage_plot,
    codes_as_colour_png,
    save_code_usage,
    save_codes_as_colour,
)
from vaekit.viz.plots import DPI

BLUE = np.array([31, 119, 180])  # matplotlib C0, the used-code bars
PINK = np.array([int(UNUSED[i : i + 2], 16) for i in (1, 3, 5)])


def _pixels(png):
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"), dtype=int)


def _count(pixels, colour, tol=4):
    return int((np.abs(pixels - colour).max(axis=2) <= tol).sum())


def _tile(pixels, n_row, n_col, h, w, scale):
    """The (image, code map) of the pair in grid row ``n_row``, column ``n_col`` (no header)."""
    pad = PAIR_GAP * scale
    top = pad + n_row * (h * scale + pad)
    left = pad + n_col * ((2 * w + 1) * scale + pad)
    image = pixels[top : top + h * scale, left : left + w * scale]
    start = left + (w + 1) * scale
    return image, pixels[top : top + h * scale, start : start + w * scale]


def _palette_u8(k):
    return (code_palette(k) * 255).round().to(torch.int64).numpy()


# --------------------------------------------------------------------------- palette


def test_palette_is_deterministic_distinct_and_exact_in_8_bits():
    for k in (1, 7, 64, 512):
        p = code_palette(k)
        assert p.shape == (k, 3) and p.dtype == torch.float32
        assert torch.equal(p, code_palette(k))
        assert p.min() >= 0 and p.max() <= 1
        u8 = p * 255
        assert torch.equal(u8, u8.round())  # a PNG stores the colour exactly
        assert len({tuple(row) for row in u8.round().int().tolist()}) == k
    # A code keeps its colour whatever the codebook size.
    assert torch.equal(code_palette(10), code_palette(512)[:10])
    # Neighbouring indices are far apart, so a map of nearby codes still reads as regions.
    p = code_palette(512)
    assert (p[1:] - p[:-1]).abs().sum(dim=1).min() > 0.5
    with pytest.raises(ValueError, match="at least 1"):
        code_palette(0)


# --------------------------------------------------------------------------- code maps


def test_each_cell_carries_its_codes_palette_colour():
    k, scale = 64, 3
    codes = torch.stack([torch.arange(49).view(7, 7), (torch.arange(49).view(7, 7) * 5 + 3) % k])
    images = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    pixels = _pixels(codes_as_colour_png(images, codes, k, scale=scale, header=False))
    palette = _palette_u8(k)
    for n in range(2):
        _, code_map = _tile(pixels, 0, n, 28, 28, scale)
        for i in range(7):
            for j in range(7):
                centre = code_map[(4 * i + 2) * scale, (4 * j + 2) * scale]
                assert np.array_equal(centre, palette[codes[n, i, j]]), (n, i, j)
        # Thin darker lines between cells; a cell's inside is one flat colour.
        assert not np.array_equal(
            code_map[4 * scale, 2 * scale], code_map[4 * scale + 1, 2 * scale]
        )
        inner = code_map[scale + 1 : 4 * scale, 1 : 4 * scale]
        assert (inner == palette[codes[n, 0, 0]]).all()


def test_code_map_is_nearest_upsampled_even_when_sizes_do_not_divide():
    k = 5
    codes = torch.tensor([[[0, 1, 2], [3, 4, 0], [1, 2, 3]]])
    images = torch.zeros(1, 1, 10, 11)
    pixels = _pixels(codes_as_colour_png(images, codes, k, scale=1, header=False))
    _, code_map = _tile(pixels, 0, 0, 10, 11, 1)
    expected = F.interpolate(codes[:, None].float(), size=(10, 11), mode="nearest").long()
    assert np.array_equal(code_map, _palette_u8(k)[expected[0, 0].numpy()])


def test_left_half_of_each_pair_is_the_input_image():
    g = torch.Generator().manual_seed(1)
    for channels in (1, 3):
        images = torch.rand(5, channels, 8, 8, generator=g)
        codes = torch.randint(0, 4, (5, 2, 2), generator=g)
        scale = 2
        png = codes_as_colour_png(images, codes, 4, scale=scale, pairs_per_row=3, header=False)
        pixels = _pixels(png)
        pad, tile_w = PAIR_GAP * scale, 17 * scale
        assert pixels.shape == (2 * 8 * scale + 3 * pad, 3 * tile_w + 4 * pad, 3)
        for n in range(5):
            image, _ = _tile(pixels, *divmod(n, 3), 8, 8, scale)
            want = (images[n] * 255).round().expand(3, 8, 8).permute(1, 2, 0).numpy()
            want = want.repeat(scale, axis=0).repeat(scale, axis=1)
            assert np.array_equal(image, want), (channels, n)
        # The empty sixth slot stays the grid's mid grey.
        image, code_map = _tile(pixels, 1, 2, 8, 8, scale)
        assert (image == 128).all() and (code_map == 128).all()


def test_header_names_the_halves_above_the_same_picture():
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    codes = torch.zeros(3, 7, 7, dtype=torch.long)
    plain = _pixels(codes_as_colour_png(images, codes, 8, header=False))
    titled = _pixels(codes_as_colour_png(images, codes, 8))
    strip = titled.shape[0] - plain.shape[0]
    assert strip > 10 and titled.shape[1] == plain.shape[1]
    assert np.array_equal(titled[strip:], plain)
    assert titled[:strip].max() == 255 and titled[:strip].min() < 100  # dark words on white
    # At scale 1 the words would not fit over a 28-pixel tile, so there is no header.
    small = _pixels(codes_as_colour_png(images, codes, 8, scale=1))
    assert small.shape[0] == 28 + 2 * PAIR_GAP


def test_bad_code_maps_raise_clear_errors():
    images = torch.zeros(2, 1, 28, 28)
    codes = torch.zeros(2, 7, 7, dtype=torch.long)
    with pytest.raises(ValueError, match="2 images but 3 code maps"):
        codes_as_colour_png(images, torch.zeros(3, 7, 7, dtype=torch.long), 8)
    with pytest.raises(ValueError, match=r"\[0, 8\), found values in \[0, 8\]"):
        codes_as_colour_png(images, codes.index_fill(0, torch.tensor([1]), 8), 8)
    negative = codes.clone()
    negative[1, 3, 4] = -1
    with pytest.raises(ValueError, match=r"found values in \[-1, 0\]"):
        codes_as_colour_png(images, negative, 8)
    with pytest.raises(ValueError, match="integer indices"):
        codes_as_colour_png(images, codes.float(), 8)
    with pytest.raises(ValueError, match="C 1 or 3"):
        codes_as_colour_png(torch.zeros(2, 2, 28, 28), codes, 8)
    with pytest.raises(ValueError, match=r"\[N, h, w\]"):
        codes_as_colour_png(images, codes[:, 0], 8)
    with pytest.raises(ValueError, match="larger than the images"):
        codes_as_colour_png(torch.zeros(2, 1, 4, 4), codes, 8)


def test_save_codes_as_colour_writes_the_png(tmp_path):
    images = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    codes = torch.tensor([[[0, 1], [2, 3]], [[3, 2], [1, 0]]])
    path = save_codes_as_colour(images, codes, 4, tmp_path / "sub" / "codes.png", scale=2)
    assert path == tmp_path / "sub" / "codes.png"
    assert path.read_bytes() == codes_as_colour_png(images, codes, 4, scale=2)


# --------------------------------------------------------------------------- usage


def _zipf(k, unused, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = (10_000 * torch.arange(1, k + 1).double() ** -1.2).floor().long() + 1
    counts[k - unused :] = 0
    return counts[torch.randperm(k, generator=g)]


def _stats(counts):
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float((counts > 0).double().mean()), math.exp(-float((p * p.log()).sum()))


def test_usage_plot_is_a_png_of_the_figure_size():
    counts = _zipf(512, 100)
    usage, perplexity = _stats(counts)
    png = code_usage_plot(counts, usage=usage, perplexity=perplexity)
    pixels = _pixels(png)
    assert pixels.shape[:2] == (round(USAGE_FIGSIZE[1] * DPI), round(USAGE_FIGSIZE[0] * DPI))
    assert png == code_usage_plot(counts, usage=usage, perplexity=perplexity)  # repeatable


def test_usage_plot_shows_how_many_codes_are_used():
    k = 100
    drawn = {}
    for unused in (0, 10, 50):
        counts = _zipf(k, unused)
        usage, perplexity = _stats(counts)
        drawn[unused] = _pixels(code_usage_plot(counts, usage=usage, perplexity=perplexity))
    assert not np.array_equal(drawn[0], drawn[10])
    # The bars reach further right the more codes are used ...
    right = {
        u: np.flatnonzero((np.abs(p - BLUE).max(axis=2) <= 4).sum(axis=0) > 20).max()
        for u, p in drawn.items()
    }
    assert right[0] > right[10] > right[50]
    # ... and the band that marks unused codes grows with their number.
    band = {u: _count(p, PINK) for u, p in drawn.items()}
    assert band[0] < 100 < band[10] < band[50]


def test_usage_plot_rejects_bad_counts_and_saves(tmp_path):
    for bad, message in [
        (torch.zeros(2, 3), "shape"),
        (torch.tensor([]), "shape"),
        (torch.tensor([3, -1]), "non-negative"),
        (torch.zeros(4, dtype=torch.long), "all zero"),
    ]:
        with pytest.raises(ValueError, match=message):
            code_usage_plot(bad, usage=0.5, perplexity=1.0)
    counts = torch.tensor([5, 0, 2, 1])
    path = save_code_usage(counts, tmp_path / "usage.png", usage=0.75, perplexity=2.4)
    assert path.read_bytes() == code_usage_plot(counts, usage=0.75, perplexity=2.4)
