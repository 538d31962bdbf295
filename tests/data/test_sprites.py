"""The procedural sprites dataset: determinism, factor ranges and that pictures follow factors."""

from __future__ import annotations

import numpy as np
import pytest

from vaekit.data.sprites import (
    POSITIONS,
    ROTATIONS,
    SCALES,
    SPRITE_FACTORS,
    make_sprites,
    render_sprites,
)


@pytest.fixture(scope="module")
def sprites():
    return make_sprites(3000, size=28, seed=5)


def test_same_seed_same_bytes_other_seed_other_bytes():
    a, fa = make_sprites(200, seed=3)
    b, fb = make_sprites(200, seed=3)
    c, fc = make_sprites(200, seed=4)
    assert a.tobytes() == b.tobytes() and fa.tobytes() == fb.tobytes()
    assert not np.array_equal(a, c) and not np.array_equal(fa, fc)


@pytest.mark.parametrize("size", [16, 28, 64])
def test_shapes_dtypes_and_empty_border(size):
    images, factors = make_sprites(300, size=size, seed=0)
    assert images.shape == (300, 1, size, size) and images.dtype == np.uint8
    assert factors.shape == (300, len(SPRITE_FACTORS)) and factors.dtype == np.float32
    border = np.concatenate(
        [images[:, 0, 0], images[:, 0, -1], images[:, 0, :, 0], images[:, 0, :, -1]], axis=1
    )
    assert border.max() == 0  # every shape stays inside the image
    assert (images.reshape(300, -1).max(axis=1) == 255).all()  # and every image shows one


def test_factor_values(sprites):
    _, f = sprites
    assert set(np.unique(f[:, 0])) == {0.0, 1.0, 2.0}
    np.testing.assert_allclose(np.unique(f[:, 1]), SCALES, rtol=1e-6)
    assert f[:, 1].min() == pytest.approx(0.5) and f[:, 1].max() == pytest.approx(1.0)
    assert len(np.unique(f[:, 2])) == len(ROTATIONS) == 40
    assert f[:, 2].min() >= 0.0 and f[:, 2].max() < 2 * np.pi
    for axis in (3, 4):
        np.testing.assert_allclose(np.unique(f[:, axis]), POSITIONS, atol=1e-6)


def test_mass_grows_with_the_square_of_scale(sprites):
    images, f = sprites
    mass = images.reshape(len(images), -1).sum(axis=1) / 255.0
    for shape in range(3):
        small = mass[(f[:, 0] == shape) & (f[:, 1] == 0.5)].mean()
        large = mass[(f[:, 0] == shape) & (f[:, 1] == 1.0)].mean()
        assert large / small == pytest.approx(4.0, rel=0.05)


def test_largest_shapes_fill_much_of_the_image():
    index = np.array([[0, 5, 0, 16, 16], [0, 0, 0, 16, 16]])  # squares, scale 1 and 0.5, upright
    images, _ = render_sprites(index, size=28)
    side = [(im[0] > 127).any(axis=0).sum() for im in images]
    assert 14 <= side[0] <= 18  # ~0.57 of 28
    assert 7 <= side[1] <= 9


def test_centre_of_mass_follows_x_and_y(sprites):
    images, f = sprites
    weights = images[:, 0].astype(np.float64)
    total = weights.sum(axis=(1, 2))
    cols = (weights.sum(axis=1) * np.arange(28)).sum(axis=1) / total
    rows = (weights.sum(axis=2) * np.arange(28)).sum(axis=1) / total
    assert np.corrcoef(f[:, 3], cols)[0, 1] > 0.8
    assert np.corrcoef(f[:, 4], rows)[0, 1] > 0.75  # the heart's mass sits off-centre in y
    assert abs(np.corrcoef(f[:, 3], rows)[0, 1]) < 0.1


def test_rotation_turns_the_picture():
    index = np.array([[1, 5, 0, 16, 16], [1, 5, 10, 16, 16]])  # ellipse at 0 and 90 degrees
    images, _ = render_sprites(index, size=28)
    np.testing.assert_allclose(
        images[1, 0].astype(int), images[0, 0].T.astype(int), atol=2
    )  # a quarter turn about the centre is a transpose (up to float rounding)
    wide = (images[0, 0] > 127).any(axis=0).sum()
    tall = (images[0, 0] > 127).any(axis=1).sum()
    assert wide > 1.7 * tall


def test_edges_are_anti_aliased(sprites):
    images, f = sprites
    grey = (images > 0) & (images < 255)
    # Every image has grey edge pixels, but for an upright square whose edges fall on pixel
    # borders, where crisp edges are the right answer.
    crisp = ~grey.any(axis=(1, 2, 3))
    assert crisp.sum() < 10
    assert (f[crisp, 0] == 0).all() and (np.sin(2 * f[crisp, 2]) == pytest.approx(0, abs=1e-6))
    assert len(np.unique(images)) > 12  # supersampling gives many levels, not just 0 / 255
    assert 0.02 < grey.mean() < 0.15  # only the edges are grey


def test_shapes_differ():
    # Upright, centred, same scale: the three shapes have clearly different pictures.
    index = np.array([[s, 5, 0, 16, 16] for s in range(3)])
    pics, _ = render_sprites(index, size=28)
    masks = pics[:, 0] > 127
    for a in range(3):
        for b in range(a + 1, 3):
            assert (masks[a] ^ masks[b]).sum() > 40


def test_invalid_arguments():
    with pytest.raises(ValueError, match=r"n > 0"):
        make_sprites(0)
    with pytest.raises(ValueError, match=r"at least 16"):
        make_sprites(5, size=8)
