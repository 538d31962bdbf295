"""Every command that came before, run on a hierarchical (ladder) VAE: evaluate, the pictures,
the report, score, resume and torchrun, each checked against a computation of its own."""

from __future__ import annotations

import html
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import assert_same_weights, run_vaekit, tiny_raw, train_quietly, write_toml
from vaekit.cli import main
from vaekit.config import config_from_dict
from vaekit.data import load_dataset
from vaekit.diagnostics import SEED_IW, derived_seed, seeded_model_inputs
from vaekit.errors import ConfigError
from vaekit.evaluate import decoder_bytes_per_sample, evaluate_model, evaluate_run, score_examples
from vaekit.models import build_hvae
from vaekit.objectives import iw_log_likelihood
from vaekit.viz.figures import LADDER_SKIPS, load_test_split, posterior_summary
from vaekit.viz.latents import interpolate, ladder_traversals
from vaekit.viz.report import build_report

LADDER = {"kind": "hvae", "latent_dims": [8, 4], "ladder_width": 64}
RAW = tiny_raw(model=LADDER, objective={"estimator": "monte_carlo"}, train={"num_threads": 1})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("hvae") / "run"
    train_quietly(RAW, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def model(run):
    return vaekit.load_run(run)


@pytest.fixture(scope="module")
def test_images(model):
    """The first 200 test images as the evaluation prepares them with seed 0 (one batch)."""
    data = load_test_split(model).subset(torch.arange(200))
    inputs = seeded_model_inputs(data, binarize="dynamic", dequantize=False, seed=0, batch_size=200)
    return next(iter(inputs))


# --------------------------------------------------------------------------- evaluate


def test_iw_nll_is_below_the_elbo_and_is_the_models_own_bound(model):
    result = evaluate_model(model, model.config, seed=0, iw_k=50, chunk_size=16, limit=200)
    assert result["iw_nll"] < result["nll_upper_bound"] - 1.0
    # The three are means of float32 per-image terms, so they agree to float32 rounding (about
    # 1e-9 relative held on one CPU and not on another), not to float64's.
    assert result["elbo"] == pytest.approx(-(result["recon"] + result["kl"]), rel=1e-6)
    # The same number from iw_log_likelihood, which takes the ladder's log_weights, on the
    # evaluation's inputs and importance-sampling stream.
    data = load_test_split(model).subset(torch.arange(200))
    inputs = seeded_model_inputs(
        data, binarize="dynamic", dequantize=False, seed=0, batch_size=result["iw_batch_size"]
    )
    generator = torch.Generator().manual_seed(derived_seed(0, SEED_IW))
    with torch.no_grad():
        direct = torch.cat(
            [iw_log_likelihood(model, x, 50, chunk_size=16, generator=generator) for x in inputs]
        )
    assert result["iw_nll"] == pytest.approx(-direct.mean().item(), rel=1e-12)


def test_per_layer_kl_matches_closed_forms_and_a_fresh_monte_carlo_average(model, test_images):
    result = evaluate_model(model, model.config, seed=0, limit=200, diagnostics=False)
    assert result["estimator"] == "analytic"  # N(0, I) on top: the closed-form KL per layer
    q2 = model.encode_top(test_images)
    top = torch.distributions.Normal(q2.mean.double(), q2.std.double())
    prior = torch.distributions.Normal(0.0, 1.0)
    kl_top = torch.distributions.kl_divergence(top, prior).sum(-1).mean().item()
    assert result["kl_z2"] == pytest.approx(kl_top, rel=1e-5)
    # E_{z2 ~ q} KL(q(z1|x, z2) || p(z1|z2)) over 64 fresh draws of z2, merging the bottom-up
    # Gaussian with the conditional prior by precisions (LVAE eqs. 18-19) written out here.
    up = model.bottom_up_pass(test_images)[0]
    generator = torch.Generator().manual_seed(123)
    draws = []
    with torch.no_grad():
        for _ in range(64):
            z2 = q2.mean + q2.std * torch.randn(q2.mean.shape, generator=generator)
            p1 = model.conditional_prior(1, z2)
            precision = 1 / up.var.double() + 1 / p1.var.double()
            mean = (up.mean / up.var + p1.mean / p1.var).double() / precision
            q1 = torch.distributions.Normal(mean, precision.rsqrt())
            p1n = torch.distributions.Normal(p1.mean.double(), p1.std.double())
            draws.append(torch.distributions.kl_divergence(q1, p1n).sum(-1))
    per_example = torch.stack(draws)  # [64, B]
    noise = per_example.std(0).mean().item() / math.sqrt(per_example.shape[1])  # one draw each
    assert abs(result["kl_z1"] - per_example.mean().item()) < 4 * noise + 1e-3


def test_eval_json_has_per_layer_kl_active_units_and_top_layer_mi(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = evaluate_run(copy, iw_k=10, limit=300)
    saved = json.loads((copy / "eval.json").read_text())
    assert saved["kl_z1"] == result["kl_z1"] and saved["kl_z2"] == result["kl_z2"]
    assert saved["kl_z1"] + saved["kl_z2"] == pytest.approx(saved["kl"], rel=1e-6)
    diag = saved["diagnostics"]
    assert diag["latent_dims"] == [8, 4] and diag["latent_dim"] == 12
    assert diag["kl_per_layer"] == pytest.approx([saved["kl_z1"], saved["kl_z2"]], rel=1e-9)
    assert sum(diag["kl_per_dim"]) == pytest.approx(saved["kl"], rel=1e-6)
    variances = torch.tensor(diag["posterior_mean_variance"])
    assert diag["active_units_z1"] == int((variances[:8] > 0.01).sum())
    assert diag["active_units_z2"] == int((variances[8:] > 0.01).sum())
    assert diag["active_units"] == diag["active_units_z1"] + diag["active_units_z2"]
    # I(x; z2) is at most the top layer's mean KL, E_x KL(q(z2|x) || p(z2)) = I + KL(q(z2) || p).
    assert diag["mi_layer"] == "z2" and 0.0 <= diag["mutual_information"] <= saved["kl_z2"] + 0.05
    # Activity of the mean path, computed here from the layer posteriors themselves.
    data = load_test_split(vaekit.load_run(copy)).subset(torch.arange(300))
    (x,) = seeded_model_inputs(data, binarize="dynamic", dequantize=False, seed=0, batch_size=300)
    layers = vaekit.load_run(copy).encode_layers(x)
    mine = [int((q.mean.double().var(0, correction=0) > 0.01).sum()) for q in layers]
    assert mine == [diag["active_units_z1"], diag["active_units_z2"]]


def test_evaluate_command_prints_the_layers_and_refuses_compile(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["evaluate", str(copy), "--iw", "5", "--limit", "100"]) == 0
    out = capsys.readouterr().out
    assert "KL per layer    z1 " in out and " z2 " in out and "(z1 " in out and "I(x;z2)" in out
    assert main(["evaluate", str(copy), "--iw", "5", "--limit", "100", "--compile"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--compile" in err and "hierarchical" in err
    model = vaekit.load_run(copy)
    with pytest.raises(ConfigError, match="compile"):
        evaluate_model(model, model.config, iw_k=5, limit=10, compile=True)


def test_decoder_bytes_count_the_top_down_nets_each_sample_runs():
    cfg = config_from_dict(RAW).model
    narrow = build_hvae(cfg, (1, 28, 28)).eval()
    wide = build_hvae(cfg.model_copy(update={"ladder_width": 640}), (1, 28, 28)).eval()
    # Same decoder (model.hidden); the top-down net's hidden layer is ladder_width wide.
    assert decoder_bytes_per_sample(wide) > decoder_bytes_per_sample(narrow) + 4 * 2 * 500


@pytest.mark.parametrize("arch", ["mlp", "gated_mlp"])  # gated_mlp: the fmnist-hvae-iwae nets
def test_vamp_prior_ladder_evaluates_with_the_monte_carlo_kl(tmp_path, arch):
    raw = tiny_raw(
        model={**LADDER, "arch": arch, "prior": "vamp", "prior_components": 10},
        objective={"estimator": "iwae", "iw_samples": 2},
        train={"epochs": 1, "num_threads": 1},
    )
    train_quietly(raw, tmp_path / "vamp")
    model = vaekit.load_run(tmp_path / "vamp")
    result = evaluate_model(model, model.config, iw_k=20, limit=150)
    assert result["estimator"] == "monte_carlo"  # a mixture p(z_L) has no closed-form KL
    assert result["kl_z1"] + result["kl_z2"] == pytest.approx(result["kl"], rel=1e-6)
    assert result["diagnostics"]["kl_estimator"] == "monte_carlo"
    assert result["iw_nll"] < result["nll_upper_bound"]
    assert build_report(tmp_path / "vamp").is_file()


# --------------------------------------------------------------------------- pictures


def test_interpolation_runs_in_z1_from_reconstruction_to_reconstruction(model, test_images):
    xa, xb = test_images[:3], test_images[3:6]
    path = interpolate(model, xa, xb, steps=5, with_originals=False).reshape(3, 5, 1, 28, 28)
    torch.testing.assert_close(path[:, 0], model.reconstruct(xa))
    torch.testing.assert_close(path[:, -1], model.reconstruct(xb))
    z1a, z1b = model.encode_layers(xa)[0].mean, model.encode_layers(xb)[0].mean
    torch.testing.assert_close(path[:, 2], model.decode_mean((z1a + z1b) / 2))


def test_a_top_layer_traversal_decodes_the_conditional_prior_means_below(model, test_images):
    x = test_images[:1]
    values = torch.tensor([[-2.0, 0.5, 3.0], [1.0, -1.0, 0.0]])
    images = ladder_traversals(model, x, [(2, 1), (1, 4)], values)
    z2 = model.encode_layers(x)[1].mean.repeat(3, 1)
    z2[:, 1] = values[0]
    expected_top = model.decode_mean(model.conditional_prior(1, z2).mean)
    z1 = model.encode_layers(x)[0].mean.repeat(3, 1)
    z1[:, 4] = values[1]
    torch.testing.assert_close(images, torch.cat([expected_top, model.decode_mean(z1)]))


def _png(path) -> Image.Image:
    with Image.open(path) as img:
        img.load()
        return img.copy()


def _not_blank(img: Image.Image) -> bool:
    low, high = img.convert("L").getextrema()
    return high - low > 50


# (arguments, exit code, default file or the words the refusal must hold)
COMMANDS = [
    (["sample", "-n", "16"], 0, "prior_samples.png"),
    (["reconstruct", "-n", "8"], 0, "test_reconstructions.png"),
    (["interpolate", "--pairs", "2", "--steps", "4"], 0, "interpolation_linear.png"),
    (["interpolate", "--mode", "slerp", "--pairs", "2"], 0, "interpolation_slerp.png"),
    (["traverse", "--dims", "3"], 0, "traversals.png"),
    (["traverse", "--layer", "2"], 0, "traversals_z2.png"),
    (["scatter", "--points", "300"], 0, "latent_scatter.png"),
    (["animate"], 0, "training.gif"),
    (["curves"], 0, "training_curves.png"),
    (["manifold"], 2, "hierarchical VAE"),
    (["traverse", "--layer", "3"], 2, "layers 1..2"),
    (["codes"], 2, "VQ-VAE"),
    (["code-usage"], 2, "VQ-VAE"),
]


@pytest.mark.parametrize(("args", "code", "what"), COMMANDS, ids=lambda v: str(v))
def test_picture_commands_draw_or_say_why_not(run, tmp_path, capsys, args, code, what):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main([args[0], str(copy), *args[1:]]) == code
    out, err = capsys.readouterr()
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and what in err, err
        return
    path = copy / "pictures" / what
    assert out.strip() == str(path)
    assert _not_blank(_png(path))


def test_traverse_shows_every_layer_with_labelled_rows(run, tmp_path, capsys):
    out = tmp_path / "all.png"
    assert main(["traverse", str(run), "--dims", "3", "-o", str(out)]) == 0
    one = tmp_path / "one.png"
    assert main(["traverse", str(run), "--dims", "3", "--layer", "1", "-o", str(one)]) == 0
    # Layers 1 and 2 with three rows each, beside layer 1 alone: twice the tile rows.
    tile = 2 * (28 + 2)
    assert _png(out).height - _png(one).height == 3 * tile
    assert _png(out).width == _png(one).width


# --------------------------------------------------------------------------- report


def test_report_has_a_traversal_picture_per_layer_and_skips_the_manifold(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    evaluate_run(copy, iw_k=5, limit=100)
    page = build_report(copy).read_text()
    assert "<title>Hierarchical VAE report: run</title>" in page
    for layer, rows in ((1, 8), (2, 4)):
        section = page.split(f'<section id="traversals_z{layer}">')[1].split("</section>")[0]
        assert section.count("<img") == 1 and f"--layer {layer}" in section
        img = _png(copy / "pictures" / f"traversals_z{layer}.png")
        assert _not_blank(img) and img.height > rows * 2 * 28
    manifold = page.split('<section id="manifold">')[1].split("</section>")[0]
    assert "<img" not in manifold and html.escape(LADDER_SKIPS["manifold"]) in manifold
    assert not (copy / "pictures" / "manifold.png").exists()
    for key in ("kl_z1", "kl_z2", "diagnostics.active_units_z1", "diagnostics.active_units_z2"):
        assert f'data-key="{key}"' in page, key
    assert "KL of layer z2" in page and "I(x; z2)" in page
    for name in ("kl_per_dimension", "prior_samples", "test_reconstructions", "latent_scatter"):
        assert _not_blank(_png(copy / "pictures" / f"{name}.png")), name


def test_the_report_traversal_command_redraws_its_picture(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    build_report(copy)
    drawn = (copy / "pictures" / "traversals_z2.png").read_bytes()
    out = tmp_path / "again.png"
    args = ["traverse", str(copy), "--layer", "2", "--dims", "10", "--seed", "0"]
    assert main([*args, "-o", str(out)]) == 0
    assert out.read_bytes() == drawn


def test_summary_kl_per_layer_is_that_of_the_evaluation(model):
    data = load_test_split(model)
    summary = posterior_summary(model, data, seed=0)
    assert summary.layer_dims == (8, 4) and summary.means.shape == (len(data), 12)
    result = evaluate_model(model, model.config, diagnostics=False)
    # Other binarization and posterior noise: the same expectations, close over 1000 images.
    assert summary.layer_kl() == pytest.approx([result["kl_z1"], result["kl_z2"]], rel=0.1)


# --------------------------------------------------------------------------- score


def test_score_agrees_with_evaluate_and_flags_noise(run, model, tmp_path, capsys):
    data = load_dataset(model.config.data, "test").subset(torch.arange(150))
    result = evaluate_model(model, model.config, iw_k=10, limit=150, diagnostics=False)
    elbo_scores = score_examples(model, model.config, data, iw_k=None, seed=0)
    assert elbo_scores.mean().item() == pytest.approx(result["nll_upper_bound"], rel=1e-9)
    iw_scores = score_examples(model, model.config, data, iw_k=10, seed=0)
    assert iw_scores.mean().item() == pytest.approx(result["iw_nll"], rel=1e-9)

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    noise = np.random.default_rng(0).integers(0, 256, size=(80, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "noise.npy", noise)
    args = ["score", str(copy), "--data", str(tmp_path / "noise.npy"), "--split", "train"]
    assert main([*args, "--limit", "80", "--iw", "5"]) == 0
    summary = json.loads((copy / "scores" / "noise.json").read_text())
    assert summary["auroc"] > 0.9 and summary["iw_k"] == 5
    assert "AUROC" in capsys.readouterr().out


# --------------------------------------------------------------------------- training


def test_resume_continues_to_the_weights_of_an_uninterrupted_run(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_quietly(RAW, straight)
    first = {**RAW, "train": {**RAW["train"], "epochs": 1}}
    train_quietly(first, resumed)
    assert main(["train", "--resume", str(resumed), "--set", "train.epochs=2"]) == 0
    assert_same_weights(straight, resumed, atol=0)


# An odd global batch (31 / 32 rows and a short last batch) with the Monte Carlo KL, and a
# conv ladder trained by the importance-weighted bound. No BatchNorm: on the CPU each process
# normalises by its own rows, so BatchNorm runs differ from one process by design.
DDP_CASES = {
    "mlp-monte-carlo": tiny_raw(
        model=LADDER, objective={"estimator": "monte_carlo"}, train={"batch_size": 63}
    ),
    "conv-iwae": tiny_raw(
        model={**LADDER, "arch": "conv", "channels": [8, 16], "latent_dims": [6, 3]},
        objective={"estimator": "iwae", "iw_samples": 3},
        train={"epochs": 1, "batch_size": 50},
    ),
}


@pytest.mark.parametrize("case", sorted(DDP_CASES))
def test_torchrun_on_two_processes_trains_the_weights_of_one(tmp_path, case):
    config = write_toml(tmp_path / "c.toml", DDP_CASES[case])
    one, two = tmp_path / "one", tmp_path / "two"
    run_vaekit("train", str(config), "--run-dir", str(one))
    run_vaekit("train", str(config), "--run-dir", str(two), world=2)
    assert_same_weights(one, two)
    # Validation is split over the processes and all-reduced: one process's numbers, the KL
    # of each layer included (the importance-weighted terms have none to log).
    m1, m2 = (_last_metrics(run) for run in (one, two))
    keys = [k for k in m1 if k.startswith(("val/", "train/"))]
    assert set(keys) <= set(m2)
    assert ("val/kl_z2" in keys) == (case == "mlp-monte-carlo")
    for key in keys:
        assert m2[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-4), key


def _last_metrics(run) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
