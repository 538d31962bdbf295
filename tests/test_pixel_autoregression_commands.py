"""A VAE whose Bernoulli decoder also sees the pixels before each pixel
(``model.pixel_autoregression = "linear"``) through everything that came before: training,
evaluate, the pictures, the report, score, resume and torchrun."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vaekit
from conftest import assert_same_weights, run_vaekit, tiny_raw, train_quietly, write_toml
from vaekit.cli import main
from vaekit.data import load_dataset
from vaekit.diagnostics import SEED_IW, derived_seed, seeded_model_inputs
from vaekit.evaluate import evaluate_model, evaluate_run, score_examples
from vaekit.probability import noise
from vaekit.probability.likelihoods import AutoregressiveBernoulli
from vaekit.viz.figures import load_test_split
from vaekit.viz.report import build_report

RAW = tiny_raw(
    model={"pixel_autoregression": "linear"},
    objective={"estimator": "iwae", "iw_samples": 2},
    train={"num_threads": 1},
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("pixel-ar") / "run"
    train_quietly(RAW, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def model(run):
    return vaekit.load_run(run)


def test_training_learns_causal_pixel_weights_that_are_saved(run, model):
    assert isinstance(model.likelihood, AutoregressiveBernoulli)
    saved = load_file(run / "model.safetensors")["likelihood.weight"]
    assert saved.shape == (28 * 28, 28 * 28)
    assert saved.triu(1).abs().max() > 1e-3  # it started at zero
    torch.testing.assert_close(model.likelihood.weight, saved)


def test_iw_nll_is_an_importance_sampled_chain_rule_likelihood(model):
    k, limit = 20, 100
    result = evaluate_model(model, model.config, seed=0, iw_k=k, chunk_size=7, limit=limit)
    assert result["iw_nll"] < result["nll_upper_bound"]
    # The same estimate written out with torch.distributions: N(0, I) prior, the Gaussian
    # q(z|x), and per pixel Bernoulli(decoder logit + sum over earlier pixels of W[j, i] x_j).
    data = load_test_split(model).subset(torch.arange(limit))
    inputs = seeded_model_inputs(
        data, binarize="dynamic", dequantize=False, seed=0, batch_size=result["iw_batch_size"]
    )
    generator = torch.Generator().manual_seed(derived_seed(0, SEED_IW))
    causal = model.likelihood.weight * torch.ones(784, 784).triu(1)
    log_p = []
    with torch.no_grad():
        for x in inputs:
            q = model.encode(x)
            eps = torch.stack([noise.randn(q.mean.shape, generator=generator) for _ in range(k)])
            z = q.mean + q.std * eps
            logits = model.decoder(z).flatten(-3) + x.flatten(1) @ causal
            log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x.flatten(1)).sum(-1)
            prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
            post = torch.distributions.Normal(q.mean, q.std).log_prob(z).sum(-1)
            log_w = (log_px + prior - post).double()
            log_p.append(torch.logsumexp(log_w, 0) - math.log(k))
    assert result["iw_nll"] == pytest.approx(-torch.cat(log_p).mean().item(), rel=1e-5)


def _not_blank(path) -> bool:
    with Image.open(path) as img:
        low, high = img.convert("L").getextrema()
    return high - low > 50


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["sample", "-n", "16"], "prior_samples.png"),
        (["reconstruct", "-n", "8"], "test_reconstructions.png"),
        (["interpolate", "--pairs", "2", "--steps", "4"], "interpolation_linear.png"),
        (["traverse", "--dims", "3"], "traversals.png"),
    ],
    ids=lambda v: str(v),
)
def test_picture_commands_decode_pixel_by_pixel(run, tmp_path, capsys, args, name):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main([args[0], str(copy), *args[1:]]) == 0
    path = copy / "pictures" / name
    assert capsys.readouterr().out.strip() == str(path)
    assert _not_blank(path)


def test_mean_pictures_are_the_pixel_by_pixel_decode_not_the_independent_one(model):
    z = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(0))
    logits = model.decode(z)
    pictures = model.decode_mean(z)
    # The first pixel sees nothing before it; the image as a whole sees its own earlier pixels.
    torch.testing.assert_close(pictures[:, 0, 0, 0], torch.sigmoid(logits[:, 0, 0, 0]))
    assert (pictures - torch.sigmoid(logits)).abs().max() > 1e-3


def test_report_after_evaluate_shows_non_blank_pictures(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    evaluate_run(copy, iw_k=5, limit=100)
    page = build_report(copy).read_text()
    assert 'data-key="iw_nll"' in page
    for name in ("prior_samples", "test_reconstructions", "traversals"):
        assert _not_blank(copy / "pictures" / f"{name}.png"), name


def test_score_agrees_with_evaluate(model):
    data = load_dataset(model.config.data, "test").subset(torch.arange(120))
    result = evaluate_model(model, model.config, iw_k=10, limit=120, diagnostics=False)
    scores = score_examples(model, model.config, data, iw_k=10, seed=0)
    assert scores.mean().item() == pytest.approx(result["iw_nll"], rel=1e-9)


def test_resume_continues_to_the_weights_of_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_quietly(RAW, straight)
    train_quietly({**RAW, "train": {**RAW["train"], "epochs": 1}}, resumed)
    assert main(["train", "--resume", str(resumed), "--set", "train.epochs=2"]) == 0
    assert_same_weights(straight, resumed, atol=0)


def test_torchrun_on_two_processes_trains_the_weights_of_one(tmp_path):
    # The pixel weights live in the likelihood, outside the encoder and decoder: DDP must
    # still average their gradients (an odd batch, so the processes hold 32 and 31 rows).
    raw = {**RAW, "train": {**RAW["train"], "epochs": 1, "batch_size": 63}}
    config = write_toml(tmp_path / "c.toml", raw)
    one, two = tmp_path / "one", tmp_path / "two"
    run_vaekit("train", str(config), "--run-dir", str(one))
    run_vaekit("train", str(config), "--run-dir", str(two), world=2)
    assert_same_weights(one, two)
