"""SIGINT / SIGTERM to a real `vaekit train`: a checkpoint, one clear line, the shell's code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import tiny_raw, write_toml
from vaekit.train import checkpoint as ckpt

VAEKIT = [sys.executable, "-m", "vaekit"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_training_cleanly_and_resume_finishes(tmp_path, signum):
    config = write_toml(tmp_path / "s.toml", tiny_raw(train={"epochs": 6, "checkpoint_every": 4}))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VAEKIT_TEST_WRITE_DELAY": "0.02"}
    proc = subprocess.Popen(
        [*VAEKIT, "train", str(config), "--run-dir", str(run)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and not ckpt.read_manifest(run) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vaekit: error: ") and signal.Signals(signum).name in last
    assert f"vaekit train --resume {run}" in last and "Traceback" not in err
    stopped_at = ckpt.read_manifest(run)[-1]["step"]
    assert stopped_at > 0

    done = subprocess.run(
        [*VAEKIT, "train", "--resume", str(run)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    newest = ckpt.read_manifest(run)[-1]
    assert newest["epoch"] == 6 and newest["step"] == 6 * 17 > stopped_at
