import io

import numpy as np
import pytest
from PIL import Image

from vaekit.viz.plots import (
    VQ_CURVE_PANELS,
    kl_per_dimension_plot,
    save_png,
    score_histogram,
    training_curves,
)

BLUE = np.array([31, 119, 180])  # matplotlib C0
ORANGE = np.array([255, 127, 14])  # C1
GREY = np.array([178, 178, 178])  # "0.7", inactive units


def _pixels(png):
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return np.asarray(img.convert("RGB"), dtype=int)


def _count(pixels, colour, tol=12):
    return int((np.abs(pixels - colour).max(axis=2) <= tol).sum())


def _records(n=6, val=True):
    out = []
    for e in range(1, n + 1):
        r = {"epoch": e, "train/elbo": -300 + 10 * e, "train/recon": 280 - 8 * e, "train/kl": 20}
        if val:
            r |= {"val/elbo": -295 + 9 * e, "val/recon": 276 - 7 * e, "val/kl": 19 - e / 2}
        out.append(r)
    return out


def test_training_curves_draw_train_and_validation_lines():
    pixels = _pixels(training_curves(_records()))
    assert 700 < pixels.shape[1] < 2000 and 250 < pixels.shape[0] < 1000
    assert pixels.std() > 0
    assert _count(pixels, BLUE) > 200 and _count(pixels, ORANGE) > 200
    train_only = _pixels(training_curves(_records(val=False)))
    assert _count(train_only, BLUE) > 200 and _count(train_only, ORANGE) < 20


def test_training_curves_explain_bad_records():
    with pytest.raises(ValueError, match="no metrics records"):
        training_curves([])
    with pytest.raises(ValueError, match="record 2 has no 'epoch'"):
        training_curves([{"epoch": 1, "train/elbo": -1.0}, {"train/elbo": -2.0}])
    with pytest.raises(ValueError, match="none of the curve keys"):
        training_curves([{"epoch": 1, "lr": 0.001}])
    # A diverged epoch (NaN) leaves a gap instead of breaking the figure.
    records = _records(3)
    records[1]["train/elbo"] = float("nan")
    assert _pixels(training_curves(records)).std() > 0


def test_kl_bars_mark_active_units():
    kl = [0.8, 3.0, 0.6, 1.5]
    marked = _pixels(kl_per_dimension_plot(kl, active=[False, True, False, True]))
    plain = _pixels(kl_per_dimension_plot(kl))
    # Two of four bars turn from blue to grey (anti-aliased text adds a little grey to both).
    assert _count(marked, GREY, 4) > _count(plain, GREY, 4) + 2000
    assert _count(plain, BLUE, 4) > _count(marked, BLUE, 4) + 2000
    with pytest.raises(ValueError, match="active flags"):
        kl_per_dimension_plot(kl, active=[True])
    with pytest.raises(ValueError, match="one value per latent"):
        kl_per_dimension_plot([])


def test_kl_plot_sorts_bars_from_most_to_least():
    # Bars drawn in sorted order make the blue column heights fall from left to right.
    pixels = _pixels(kl_per_dimension_plot([1.0, 4.0, 2.0, 3.0]))
    blue = np.abs(pixels - BLUE).max(axis=2) <= 4
    columns = np.flatnonzero(blue.any(axis=0))
    heights = blue.sum(axis=0)
    runs = np.split(columns, np.flatnonzero(np.diff(columns) > 1) + 1)
    bar_heights = [int(heights[r].max()) for r in runs if len(r) > 5]
    assert len(bar_heights) == 4
    assert bar_heights == sorted(bar_heights, reverse=True)


def test_score_histogram_overlays_datasets_with_auroc(tmp_path):
    rng = np.random.default_rng(0)
    png = score_histogram(
        {"test": rng.normal(100, 10, 2000), "mnist": rng.normal(140, 15, 500)}, auroc=0.93
    )
    pixels = _pixels(png)
    assert pixels.std() > 0 and _count(pixels, BLUE) > 100 and _count(pixels, ORANGE) > 100
    path = save_png(png, tmp_path / "sub" / "scores.png")
    assert path.read_bytes() == png
    with pytest.raises(ValueError, match="empty"):
        score_histogram({"test": [float("nan")]})
    assert score_histogram({"same": [5.0, 5.0, 5.0]})  # zero spread still draws


def test_plots_are_repeatable():
    assert training_curves(_records()) == training_curves(_records())


def test_vq_curves_plot_commitment_and_perplexity():
    records = [
        {"epoch": e, "train/recon": 2000 - e, "train/commitment": 5 + e, "train/perplexity": 100}
        for e in range(1, 5)
    ]
    pixels = _pixels(training_curves(records, VQ_CURVE_PANELS))
    assert _count(pixels, BLUE) > 300 and _count(pixels, ORANGE) == 0  # train lines only
    # the default panels (ELBO, recon, KL) find only the reconstruction in these records
    assert not np.array_equal(pixels, _pixels(training_curves(records)))
    with pytest.raises(ValueError, match="curve keys"):
        training_curves([{"epoch": 1, "train/elbo": 1.0}], VQ_CURVE_PANELS)
