import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.viz.grid import grid_array, interleave_rows, save_grid, save_pairs


def _constant_images(n, c=1, size=4):
    # Image i is filled with the grey level (i + 1) * 10 / 255.
    values = (torch.arange(n, dtype=torch.float32) + 1) * 10 / 255
    return values.view(n, 1, 1, 1).expand(n, c, size, size).clone()


def test_tiles_land_in_row_major_order():
    out = grid_array(_constant_images(6), nrow=3, pad=1)
    assert out.shape == (2 * 5 + 1, 3 * 5 + 1, 1)
    for i in range(6):
        r, col = divmod(i, 3)
        tile = out[1 + r * 5 : 1 + r * 5 + 4, 1 + col * 5 : 1 + col * 5 + 4]
        assert np.all(tile == (i + 1) * 10)
    assert out[0, 0, 0] == 128  # grey border, distinct from a black background


def test_rgb_and_clamping():
    images = torch.stack([torch.full((3, 2, 2), 2.0), torch.full((3, 2, 2), -1.0)])
    out = grid_array(images, nrow=2, pad=0)
    assert out.shape == (2, 4, 3)
    assert out[:, :2].min() == 255 and out[:, 2:].max() == 0


def test_pairs_put_each_original_above_its_reconstruction(tmp_path):
    originals = _constant_images(4)
    recons = 1 - originals
    both = interleave_rows(originals, recons, nrow=2)
    assert torch.equal(both[0:2], originals[0:2]) and torch.equal(both[2:4], recons[0:2])
    path = save_pairs(originals, recons, tmp_path / "pairs.png", nrow=2)
    with Image.open(path) as img:
        arr = np.asarray(img)
    # Scale 2, pad 2, a wider gap (6 px) between the two pairs of rows.
    assert arr.shape == (2 * (4 * 6 + 2 + 6), 2 * (2 * 6 + 2))
    first_original = arr[2 * 2, 2 * 2]
    first_recon = arr[2 * 8, 2 * 2]
    assert first_original == 10 and first_recon == 245


def test_save_grid_rejects_wrong_rank(tmp_path):
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        save_grid(torch.zeros(3, 4, 4), tmp_path / "x.png")
