import base64
import hashlib
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from conftest import tiny_raw
from vaekit.config import config_from_dict
from vaekit.train.loop import train
from vaekit.viz.figures import PICTURES, VQVAE_ONLY
from vaekit.viz.report import build_report, format_metric
from vaekit.viz.scores import read_scores, score_picture_name, write_scores

EVAL = {
    "dataset": "sprites",
    "split": "test",
    "examples": 1000,
    "estimator": "analytic",
    "seed": 0,
    "elbo": -123.456789,
    "recon": 110.5,
    "kl": 12.956789,
    "nll_upper_bound": 123.456789,
    "iw_nll": 120.123456,
    "iw_k": 100,
    "iw_seconds": 12.5,
    "bits_per_dim": 0.2271828,
    "units": "nats per example",
    "diagnostics": {
        "active_units": 2,
        "active_threshold": 0.01,
        "mutual_information": 3.14159265,
        "mi_upper_limit": 6.9,
        "kl_per_dim": [6.5, 6.4],
    },
}
# The eval.json numbers the table shows (settings such as seed or timings go below it).
SHOWN = {
    "elbo": -123.456789,
    "recon": 110.5,
    "kl": 12.956789,
    "nll_upper_bound": 123.456789,
    "iw_nll": 120.123456,
    "iw_k": 100,
    "bits_per_dim": 0.2271828,
    "diagnostics.active_units": 2,
    "diagnostics.mutual_information": 3.14159265,
}


class Page(HTMLParser):
    """Every tag with its attributes, the text of each data-key cell, sections with images."""

    def __init__(self):
        super().__init__()
        self.tags = []
        self.cells = {}
        self.section = None
        self.section_images = {}
        self.key = None
        self.text = []
        self.title = ""
        self.in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self.section = attrs.get("id")
            self.section_images.setdefault(self.section, 0)
        if tag == "img" and self.section:
            self.section_images[self.section] += 1
        if tag == "td" and "data-key" in attrs:
            self.key = attrs["data-key"]
            self.cells[self.key] = ""
        self.in_title = tag == "h1"

    def handle_endtag(self, tag):
        if tag == "td":
            self.key = None
        if tag == "h1":
            self.in_title = False

    def handle_data(self, data):
        self.text.append(data)
        if self.key:
            self.cells[self.key] += data
        if self.in_title:
            self.title += data


def parse(path):
    page = Page()
    page.feed(path.read_text())
    page.close()
    return page


def _digest(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


TRAINING_PICTURES = ("samples/", "recon/", "samples.png", "reconstructions.png")


def _training_pictures(run):
    digest = _digest(run / "pictures")
    return {k: v for k, v in digest.items() if k.startswith(TRAINING_PICTURES)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny sprite runs, 2-D (with eval.json and scores) and 4-D (bare), with reports."""
    base = tmp_path_factory.mktemp("report")
    out = {}
    threads = torch.get_num_threads()
    for dim in (2, 4):
        run = base / f"run<i>{dim}"  # a name that must be escaped in HTML
        # One thread: tiny matrices gain nothing from two, and lose much when cores are busy.
        raw = tiny_raw(model={"latent_dim": dim}, train={"num_threads": 1})
        train(config_from_dict(raw), run, console=Console(quiet=True))
        out[dim] = run
    torch.set_num_threads(threads)
    (out[2] / "eval.json").write_text(json.dumps(EVAL))
    rng = np.random.default_rng(0)
    write_scores(
        out[2], "mnist", rng.normal(200, 20, 300), rng.normal(120, 10, 400), 0.875, {"iw_k": 10}
    )
    frames = {d: _training_pictures(out[d]) for d in out}
    reports = {d: build_report(out[d], seed=0) for d in out}
    return out, reports, frames


def test_report_is_one_self_contained_file(runs):
    dirs, reports, _ = runs
    for dim, report in reports.items():
        assert report == dirs[dim] / "report.html"
        page = parse(report)
        assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")]
        for _, attrs in page.tags:
            for name in ("src", "href", "srcset", "poster"):
                value = attrs.get(name) or ""
                assert not re.match(r"\s*(https?:)?//", value, re.I), (name, value[:80])
        images = [attrs for tag, attrs in page.tags if tag == "img"]
        assert len(images) >= 8
        for attrs in images:
            match = re.fullmatch(r"data:image/(png|gif);base64,([A-Za-z0-9+/=]+)", attrs["src"])
            assert match, attrs["src"][:60]
            with Image.open(io.BytesIO(base64.b64decode(match.group(2), validate=True))) as img:
                assert img.format == match.group(1).upper()
                img.verify()
            assert attrs.get("alt") and int(attrs["width"]) > 0
        assert "http://" not in report.read_text() and "https://" not in report.read_text()


def test_each_picture_section_has_its_image_and_command(runs):
    _, reports, _ = runs
    page = parse(reports[2])
    text = "".join(page.text)
    for section in (
        "curves",
        "kl",
        "samples",
        "reconstructions",
        "interpolation_linear",
        "interpolation_slerp",
        "manifold",
        "traversals",
        "scatter",
        "gif",
        "scores",
    ):
        assert page.section_images.get(section) == 1, section
    for command in (
        "vaekit sample",
        "vaekit reconstruct",
        "--mode linear",
        "--mode slerp",
        "vaekit manifold",
        "vaekit traverse",
        "vaekit scatter",
        "vaekit animate",
        "vaekit curves",
        "vaekit score",
    ):
        assert command in text, command
    assert "AUROC 0.875" in text
    assert "[model]" in text and "latent_dim = 2" in text  # the config, as TOML


def test_metrics_table_shows_the_eval_json_numbers(runs):
    _, reports, _ = runs
    page = parse(reports[2])
    assert set(page.cells) == set(SHOWN)
    for key, value in SHOWN.items():
        shown = page.cells[key].strip()
        assert shown == format_metric(key, value)
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        assert abs(float(shown) - value) <= 0.5 * 10**-decimals + 1e-12, key
    assert page.cells["elbo"].strip() == "-123.46"
    assert page.cells["bits_per_dim"].strip() == "0.2272"
    assert page.cells["iw_k"].strip() == "100"
    assert page.cells["diagnostics.active_units"].strip() == "2"
    text = " ".join("".join(page.text).split())
    assert "IW-NLL (K = 100)" in text and "at most log N = 6.90" in text
    assert "iw_seconds 12.50" in text and "seed 0" in text


def test_bare_run_explains_what_is_missing(runs):
    dirs, reports, _ = runs
    page = parse(reports[4])
    text = " ".join("".join(page.text).split())
    assert not page.cells and not any(a.get("id") == "metrics" for _, a in page.tags)
    assert "No eval.json" in text and "vaekit evaluate" in text
    assert page.section_images["manifold"] == 0 and "2-D latent space" in text
    assert page.section_images["scores"] == 0 and "No anomaly scores" in text
    assert page.section_images["traversals"] == 1
    assert not (dirs[4] / "pictures" / PICTURES["manifold"]).exists()


def test_names_are_escaped(runs):
    dirs, reports, _ = runs
    page = parse(reports[2])
    assert not [t for t, _ in page.tags if t == "i"]
    assert page.title == f"VAE report: {dirs[2].name}"
    assert "<i>" in dirs[2].name


def test_pictures_land_in_the_run_and_training_frames_stay(runs):
    dirs, _, frames = runs
    for dim, run in dirs.items():
        pictures = run / "pictures"
        vae_pictures = {v for k, v in PICTURES.items() if k not in VQVAE_ONLY}
        expected = vae_pictures - ({"manifold.png"} if dim != 2 else set())
        assert not {PICTURES[k] for k in VQVAE_ONLY} & {p.name for p in pictures.iterdir()}
        assert expected <= {p.name for p in pictures.iterdir()}
        assert _training_pictures(run) == frames[dim]
        assert len(frames[dim]) == 2 * 2 + 2  # two epochs of samples and recon, two latest
    assert (dirs[2] / "pictures" / score_picture_name("mnist")).is_file()


def test_report_is_deterministic(runs):
    dirs, reports, _ = runs
    first = reports[2].read_bytes()
    pictures = _digest(dirs[2] / "pictures")
    build_report(dirs[2], seed=0)
    assert reports[2].read_bytes() == first
    assert _digest(dirs[2] / "pictures") == pictures


def test_scores_files_round_trip(tmp_path):
    path = write_scores(tmp_path, "my data/v1", [3.5, 1.25], [0.5], 0.75, {"iw_k": 5, "note": "x"})
    assert path == tmp_path / "scores" / "my_data_v1.csv"
    assert path.read_text().splitlines() == ["index,score", "0,3.5", "1,1.25"]
    summary = json.loads((tmp_path / "scores" / "my_data_v1.json").read_text())
    assert summary["dataset"] == "my data/v1" and summary["auroc"] == 0.75
    assert summary["iw_k"] == 5 and summary["note"] == "x"
    (loaded,) = read_scores(tmp_path)
    assert loaded.scores.tolist() == [3.5, 1.25] and loaded.reference.tolist() == [0.5]
    write_scores(tmp_path, "plain", [1.0], None, None)
    plain = {s.name: s for s in read_scores(tmp_path)}["plain"]
    assert plain.reference is None and plain.summary["auroc"] is None


def test_draw_functions_redraw_the_report_pictures(runs, tmp_path):
    """What each caption's command line would call gives the report's picture, byte for byte."""
    from vaekit.train.checkpoint import load_run
    from vaekit.viz import report as r

    run = runs[0][2]
    model = load_run(run)
    redrawn = {
        "samples": r.draw_samples(model, tmp_path / "a.png", n=64, temperature=1.0, seed=0),
        "reconstructions": r.draw_reconstructions(model, tmp_path / "b.png", n=32, seed=0),
        "interpolation_slerp": r.draw_interpolation(
            model, tmp_path / "c.png", mode="slerp", pairs=8, steps=10, seed=0
        ),
        "manifold": r.draw_manifold(model, tmp_path / "d.png", n=20),
        "traversals": r.draw_traversals(model, tmp_path / "e.png", dims=10, seed=0),
        "scatter": r.draw_scatter(model, tmp_path / "f.png", points=5000, seed=0),
        "curves": r.draw_curves(run, tmp_path / "g.png"),
    }
    for key, path in redrawn.items():
        assert path.read_bytes() == (run / "pictures" / PICTURES[key]).read_bytes(), key
    other_seed = r.draw_samples(model, tmp_path / "h.png", seed=1)
    assert other_seed.read_bytes() != redrawn["samples"].read_bytes()
