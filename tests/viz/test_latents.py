import io
import itertools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vaekit.probability.gaussian import DiagonalGaussian
from vaekit.viz.latents import (
    LatentDimError,
    interpolate,
    latent_path,
    latent_scatter,
    lerp,
    manifold,
    manifold_latents,
    pca_2d,
    slerp,
    summarize_posteriors,
    traversal_dims,
    traversals,
)


class PixelModel:
    """A stand-in VAE whose latents are pixels: encode reads z off an image's first D
    pixels, decode_mean writes z into a [1, 1, D] image, so a picture shows its latents."""

    def __init__(self, latent_dim):
        self.latent_dim = latent_dim

    def encode(self, x):
        mean = x.flatten(1)[:, : self.latent_dim]
        return DiagonalGaussian(mean, torch.zeros_like(mean))

    def decode_mean(self, z):
        return z.reshape(-1, 1, 1, self.latent_dim).clone()


def images_of(z):
    return z.reshape(z.shape[0], 1, 1, -1)


# --------------------------------------------------------------------------- paths


def test_slerp_follows_the_great_circle_between_unit_vectors():
    alpha, beta = 0.3, 1.9
    a = torch.tensor([math.cos(alpha), math.sin(alpha)], dtype=torch.float64)
    b = torch.tensor([math.cos(beta), math.sin(beta)], dtype=torch.float64)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    path = slerp(a, b, t)
    angles = alpha + t * (beta - alpha)
    expected = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    torch.testing.assert_close(path, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(path.norm(dim=1), torch.ones(7, dtype=torch.float64))


def test_slerp_endpoints_are_the_inputs_and_linear_midpoint_is_the_mean():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, generator=gen), torch.randn(3, 16, generator=gen)
    for mode in ("linear", "slerp"):
        path = latent_path(a, b, 5, mode)
        assert path.shape == (3, 5, 16)
        torch.testing.assert_close(path[:, 0], a, atol=1e-6, rtol=0)
        torch.testing.assert_close(path[:, -1], b, atol=1e-6, rtol=0)
    mid = latent_path(a, b, 3, "linear")[:, 1]
    torch.testing.assert_close(mid, (a + b) / 2)
    # Equal-norm endpoints: slerp keeps the norm, the straight line dips towards the origin.
    b_same = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    sl = latent_path(a, b_same, 9, "slerp").norm(dim=-1)
    li = latent_path(a, b_same, 9, "linear").norm(dim=-1)
    torch.testing.assert_close(sl, a.norm(dim=1, keepdim=True).expand(3, 9), rtol=1e-5, atol=1e-5)
    assert (li[:, 4] < sl[:, 4] - 1e-3).all()


def test_slerp_of_parallel_or_opposite_vectors_falls_back_to_the_line():
    a = torch.tensor([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    b = torch.tensor([[2.0, 4.0, 6.0], [-1.0, 1e-9, 0.0], [1.0, 1.0, 1.0]])
    t = torch.linspace(0, 1, 5)
    out = slerp(a, b, t)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, lerp(a, b, t))


def test_latent_path_rejects_unknown_mode_and_too_few_steps():
    z = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="mode"):
        latent_path(z, z, 5, "cubic")
    with pytest.raises(ValueError, match="steps"):
        latent_path(z, z, 1, "linear")


def test_interpolate_rows_are_original_path_original():
    model = PixelModel(3)
    x_a = images_of(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
    x_b = images_of(torch.tensor([[1.0, 1.0, 1.0], [3.0, 2.0, 1.0]]))
    out = interpolate(model, x_a, x_b, steps=3, mode="linear")
    assert out.shape == (2 * 5, 1, 1, 3)
    rows = out.reshape(2, 5, 3)
    torch.testing.assert_close(rows[:, 0], x_a.reshape(2, 3))  # originals at the ends
    torch.testing.assert_close(rows[:, -1], x_b.reshape(2, 3))
    torch.testing.assert_close(rows[:, 1], x_a.reshape(2, 3))  # decoded endpoints
    torch.testing.assert_close(rows[:, 2], (x_a + x_b).reshape(2, 3) / 2)
    bare = interpolate(model, x_a, x_b, steps=4, mode="slerp", with_originals=False)
    assert bare.shape == (2 * 4, 1, 1, 3)


# --------------------------------------------------------------------------- manifold

Q05 = -1.6448536


def test_manifold_corners_hold_the_quantiles_and_z2_grows_upward():
    n = 5
    out = manifold(PixelModel(2), n=n)
    assert out.shape == (n * n, 1, 1, 2)
    z = out.reshape(n, n, 2)  # [row, col, (z1, z2)], row 0 at the top
    assert z[0, 0, 0].item() == pytest.approx(Q05, abs=1e-5)  # top-left: smallest z1
    assert z[0, 0, 1].item() == pytest.approx(-Q05, abs=1e-5)  # ... and largest z2
    assert z[-1, -1, 0].item() == pytest.approx(-Q05, abs=1e-5)
    assert z[-1, -1, 1].item() == pytest.approx(Q05, abs=1e-5)
    assert (z[:, 1:, 0] > z[:, :-1, 0]).all()  # z1 grows to the right
    assert (z[:-1, :, 1] > z[1:, :, 1]).all()  # z2 grows upward
    assert torch.equal(z[:, :, 1], z[:, :1, 1].expand(n, n))  # rows share z2
    assert torch.isfinite(manifold_latents(20)).all()
    centre = manifold_latents(3)[4]
    torch.testing.assert_close(centre, torch.zeros(2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dim", [1, 3, 32])
def test_manifold_needs_a_two_dimensional_latent(dim):
    with pytest.raises(LatentDimError, match=f"latent_dim = {dim}") as info:
        manifold(PixelModel(dim))
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- traversals


def test_traversal_rows_vary_only_their_dimension():
    model = PixelModel(4)
    base = torch.tensor([0.5, -0.25, 0.125, 2.0])
    values = torch.tensor([-1.0, 0.0, 1.0])
    out = traversals(model, images_of(base[None]), order=[2, 0], values=values)
    rows = out.reshape(2, 3, 4)
    for row, dim in enumerate([2, 0]):
        torch.testing.assert_close(rows[row, :, dim], values)
        others = [d for d in range(4) if d != dim]
        torch.testing.assert_close(rows[row][:, others], base[others].expand(3, 3))


def test_traversal_order_defaults_to_the_most_varying_dimensions():
    model = PixelModel(3)
    batch = images_of(torch.tensor([[0.0, 5.0, 1.0], [0.0, -5.0, 1.5], [0.0, 0.0, 0.5]]))
    assert traversal_dims(model, batch) == [1, 2, 0]
    assert traversal_dims(model, batch[:1]) == [0, 1, 2]
    assert traversal_dims(model, batch, order=[2, 1, 0], max_dims=2) == [2, 1]
    with pytest.raises(ValueError, match="outside"):
        traversal_dims(model, batch, order=[3])


def test_posterior_summary_kl_and_activity():
    model = PixelModel(2)
    x = images_of(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    s = summarize_posteriors(model, x, batch_size=1)
    # KL(N(m, 1) || N(0, 1)) = m^2 / 2; Cov_x of the means is 1 for z0 and 0 for z1.
    torch.testing.assert_close(s.kl_per_dim, torch.tensor([0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(s.activity, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert s.active.tolist() == [True, False]
    assert s.order() == [0, 1]


# --------------------------------------------------------------------------- scatter


def test_pca_finds_the_dominant_direction():
    gen = torch.Generator().manual_seed(0)
    direction = torch.tensor([3.0, -1.0, 2.0, 0.5, 0.0])
    direction = direction / direction.norm()
    strength = torch.randn(400, 1, generator=gen) * 10
    x = strength * direction + 0.1 * torch.randn(400, 5, generator=gen) + 7.0
    proj, comps, ratio = pca_2d(x)
    assert abs(float(comps[0].double() @ direction.double())) > 0.999
    assert comps[0].abs().argmax() == 0 and comps[0, 0] > 0  # sign convention
    assert float(ratio[0]) > 0.99 and float(ratio.sum()) <= 1.0 + 1e-9
    assert proj.shape == (400, 2)
    torch.testing.assert_close(proj.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(comps @ comps.T, torch.eye(2, dtype=torch.float64))


def _decode(png):
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("dim", [1, 2, 6])
def test_latent_scatter_draws_a_coloured_picture(dim):
    gen = torch.Generator().manual_seed(1)
    means = torch.randn(300, dim, generator=gen)
    labels = torch.arange(300) % 3
    png = latent_scatter(means, labels, ("circle", "square", "triangle"))
    pixels = _decode(png)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 400
    colourful = np.ptp(pixels.astype(int), axis=2) > 60  # class colours, not grey text
    assert colourful.sum() > 500
    assert latent_scatter(means, labels, ("circle", "square", "triangle")) == png


def test_latent_scatter_checks_its_inputs():
    with pytest.raises(ValueError, match="labels"):
        latent_scatter(torch.zeros(5, 3), torch.zeros(4), ())
    with pytest.raises(ValueError, match="means"):
        latent_scatter(torch.zeros(0, 3))


# --------------------------------------------------------------------------- labelled grids


def test_labels_sit_beside_the_grid_never_on_it():
    from vaekit.viz.grid import grid_array, labelled_grid_png

    images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    plain = grid_array(images, nrow=3)
    png = labelled_grid_png(
        images, 3, row_labels=["first", "second"], col_labels=["a", "b", "c"], scale=2
    )
    with Image.open(io.BytesIO(png)) as img:
        labelled = np.asarray(img)
    h, w = plain.shape[0] * 2, plain.shape[1] * 2
    assert labelled.shape[0] > h and labelled.shape[1] > w  # margins for the text
    upscaled = plain[..., 0].repeat(2, axis=0).repeat(2, axis=1)
    assert np.array_equal(labelled[-h:, -w:], upscaled)  # the grid itself is untouched
    assert labelled[:-h, :].min() < 100 and labelled[:, :-w].min() < 100  # dark text


def test_crowded_column_labels_keep_both_ends():
    from vaekit.viz.grid import _thinned

    assert _thinned(20, 1) == set(range(20))
    kept = sorted(_thinned(20, 2))
    assert kept[0] == 0 and kept[-1] == 19
    assert all(b - a >= 2 for a, b in itertools.pairwise(kept))
