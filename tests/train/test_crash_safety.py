"""Checkpoints that survive interruptions, corruption, full disks and NaN losses (in-process)."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import signal

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_raw
from vaekit.config import config_from_dict
from vaekit.errors import RunError
from vaekit.train import checkpoint as ckpt
from vaekit.train import loop
from vaekit.train.loop import TrainingInterrupted, train

# 1,200 sprites, 10% validation: 1,080 training images = 17 batches of 64 per epoch.
STEPS_PER_EPOCH = 17


def raw(**train_keys):
    return tiny_raw(train={"epochs": 2, "checkpoint_every": 5} | train_keys)


def weights(run_dir):
    return load_file(run_dir / ckpt.WEIGHTS_FILE)


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def records(run_dir):
    return [json.loads(x) for x in (run_dir / ckpt.METRICS_FILE).read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted two-epoch run with step checkpoints, to compare against."""
    run = tmp_path_factory.mktemp("straight") / "run"
    train(config_from_dict(raw()), run)
    return run


def test_manifest_lists_the_newest_checkpoints_with_their_checksums(straight):
    entries = ckpt.read_manifest(straight)
    assert len(entries) == 2  # keep_checkpoints
    assert entries[-1]["step"] == 2 * STEPS_PER_EPOCH and entries[-1]["epoch"] == 2
    assert entries[0]["step"] == 30 and entries[0]["batch_in_epoch"] == 30 - STEPS_PER_EPOCH
    folders = sorted(p.name for p in (straight / ckpt.CHECKPOINTS_DIR).iterdir() if p.is_dir())
    assert folders == [e["name"] for e in entries]
    for e in entries:
        for name, digest in e["files"].items():
            data = (straight / ckpt.CHECKPOINTS_DIR / e["name"] / name).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest
    # the top-level files are the newest checkpoint's
    newest = straight / ckpt.CHECKPOINTS_DIR / entries[-1]["name"]
    assert (newest / ckpt.WEIGHTS_FILE).read_bytes() == (straight / ckpt.WEIGHTS_FILE).read_bytes()


def _interrupt_at(monkeypatch, calls: int, signum: int = signal.SIGINT):
    """Make the ``calls``-th training step deliver ``signum`` to this process."""
    count = {"n": 0}
    real = loop.training_loss

    def loss_then_signal(*args, **kwargs):
        count["n"] += 1
        if count["n"] == calls:
            signal.raise_signal(signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "training_loss", loss_then_signal)


@pytest.mark.parametrize(("at", "signum"), [(8, signal.SIGINT), (23, signal.SIGTERM)])
def test_a_signal_checkpoints_the_current_step_and_resume_is_exact(
    tmp_path, monkeypatch, straight, at, signum
):
    run = tmp_path / "run"
    _interrupt_at(monkeypatch, at, signum)
    with pytest.raises(TrainingInterrupted, match="--resume") as info:
        train(config_from_dict(raw()), run)
    assert info.value.exit_code == 128 + signum
    assert ckpt.read_manifest(run)[-1]["step"] == at  # saved at the step it stopped
    monkeypatch.undo()
    train(ckpt.read_run_config(run), run, resume=True)
    assert_same_weights(run, straight)
    assert [r["epoch"] for r in records(run)] == [1, 2]
    # the epoch that was cut in two reports the same numbers as the straight run's
    for key in ("train/elbo", "val/elbo"):
        assert records(run)[-1][key] == pytest.approx(records(straight)[-1][key], rel=1e-9)


def test_a_corrupted_or_truncated_checkpoint_is_skipped_for_the_previous_one(
    tmp_path, straight, capsys
):
    run = tmp_path / "run"
    train(config_from_dict(raw(epochs=1, checkpoint_every=4)), run)
    entries = ckpt.read_manifest(run)
    newest = run / ckpt.CHECKPOINTS_DIR / entries[-1]["name"]
    data = bytearray((newest / ckpt.WEIGHTS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the middle of a tensor
    (newest / ckpt.WEIGHTS_FILE).write_bytes(bytes(data))
    model = ckpt.build_model(ckpt.read_run_config(run))
    warnings: list[str] = []
    state = ckpt.load_checkpoint(run, model, warn=warnings.append)
    assert state.step == entries[-2]["step"] == 16
    assert "checksum mismatch" in warnings[0] and entries[-1]["name"] in warnings[0]
    # truncate the older one too: nothing usable is left, and the error says why
    older = run / ckpt.CHECKPOINTS_DIR / entries[-2]["name"] / ckpt.STATE_FILE
    older.write_bytes(older.read_bytes()[:100])
    with pytest.raises(RunError, match=r"no usable checkpoint.*checksum mismatch"):
        ckpt.load_checkpoint(run, model)


def test_resume_after_corruption_continues_from_the_previous_checkpoint(tmp_path, straight):
    run = tmp_path / "run"
    cfg = config_from_dict(raw(epochs=1))
    train(cfg, run)  # checkpoints at steps 15 (mid-epoch) and 17 (end of epoch 1)
    newest = run / ckpt.CHECKPOINTS_DIR / ckpt.read_manifest(run)[-1]["name"]
    (newest / ckpt.STATE_FILE).write_bytes(b"garbage")
    more = ckpt.read_run_config(run).model_copy(deep=True)
    more.train.epochs = 2
    train(more, run, resume=True)  # from step 15, the rest of epoch 1 again, then epoch 2
    assert_same_weights(run, straight)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, straight):
    run = tmp_path / "run"
    calls = {"n": 0}
    real = ckpt.atomic_write_bytes

    def fails_on_the_fifth_write(path, data):
        calls["n"] += 1
        if calls["n"] == 5:  # the weights of the second checkpoint (4 writes per checkpoint)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", fails_on_the_fifth_write)
    intact = r"disk full.*newest complete checkpoint \(step 5\) is intact"
    with pytest.raises(RunError, match=intact):
        train(config_from_dict(raw()), run)
    monkeypatch.undo()
    assert [e["step"] for e in ckpt.read_manifest(run)] == [5]
    model = ckpt.build_model(ckpt.read_run_config(run))
    assert ckpt.load_checkpoint(run, model).step == 5
    train(ckpt.read_run_config(run), run, resume=True)
    assert_same_weights(run, straight)


class _NaNGradient(torch.autograd.Function):
    """Identity times zero forward; NaN backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x * 0

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def _poison(monkeypatch, bad_steps: set[int] | None, *, gradient: bool = False):
    """Make the training loss (or only its gradient) NaN at the given 1-based calls."""
    count = {"n": 0}
    real = loop.training_loss

    def poisoned(terms, cfg, kl_scale):
        count["n"] += 1
        value = real(terms, cfg, kl_scale)
        if bad_steps is None or count["n"] in bad_steps:
            if gradient:
                return value + _NaNGradient.apply(terms.recon.sum())
            return value * math.nan
        return value

    monkeypatch.setattr(loop, "training_loss", poisoned)


@pytest.mark.parametrize("gradient", [False, True], ids=["nan-loss", "nan-gradient"])
def test_non_finite_steps_are_skipped_and_logged(tmp_path, monkeypatch, gradient):
    _poison(monkeypatch, {3, 4, 20}, gradient=gradient)
    train(config_from_dict(raw(max_bad_steps=3)), tmp_path / "run")
    recs = records(tmp_path / "run")
    assert [r["skipped_steps"] for r in recs] == [2, 1]
    assert all(math.isfinite(r["train/elbo"]) for r in recs)
    assert all(torch.isfinite(w).all() for w in weights(tmp_path / "run").values())
    assert recs[-1]["lr"] == pytest.approx(1e-3)  # no restore: the learning rate is untouched


def test_bad_steps_in_a_row_restore_the_last_checkpoint_with_a_lower_lr(tmp_path, monkeypatch):
    _poison(monkeypatch, {7, 8, 9})
    train(config_from_dict(raw(max_bad_steps=3, bad_step_lr_factor=0.25)), tmp_path / "run")
    recs = records(tmp_path / "run")
    assert recs[0]["skipped_steps"] == 3 and recs[-1]["lr"] == pytest.approx(0.25e-3)
    state = torch.load(tmp_path / "run" / ckpt.STATE_FILE, weights_only=True)
    assert state["health"]["restores"] == 1


def test_a_run_that_keeps_diverging_stops_with_a_diagnosis(tmp_path, monkeypatch):
    _poison(monkeypatch, None)
    cfg = config_from_dict(raw(max_bad_steps=2, max_restores=2))
    with pytest.raises(RunError, match=r"diverged.*NaN/Inf for 2 steps in a row.*2 restores"):
        train(cfg, tmp_path / "run")
