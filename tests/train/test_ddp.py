"""Data-parallel training through the real ``torchrun`` (gloo on the CPU, two processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_VQ, tiny_raw, write_toml
from vaekit.train import checkpoint as ckpt

VAEKIT = [sys.executable, "-m", "vaekit"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
WORKER = Path(__file__).with_name("ddp_quantizer_worker.py")
GOODBYE_WORKER = Path(__file__).with_name("ddp_goodbye_worker.py")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def _torchrun(n: int, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TORCHRUN, "--nproc_per_node", str(n), *args],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=timeout,
    )


def _start_torchrun(n: int, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*TORCHRUN, "--nproc_per_node", str(n), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(**env),
    )


def _vaekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VAEKIT, *args], capture_output=True, text=True, env=_env(), timeout=300)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / ckpt.WEIGHTS_FILE)


def _assert_same_weights(a: Path, b: Path, atol: float = 2e-5) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=atol, rtol=1e-4), name


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / ckpt.METRICS_FILE).read_text().splitlines()]


# Batch 63 splits 31 / 32 and leaves a last partial batch: the loss weights must make DDP's
# averaged gradient the gradient of the global mean. The conv case adds channels-last conv
# weights and the single-sample Monte Carlo KL.
CASES = {
    "mlp-analytic": tiny_raw(train={"epochs": 2, "batch_size": 63}),
    "conv-monte-carlo": tiny_raw(
        model={"arch": "conv", "channels": [8, 16], "latent_dim": 4},
        objective={"estimator": "monte_carlo"},
        train={"epochs": 1, "batch_size": 50},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_train_the_weights_of_one(tmp_path, case):
    config = write_toml(tmp_path / "c.toml", CASES[case])
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(_vaekit("train", str(config), "--run-dir", str(one)))
    result = _ok(_torchrun(2, "-m", "vaekit", "train", str(config), "--run-dir", str(two)))

    _assert_same_weights(one, two)
    # Validation is split across the processes and all-reduced: one process's numbers.
    m1, m2 = _metrics(one), _metrics(two)
    assert len(m2) == len(m1) == CASES[case]["train"]["epochs"]  # rank 0 alone logs
    for a, b in zip(m1, m2, strict=True):
        assert a["step"] == b["step"]
        for key in ("val/elbo", "val/recon", "val/kl", "train/elbo", "train/loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-4), key
    assert len(list((two / ckpt.TENSORBOARD_DIR).glob("events.*"))) == 1
    assert result.stderr.count("data-parallel: 2 processes (gloo on cpu)") == 1


def test_a_ddp_run_resumes_on_a_different_number_of_processes(tmp_path):
    raw = tiny_raw(train={"epochs": 2, "batch_size": 64})
    config = write_toml(tmp_path / "c.toml", raw)
    straight, run = tmp_path / "straight", tmp_path / "run"
    _ok(_vaekit("train", str(config), "--run-dir", str(straight)))
    first = write_toml(tmp_path / "first.toml", tiny_raw(train={"epochs": 1, "batch_size": 64}))
    _ok(_torchrun(2, "-m", "vaekit", "train", str(first), "--run-dir", str(run)))
    _ok(_vaekit("train", "--resume", str(run), "--set", "train.epochs=2"))
    _assert_same_weights(straight, run)


def _children(parent: int) -> dict[int, dict[str, str]]:
    """Processes whose parent is ``parent``, with their environments (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            raw = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        env = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
        found[int(entry.name)] = env
    return found


def test_killing_one_rank_stops_the_run_without_a_hang_and_it_resumes(tmp_path):
    epochs = 20  # 340 steps, a checkpoint every 10
    raw = tiny_raw(
        train={"epochs": epochs, "batch_size": 64, "checkpoint_every": 10, "dist_timeout": 30}
    )
    config = write_toml(tmp_path / "c.toml", raw)
    straight, run = tmp_path / "straight", tmp_path / "run"
    _ok(_torchrun(2, "-m", "vaekit", "train", str(config), "--run-dir", str(straight)))

    # A pause before each checkpoint's rename slows the run enough to land the kill mid-run.
    proc = _start_torchrun(
        2,
        "-m",
        "vaekit",
        "train",
        str(config),
        "--run-dir",
        str(run),
        VAEKIT_TEST_WRITE_DELAY="0.05",
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            entries = ckpt.read_manifest(run) if run.exists() else []
            if entries and entries[-1]["step"] >= 60:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run wrote no checkpoint at step 60 within two minutes")
        ranks = {int(env["RANK"]): pid for pid, env in _children(proc.pid).items() if "RANK" in env}
        assert sorted(ranks) == [0, 1]
        os.kill(ranks[1], signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = proc.communicate(timeout=90)  # no hang
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert time.monotonic() - killed_at < 60, stderr[-2000:]
    newest = ckpt.read_manifest(run)[-1]
    assert 60 <= newest["step"] < epochs * 17, newest

    # The last checkpoint is intact and the run continues from it, on two processes again,
    # to the very weights of the run that was never interrupted.
    resumed = _ok(_torchrun(2, "-m", "vaekit", "train", "--resume", str(run)))
    assert "resuming at step" in resumed.stderr or newest["batch_in_epoch"] == 0
    _assert_same_weights(straight, run)
    assert [m["step"] for m in _metrics(run)] == [m["step"] for m in _metrics(straight)]


def _codebooks(out: Path, n: int) -> list[dict[str, torch.Tensor]]:
    return [torch.load(out / f"rank-{r}.pt") for r in range(n)]


def test_vq_codebooks_stay_identical_across_processes_through_restarts(tmp_path):
    out = tmp_path / "two"
    out.mkdir()
    _ok(_torchrun(2, str(WORKER), str(out), "2", "1"))  # k-means init and dead-code restarts
    a, b = _codebooks(out, 2)
    assert a["restarted_codes"] > 0  # the restarts really happened
    for name in ("codebook", "ema_count", "ema_sum", "steps_unused"):
        assert torch.equal(a[name], b[name]), name


def test_vq_ema_statistics_of_two_processes_are_those_of_the_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _ok(_torchrun(1, str(WORKER), str(one), "0", "0"))
    _ok(_torchrun(2, str(WORKER), str(two), "0", "0"))
    (single,), (a, b) = _codebooks(one, 1), _codebooks(two, 2)
    for name in ("codebook", "ema_count", "ema_sum"):
        assert torch.equal(a[name], b[name]), name
        assert torch.allclose(a[name], single[name], atol=1e-5), name


def test_a_vqvae_trains_under_torchrun(tmp_path):
    config = write_toml(
        tmp_path / "vq.toml",
        tiny_raw(
            data={"binarize": "none"},
            model={**TINY_VQ, "likelihood": "discretized_logistic"},
            train={"epochs": 1, "batch_size": 32},
        ),
    )
    run = tmp_path / "run"
    _ok(_torchrun(2, "-m", "vaekit", "train", str(config), "--run-dir", str(run)))
    (last,) = _metrics(run)
    assert 0 < last["val/code_usage"] <= 1 and last["val/perplexity"] > 1


def test_a_batch_smaller_than_the_number_of_processes_is_refused(tmp_path):
    config = write_toml(tmp_path / "c.toml", tiny_raw(train={"batch_size": 1}))
    result = _torchrun(2, "-m", "vaekit", "train", str(config), "--run-dir", str(tmp_path / "r"))
    assert result.returncode != 0
    assert "train.batch_size: 1 is smaller than the 2 processes" in result.stderr
    assert not (tmp_path / "r" / ckpt.WEIGHTS_FILE).exists()


def test_sigterm_to_torchrun_stops_every_process_at_one_step_and_one_process_resumes(tmp_path):
    raw = tiny_raw(train={"epochs": 400, "batch_size": 64, "checkpoint_every": 10})
    config = write_toml(tmp_path / "c.toml", raw)
    run = tmp_path / "run"
    proc = _start_torchrun(2, "-m", "vaekit", "train", str(config), "--run-dir", str(run))
    try:
        deadline = time.monotonic() + 120
        while not (run.exists() and ckpt.read_manifest(run)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both processes
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    # Both processes stopped at the same step; only rank 0 says so, and it wrote a checkpoint.
    # (The signal may land mid-epoch, "SIGTERM at step N", or at an epoch's end, "SIGTERM
    # after epoch E (step N)".)
    assert stderr.count(": error: SIGTERM ") == 1, stderr[-2000:]
    assert "vaekit[rank 0]: error: SIGTERM " in stderr
    newest = ckpt.read_manifest(run)[-1]
    assert f"step {newest['step']}" in stderr

    # One process continues the two-process run mid-epoch and ends where one process would.
    epochs = newest["epoch"] + 2
    _ok(_vaekit("train", "--resume", str(run), "--set", f"train.epochs={epochs}"))
    straight = tmp_path / "straight"
    _ok(
        _vaekit("train", str(config), "--run-dir", str(straight), "--set", f"train.epochs={epochs}")
    )
    _assert_same_weights(straight, run)
    resumed, uninterrupted = _metrics(run), _metrics(straight)
    assert [m["step"] for m in resumed] == [m["step"] for m in uninterrupted]
    # The interrupted epoch's training means join the two processes' parts with the rest.
    assert resumed[-2]["train/elbo"] == pytest.approx(uninterrupted[-2]["train/elbo"], rel=1e-5)


def test_a_second_sigterm_at_the_goodbye_barrier_neither_kills_a_process_nor_breaks_its_peer(
    tmp_path,
):
    """torchrun signals its processes in turn: one may stop on its peer's signal and receive its
    own while the two wait at the last barrier. It must still end as a signal stop (exit 143,
    one line from rank 0), not die there and leave its peer a broken connection. Rank 1 also
    lingers after leaving the group, so that the SIGTERM torchrun sends it once rank 0 has
    exited lands on its way out (the CI failure of an earlier version: exitcode -15)."""
    config = write_toml(tmp_path / "c.toml", tiny_raw())
    result = _torchrun(2, str(GOODBYE_WORKER), str(config), str(tmp_path / "run"), timeout=120)
    assert "internal error" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count(": error: SIGTERM at step 0") == 1, result.stderr[-3000:]
    assert "vaekit[rank 0]: error: SIGTERM" in result.stderr
    # Each process exited as one stopped by SIGTERM does (128 + 15), none was killed by it.
    assert result.stderr.count("exitcode  : 143 ") == 2, result.stderr[-3000:]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_multi_node_form_with_a_rendezvous_endpoint_trains_the_same_weights(tmp_path):
    """Two torchrun agents, as on two machines (here both on this one), meet at a c10d
    rendezvous endpoint: ``--nnodes 2 --rdzv_backend c10d --rdzv_endpoint HOST:PORT``."""
    config = write_toml(tmp_path / "c.toml", tiny_raw(train={"epochs": 1, "batch_size": 64}))
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(_vaekit("train", str(config), "--run-dir", str(one)))
    endpoint = f"127.0.0.1:{_free_port()}"
    node = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id", "vaekit-test",
        "-m", "vaekit", "train", str(config), "--run-dir", str(two),
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(
            node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
        )
        for _ in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=180) for p in nodes]
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in nodes] == [0, 0], [err[-1500:] for _, err in outputs]
    said = "".join(err for _, err in outputs)
    assert said.count("data-parallel: 2 processes (gloo on cpu)") == 1
    _assert_same_weights(one, two)


def test_a_process_that_joined_a_group_exits_with_its_code_and_no_interpreter_teardown():
    """A worker that joined a gloo group ends through ``distributed.exit_now``: its exit code
    and buffered output survive, and the interpreter's teardown (where a backend thread left
    unjoined made ``std::terminate`` abort finished workers) does not run: no atexit hook."""
    script = (
        "import atexit, sys\n"
        "from vaekit import distributed\n"
        "from vaekit.cli import main\n"
        "atexit.register(lambda: print('teardown ran', flush=True))\n"
        "distributed.start('cpu', timeout_s=60)\n"
        "assert distributed.joined_a_group()\n"
        "print('buffered before exit', end='')\n"
        "sys.exit(main(['evaluate', 'no-such-run']))\n"
    )
    env = _env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no-such-run" in result.stderr
    assert result.stdout == "buffered before exit"


def test_a_process_without_a_group_keeps_the_interpreter_teardown():
    """Without torchrun nothing changes: main returns its code and atexit hooks run."""
    script = (
        "import atexit, sys\n"
        "from vaekit.cli import main\n"
        "atexit.register(lambda: print('teardown ran', flush=True))\n"
        "sys.exit(main(['evaluate', 'no-such-run']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == "teardown ran\n"
