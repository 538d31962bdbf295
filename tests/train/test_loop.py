import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import tiny_raw
from vaekit.config import config_from_dict
from vaekit.data import load_dataset
from vaekit.errors import ConfigError, RunError
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import make_optimizer, resolve_config, train, train_step, validate


def _weights(run_dir):
    return load_file(run_dir / ckpt.WEIGHTS_FILE)


def test_training_improves_validation_elbo(tmp_path):
    # ~300 optimiser steps on sprites: the validation ELBO must rise well above the start.
    config = config_from_dict(
        tiny_raw(
            data={"sprites_count": 4800},
            train={"epochs": 4, "batch_size": 64},
            model={"hidden": [128], "latent_dim": 8},
        )
    )
    train_data = load_dataset(config.data, "train")
    val_data = load_dataset(config.data, "val")
    resolved = resolve_config(config, train_data)
    torch.manual_seed(resolved.train.seed)
    before = validate(ckpt.build_model(resolved), val_data, resolved, seed=123)
    result = train(config, tmp_path / "run")
    assert result.steps >= 250
    after = validate(ckpt.load_run(tmp_path / "run"), val_data, resolved, seed=123)
    assert after["elbo"] > before["elbo"] + 100.0, (before, after)
    records = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    assert records[-1]["val/elbo"] > records[0]["val/elbo"]


def test_run_directory_is_complete_and_loadable(tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config, run)
    names = {p.name for p in run.iterdir()}
    assert {
        "config.toml",
        "model.safetensors",
        "state.pt",
        "metrics.jsonl",
        "tensorboard",
        "pictures",
    } <= names
    # The resolved config records what "auto"/the data decided and reloads to an equal config.
    config = ckpt.read_run_config(run)
    assert config.image_shape == [1, 28, 28] and config.data.name == "sprites"
    # state.pt loads with weights_only=True and holds what an exact resume needs.
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] > 0
    assert {"torch", "shuffle", "noise"} <= set(state["rng"])
    # metrics.jsonl: one record per epoch with train and validation terms.
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert r["val/elbo"] == pytest.approx(-(r["val/recon"] + r["val/kl"]), rel=1e-6)
        assert r["samples_per_s"] > 0
    # Pictures per epoch, real PNGs of an 8-column grid.
    for kind in ("samples", "recon"):
        files = sorted((run / "pictures" / kind).glob("epoch_*.png"))
        assert [f.name for f in files] == ["epoch_001.png", "epoch_002.png"]
        with Image.open(files[-1]) as img:
            assert img.format == "PNG" and img.width == 2 * (8 * 30 + 2)
    model = ckpt.load_run(run)
    assert not model.training and model.sample(3).shape == (3, 1, 28, 28)


def test_tensorboard_events_hold_the_metrics(tmp_path, tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny_config, tmp_path / "run")
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/elbo", "val/elbo", "val/kl", "samples_per_s"} <= set(tags)
    records = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    events = acc.Scalars("val/elbo")
    assert [e.step for e in events] == [r["step"] for r in records]
    assert [e.value for e in events] == pytest.approx([r["val/elbo"] for r in records], rel=1e-6)


def test_resume_continues_exactly(tmp_path):
    raw = tiny_raw(
        train={"epochs": 4, "lr_schedule": "constant"},
        objective={"warmup": "linear", "warmup_steps": 30},
    )
    straight = tmp_path / "straight"
    train(config_from_dict(raw), straight)

    stopped = tmp_path / "stopped"
    raw_two = tiny_raw(
        train={"epochs": 2, "lr_schedule": "constant"},
        objective={"warmup": "linear", "warmup_steps": 30},
    )
    train(config_from_dict(raw_two), stopped)
    assert not all(
        torch.equal(a, b)
        for a, b in zip(_weights(stopped).values(), _weights(straight).values(), strict=True)
    )
    config = ckpt.read_run_config(stopped).model_copy(deep=True)
    config.train.epochs = 4
    train(config, stopped, resume=True)

    a, b = _weights(straight), _weights(stopped)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rec_a = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    rec_b = [json.loads(x) for x in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert [r["val/elbo"] for r in rec_a] == [r["val/elbo"] for r in rec_b]


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        config = config_from_dict(tiny_raw(train={"epochs": 1, "seed": seed}))
        runs[name] = train(config, tmp_path / name).last["val/elbo"]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_refuses_to_overwrite_a_trained_run(tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config, run)
    before = (run / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match="already holds a trained run"):
        train(tiny_config, run)
    assert (run / "model.safetensors").read_bytes() == before


def test_resume_past_the_last_epoch_explains_how_to_continue(tmp_path, tiny_config):
    run = tmp_path / "run"
    train(tiny_config, run)
    with pytest.raises(RunError, match=r"train\.epochs"):
        train(ckpt.read_run_config(run), run, resume=True)


def test_bf16_precision_trains_with_float32_probabilities(tmp_path):
    # train.precision = "bf16": products under bfloat16 autocast, the loss still float32.
    config = config_from_dict(tiny_raw(train={"epochs": 1, "precision": "bf16"}))
    result = train(config, tmp_path / "run")
    assert torch.isfinite(torch.tensor(result.last["train/loss"]))
    assert ckpt.read_run_config(tmp_path / "run").train.precision == "bf16"
    model = ckpt.load_run(tmp_path / "run")
    x = torch.rand(3, 1, 28, 28).round()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = model.encode(x)
        params = model.decode(q.mean)
    assert q.mean.dtype == torch.float32 and params.dtype == torch.float32


def test_precision_must_be_fp32_or_bf16():
    with pytest.raises(ConfigError, match="precision"):
        config_from_dict(tiny_raw(train={"precision": "fp16"}))


def test_train_step_is_one_optimiser_step():
    raw = config_from_dict(tiny_raw())
    config = resolve_config(raw, load_dataset(raw.data, "train"))
    torch.manual_seed(0)
    model = ckpt.build_model(config)
    optimizer = make_optimizer(model, config)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.rand(8, 1, 28, 28).round()
    result = train_step(model, optimizer, x, config, kl_scale=1.0)
    assert result.finite
    assert result.terms.recon.shape == (8,) and result.loss.dim() == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
