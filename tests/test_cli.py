"""The real `vaekit` command, run in subprocesses as a user would run it."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import FASHION_DIR, needs_fashion, tiny_raw, write_toml
from vaekit.cli import build_parser

VAEKIT = [sys.executable, "-m", "vaekit"]


def run(*args, cwd=None, check=True):
    env = {**os.environ, "COLUMNS": "120"}
    proc = subprocess.run(
        [*VAEKIT, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _subcommands(parser):
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_help_lists_every_command():
    out = run("--help").stdout
    for name in ("train", "sample", "reconstruct", "evaluate", "data"):
        assert name in out


@pytest.mark.parametrize(
    "command",
    [[name] for name in _subcommands(build_parser())]
    + [["data", name] for name in _subcommands(_subcommands(build_parser())["data"])],
    ids=" ".join,
)
def test_every_command_has_help(command):
    proc = run(*command, "--help")
    assert proc.stdout.startswith("usage: vaekit " + " ".join(command))


def test_vaekit_console_script_is_installed():
    script = Path(sys.executable).parent / "vaekit"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("vaekit ")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    config = write_toml(tmp / "tiny.toml", tiny_raw())
    proc = run("train", config, "--run-dir", tmp / "run", "--set", "model.latent_dim=3")
    assert "Outputs in" in proc.stderr
    return tmp / "run"


def test_train_writes_the_run_with_overrides(trained_run):
    text = (trained_run / "config.toml").read_text()
    assert "latent_dim = 3" in text
    assert (trained_run / "model.safetensors").is_file()


def test_sample_writes_a_png_grid(trained_run, tmp_path):
    out = tmp_path / "s.png"
    proc = run("sample", trained_run, "-n", 16, "-o", out, "--temperature", 0.8)
    assert proc.stdout.strip() == str(out)
    with Image.open(out) as img:
        assert img.mode == "L" and img.size == (2 * (8 * 30 + 2), 2 * (2 * 30 + 2))
        assert img.getextrema()[1] > 0  # not a blank grid


def test_reconstruct_writes_originals_above_reconstructions(trained_run, tmp_path):
    out = tmp_path / "r.png"
    run("reconstruct", trained_run, "-n", 16, "-o", out)
    with Image.open(out) as img:
        # 16 images, 8 per row, each row of originals followed by its reconstructions: 4 rows.
        assert img.size == (2 * (8 * 30 + 2), 2 * (4 * 30 + 2 + 6))


def test_evaluate_is_seeded_and_writes_eval_json(trained_run):
    first = run("evaluate", trained_run, "--seed", 5)
    one = json.loads((trained_run / "eval.json").read_text())
    run("evaluate", trained_run, "--seed", 5)
    two = json.loads((trained_run / "eval.json").read_text())
    assert one == two
    assert one["units"] == "nats per example" and one["split"] == "test"
    assert one["elbo"] == pytest.approx(-(one["recon"] + one["kl"]), rel=1e-6)
    assert f"{one['elbo']:.3f}" in first.stdout
    run("evaluate", trained_run, "--seed", 6)
    three = json.loads((trained_run / "eval.json").read_text())
    assert three["elbo"] != one["elbo"]


def test_resume_through_the_cli(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    run("train", "--resume", copy, "--set", "train.epochs=3")
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "configs/nope.toml"], "no such config file"),
        (["train", "{config}", "--set", "model.latnt_dim=3"], "model.latnt_dim: unknown key"),
        (["train", "{config}", "--set", "model.latent_dim=-1"], "model.latent_dim"),
        (["train", "{config}", "--set", "train.epochs=ten"], "train.epochs"),
        (["sample", "{missing}"], "no such run directory"),
        (["evaluate", "{missing}"], "no such run directory"),
        pytest.param(
            ["evaluate", "{missing}", "--device", "cuda"],
            "--device: 'cuda', but torch sees no CUDA device",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA"),
        ),
        (["data", "info", "imagenet"], "imagenet"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, args, needle):
    config = write_toml(tmp_path / "c.toml", tiny_raw())
    args = [a.format(config=config, missing=tmp_path / "missing") for a in args]
    proc = run(*args, check=False, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vaekit: error:"), proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr


def test_conv_too_deep_for_the_data_is_a_user_error(tmp_path):
    config = write_toml(
        tmp_path / "c.toml", tiny_raw(model={"arch": "conv", "channels": [8, 8, 8]})
    )
    proc = run("train", config, "--run-dir", tmp_path / "run", check=False)
    assert proc.returncode == 2
    assert "divisible by 8" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_data_list_shows_the_catalog():
    out = run("data", "list").stdout
    for name in ("fashion-mnist", "mnist", "sprites"):
        assert name in out


@needs_fashion
def test_data_download_from_a_local_mirror_verifies_real_files(serve, tmp_path):
    url = serve(FASHION_DIR)
    dest = tmp_path / "cache"
    proc = run("data", "download", "fashion-mnist", "--mirror", url, "--dest", dest)
    assert proc.stdout.strip().endswith(str(dest))
    got = sorted(p.name for p in dest.iterdir())
    assert got == sorted(p.name for p in FASHION_DIR.glob("*-ubyte.gz"))
    for name in got:
        assert (dest / name).read_bytes() == (FASHION_DIR / name).read_bytes()


@needs_fashion
def test_data_download_refuses_a_corrupt_mirror_and_keeps_nothing(serve, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for src in FASHION_DIR.glob("*-ubyte.gz"):
        data = src.read_bytes()
        if src.name.startswith("t10k-labels"):
            data = gzip.compress(gzip.decompress(data)[:-10] + b"\x00" * 10)
        (mirror / src.name).write_bytes(data)
    dest = tmp_path / "cache"
    proc = run(
        "data", "download", "fashion-mnist", "--mirror", serve(mirror), "--dest", dest, check=False
    )
    assert proc.returncode == 2
    assert "t10k-labels" in proc.stderr and "sha256" in proc.stderr
    assert not (dest / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in dest.iterdir() if p.name.startswith(".") or "part" in p.name]


@needs_fashion
def test_data_info_reports_location_and_checksums():
    info = json.loads(run("data", "info", "fashion-mnist", "--json").stdout)
    assert info["location"] == str(FASHION_DIR) and info["checksums"] == "ok"
    assert (info["train_count"], info["test_count"]) == (60000, 10000)
    text = run("data", "info", "fashion-mnist").stdout
    assert f"location: {FASHION_DIR}" in text and "checksums: ok" in text


@pytest.mark.parametrize(
    ("command", "args", "default_name"),
    [
        ("interpolate", ["--mode", "slerp", "--pairs", 2, "--steps", 5], "interpolation_slerp.png"),
        ("interpolate", ["--pairs", 2], "interpolation_linear.png"),
        ("traverse", ["--dims", 3], "traversals.png"),
        ("scatter", ["--points", 200], "latent_scatter.png"),
        ("curves", [], "training_curves.png"),
        ("animate", [], "training.gif"),
    ],
)
def test_picture_commands_write_images(trained_run, tmp_path, command, args, default_name):
    out = tmp_path / default_name
    proc = run(command, trained_run, *args, "-o", out)
    assert proc.stdout.strip() == str(out)
    with Image.open(out) as img:
        assert img.format in ("PNG", "GIF") and img.width > 50 and img.height > 50
        assert img.convert("L").getextrema()[1] > img.convert("L").getextrema()[0]
    # Without -o the picture goes where the report looks for it.
    run(command, trained_run, *args)
    assert (trained_run / "pictures" / default_name).is_file()


def test_manifold_needs_a_two_dimensional_latent(trained_run):
    proc = run("manifold", trained_run, check=False)
    assert proc.returncode == 2 and "latent_dim" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_evaluate_with_importance_sampling(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    proc = run("evaluate", copy, "--iw", 20, "--limit", 200, "--binarization", "static")
    result = json.loads((copy / "eval.json").read_text())
    assert result["iw_k"] == 20 and result["examples"] == 200
    assert result["binarization"] == "static" and result["seed"] == 0
    # The IW bound with K=20 is tighter than the ELBO on average.
    assert result["iw_nll"] < result["nll_upper_bound"]
    assert f"IW-NLL (K=20)  {result['iw_nll']:.3f}" in proc.stdout
    assert result["diagnostics"]["latent_dim"] == 3


def test_score_flags_noise_images_and_feeds_the_report(trained_run, tmp_path):
    import shutil

    import numpy as np

    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    noise = np.random.default_rng(0).integers(0, 256, size=(150, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "noise.npy", noise)
    out = tmp_path / "scores.csv"
    proc = run(
        "score",
        copy,
        "--data",
        tmp_path / "noise.npy",
        "--split",
        "train",
        "--limit",
        100,
        "-o",
        out,
    )
    rows = out.read_text().splitlines()
    assert rows[0] == "index,score" and len(rows) == 101
    summary = json.loads((copy / "scores" / "noise.json").read_text())
    # Uniform noise is nothing like sprites: almost every noise image scores higher.
    assert summary["auroc"] > 0.95
    assert f"{summary['auroc']:.4f}" in proc.stdout
    report = Path(run("report", copy).stdout.strip())
    assert report == copy / "report.html"
    html = report.read_text()
    assert "noise" in html and f"{summary['auroc']:.3f}" in html
