"""`kill -9` at random moments, checkpoint writes included: the run always resumes, exactly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import tiny_raw, write_toml
from vaekit.train import checkpoint as ckpt

VAEKIT = [sys.executable, "-m", "vaekit"]
TRIALS = 12
EPOCHS = 10  # 170 steps with a checkpoint every 3: room for every kill before the end


def _env(delay: float) -> dict[str, str]:
    # A pause before each rename widens the window in which a kill lands mid-write.
    return {**os.environ, "VAEKIT_TEST_WRITE_DELAY": str(delay), "OMP_NUM_THREADS": "1"}


def _newest_step(run: Path) -> int:
    entries = ckpt.read_manifest(run)
    return entries[-1]["step"] if entries else 0


def _leftover_temp_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*.tmp")]


def test_kill_9_at_random_moments_never_loses_a_complete_checkpoint(tmp_path):
    config = write_toml(
        tmp_path / "k.toml", tiny_raw(train={"epochs": EPOCHS, "checkpoint_every": 3})
    )
    straight = tmp_path / "straight"
    subprocess.run(
        [*VAEKIT, "train", str(config), "--run-dir", str(straight)],
        check=True,
        capture_output=True,
        env=_env(0),
        timeout=600,
    )

    run = tmp_path / "run"
    rng = random.Random(0)
    kills, mid_write, last_step = 0, 0, 0
    while True:
        entries = ckpt.read_manifest(run) if run.exists() else []
        if entries and entries[-1]["epoch"] == EPOCHS:
            break  # a kill landed after the last checkpoint: the run is complete
        args = ["train", "--resume", str(run)] if entries else ["train", str(config)]
        if not entries:
            args += ["--run-dir", str(run)]
        proc = subprocess.Popen(
            [*VAEKIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(0.03)
        )
        if kills >= TRIALS:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err.decode()
            break
        # Let it get past a new checkpoint, then kill it at a random moment.
        deadline = time.monotonic() + 120
        while (
            proc.poll() is None and _newest_step(run) <= last_step and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))
        complete_before = _newest_step(run)
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate(timeout=60)
        if not killed:
            assert proc.returncode == 0, err.decode()
            break  # finished before the kill landed
        mid_write += bool(_leftover_temp_files(run))
        # resume always finds a valid checkpoint, and never an older one than was complete
        model = ckpt.build_model(ckpt.read_run_config(run))
        state = ckpt.load_checkpoint(run, model)
        assert state is not None and state.step >= complete_before >= last_step
        last_step = state.step

    assert kills >= 10, kills
    assert mid_write >= 1, "no kill landed during a checkpoint write"
    a, b = load_file(run / ckpt.WEIGHTS_FILE), load_file(straight / ckpt.WEIGHTS_FILE)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # a later checkpoint write cleans up what a killed one left behind
    assert not _leftover_temp_files(run / ckpt.CHECKPOINTS_DIR)
    assert not [p for p in run.glob(".*.tmp") if ".safetensors." in p.name or ".pt." in p.name]
