"""A VQ-VAE through the real `vaekit` command: train, train-prior, evaluate, sample, report."""

from __future__ import annotations

import json
import math
import tomllib

import pytest
import torch
from PIL import Image

from conftest import TINY_VQ, tiny_raw, write_toml
from test_cli import run
from vaekit.evaluate import score_examples
from vaekit.evaluate_vq import encode_dataset
from vaekit.train import checkpoint as ckpt
from vaekit.train.prior_fit import code_nll

TINY_PRIOR = [
    "--set",
    "prior.epochs=2",
    "--set",
    "prior.dim=32",
    "--set",
    "prior.layers=1",
    "--set",
    "prior.heads=2",
]


def vq_raw() -> dict:
    return tiny_raw(model=TINY_VQ, train={"epochs": 2})


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vq")
    config = write_toml(tmp / "vq.toml", vq_raw())
    out = run("train", config, "--run-dir", tmp / "run")
    assert "train-prior" in out.stderr  # the next step is named
    return tmp / "run"


def test_without_a_prior_sampling_fails_clearly_and_the_bound_uses_the_uniform_prior(vq_run):
    proc = run("sample", vq_run, check=False)
    assert proc.returncode == 2
    assert "train-prior" in proc.stderr and "Traceback" not in proc.stderr
    run("evaluate", vq_run)
    result = json.loads((vq_run / ckpt.EVAL_FILE).read_text())
    assert result["model"] == "vqvae" and result["prior"].startswith("uniform")
    assert result["kl"] == pytest.approx(7 * 7 * math.log(16))
    assert result["nll_upper_bound"] == pytest.approx(result["recon"] + result["kl"])
    assert 0 < result["code_usage"] <= 1
    assert 1 <= result["perplexity"] <= result["codes_used"] + 1e-9
    assert result["codes_used"] == round(result["code_usage"] * 16)


def test_importance_sampling_is_refused_for_a_vqvae(vq_run):
    proc = run("evaluate", vq_run, "--iw", "10", check=False)
    assert proc.returncode == 2 and "one-hot" in proc.stderr


@pytest.mark.parametrize("command", ["traverse", "manifold", "interpolate", "scatter"])
def test_gaussian_latent_pictures_are_refused_for_a_vqvae(vq_run, command):
    proc = run(command, vq_run, check=False)
    assert proc.returncode == 2 and "VQ-VAE" in proc.stderr and "Traceback" not in proc.stderr


def test_train_prior_then_sample_evaluate_and_report(vq_run):
    out = run("train-prior", vq_run, *TINY_PRIOR)
    assert "bits per code" in out.stderr
    prior_file = vq_run / ckpt.PRIOR_FILE
    records = [json.loads(x) for x in (vq_run / ckpt.PRIOR_METRICS_FILE).read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    saved = tomllib.loads((vq_run / ckpt.CONFIG_FILE).read_text())["prior"]
    assert saved["dim"] == 32 and saved["layers"] == 1  # the settings used are recorded

    # refitting needs --overwrite; the prior already there is untouched
    before = prior_file.read_bytes()
    proc = run("train-prior", vq_run, *TINY_PRIOR, check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert prior_file.read_bytes() == before
    proc = run("train-prior", vq_run, "--set", "model.latent_dim=3", check=False)
    assert proc.returncode == 2 and "prior.*" in proc.stderr

    # the bound now uses the learned prior: check it against the prior's own log-probs
    run("evaluate", vq_run)
    result = json.loads((vq_run / ckpt.EVAL_FILE).read_text())
    model = ckpt.load_run(vq_run)
    assert model.code_prior is not None
    test = ckpt.load_run(vq_run)  # same weights, independent pass over the test split
    from vaekit.data import load_dataset
    from vaekit.diagnostics import SEED_INPUT, derived_seed

    data = load_dataset(test.config.data, "test")
    codes = encode_dataset(test, data, seed=derived_seed(0, SEED_INPUT))
    expected = code_nll(test.code_prior, codes).mean().item()
    assert result["prior"] == "learned"
    assert result["prior_nll"] == pytest.approx(expected, rel=0.02)
    assert result["prior_nll"] < result["uniform_prior_nll"]  # it learned something
    assert result["nll_upper_bound"] == pytest.approx(result["recon"] + result["prior_nll"])
    assert result["prior_bits_per_code"] == pytest.approx(result["prior_nll"] / (49 * math.log(2)))

    # anomaly scores of a VQ-VAE are the same bound, per example
    scores = score_examples(test, test.config, data, iw_k=None, seed=0)
    assert scores.mean().item() == pytest.approx(result["nll_upper_bound"], rel=1e-6)

    # sampling draws code maps from the prior: 16 images in a grid 8 wide, seeded
    a, b = vq_run / "a.png", vq_run / "b.png"
    run("sample", vq_run, "-n", "16", "--seed", "3", "-o", a)
    run("sample", vq_run, "-n", "16", "--seed", "3", "-o", b)
    assert a.read_bytes() == b.read_bytes()
    with Image.open(a) as img:
        assert img.width > img.height > 28 * 2

    out = run("report", vq_run).stdout.strip()
    page = (vq_run / "report.html").read_text()
    assert out.endswith("report.html")
    for title in (
        "VQ-VAE report",
        "Codebook usage",
        "Codes as colours",
        "Samples from the learned",
    ):
        assert title in page
    assert "Latent traversals" not in page and "Not drawn" not in page
    for name in ("code_usage.png", "codes_as_colour.png", "prior_samples.png"):
        assert (vq_run / "pictures" / name).is_file()


def test_code_pictures_and_train_prior_are_refused_for_a_vae(tmp_path):
    config = write_toml(tmp_path / "vae.toml", tiny_raw(train={"epochs": 1}))
    run("train", config, "--run-dir", tmp_path / "vae")
    for command in (["codes"], ["code-usage"], ["train-prior"]):
        proc = run(*command, tmp_path / "vae", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "vae" / ckpt.PRIOR_FILE).exists()
    assert torch.load(tmp_path / "vae" / ckpt.STATE_FILE, weights_only=True)["epoch"] == 1
