"""Loading a run or a dataset never executes code, even when its files were crafted to.

Each payload below is a pickle whose ``__reduce__`` creates a marker file when unpickled (a
control test proves that plain ``pickle`` and ``torch.load(weights_only=False)`` do run it). It
is planted where vaekit reads: a run's ``state.pt`` (every copy, with the checkpoint manifest's
checksums updated so that the file is really opened), its ``model.safetensors``, a user's
``.npy`` and ``.npz``. The real `vaekit` command must refuse each with one line naming the file,
exit code 2, and the marker must not exist.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_raw, write_toml

VAEKIT = [sys.executable, "-m", "vaekit"]
SRC = Path(__file__).resolve().parents[1] / "src" / "vaekit"


class TouchMarker:
    """Unpickling this calls ``Path(marker).touch()``: harmless, and easy to detect."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class OpenMarker:
    """Unpickling this calls ``open(marker, "w")``: a builtin, as an attacker would use."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def fake_state(payload: object) -> dict:
    """A dict shaped like a real state.pt, with the payload where the optimizer state goes."""
    return {"epoch": 1, "step": 19, "optimizer": payload, "scheduler": None, "rng": {}}


def torch_zip_payload(marker: Path) -> bytes:
    """torch.save's zip format, the payload inside data.pkl."""
    buf = io.BytesIO()
    torch.save(fake_state(TouchMarker(marker)), buf)
    return buf.getvalue()


def legacy_pickle_payload(marker: Path) -> bytes:
    """A bare pickle (torch.load reads the legacy non-zip format too)."""
    return pickle.dumps(fake_state(OpenMarker(marker)), protocol=2)


PAYLOADS = {"torch-zip": torch_zip_payload, "legacy-pickle": legacy_pickle_payload}


def vaekit(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*VAEKIT, *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, one ``vaekit: error:`` line (the last) holding every needle."""
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("vaekit: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def tree_digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def plant(run: Path, name: str, blob: bytes) -> int:
    """Overwrite every ``name`` in the run and make any manifest checksum vouch for the blob."""
    copies = list(run.rglob(name))
    for path in copies:
        path.write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()

    def vouch(node):
        if isinstance(node, dict):
            return {
                k: digest if k == name and isinstance(v, str) and len(v) == 64 else vouch(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [vouch(v) for v in node]
        return node

    for manifest in run.rglob("*.json"):
        if manifest.name != "eval.json":
            manifest.write_text(json.dumps(vouch(json.loads(manifest.read_text()))))
    return len(copies)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("untrusted")
    config = write_toml(tmp / "tiny.toml", tiny_raw())
    proc = vaekit("train", config, "--run-dir", tmp / "run")
    assert proc.returncode == 0, proc.stderr
    return tmp / "run"


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


# --------------------------------------------------------------------------- controls


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_control_the_payloads_do_run_when_unpickled_unsafely(tmp_path, kind):
    """Without the safeguards the payload runs: the tests below test something real."""
    marker = tmp_path / "ran"
    blob = PAYLOADS[kind](marker)
    with contextlib.suppress(RuntimeError):  # the legacy reader complains after the payload ran
        torch.load(io.BytesIO(blob), weights_only=False)
    assert marker.exists()


def test_control_numpy_object_array_runs_with_allow_pickle(tmp_path):
    marker = tmp_path / "ran"
    np.save(tmp_path / "evil.npy", np.array([TouchMarker(marker)], dtype=object))
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert marker.exists()


# --------------------------------------------------------------------------- run directories


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_resume_refuses_a_malicious_state_pt(run_copy, tmp_path, kind):
    marker = tmp_path / "PWNED"
    assert plant(run_copy, "state.pt", PAYLOADS[kind](marker)) >= 1
    before = tree_digest(run_copy)
    proc = vaekit("train", "--resume", run_copy, "--set", "train.epochs=4")
    assert_refused(proc, "state.pt")
    assert not marker.exists(), "unpickling state.pt ran code"
    assert tree_digest(run_copy) == before


def test_resume_refuses_a_state_pt_replaced_without_updating_checksums(run_copy, tmp_path):
    marker = tmp_path / "PWNED"
    for path in run_copy.rglob("state.pt"):
        path.write_bytes(torch_zip_payload(marker))
    proc = vaekit("train", "--resume", run_copy, "--set", "train.epochs=4")
    assert_refused(proc, "state.pt")
    assert not marker.exists()


@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_a_pickle_in_place_of_the_weights_is_refused(run_copy, tmp_path, command):
    marker = tmp_path / "PWNED"
    assert plant(run_copy, "model.safetensors", torch_zip_payload(marker)) >= 1
    before = tree_digest(run_copy)
    assert_refused(vaekit(command, run_copy), "model.safetensors")
    assert not marker.exists()
    assert tree_digest(run_copy) == before


# --------------------------------------------------------------------------- user data


def train_on(tmp_path: Path, data: Path) -> subprocess.CompletedProcess:
    raw = tiny_raw(data={"name": "auto", "path": str(data)})
    config = write_toml(tmp_path / "user.toml", raw)
    return vaekit("train", config, "--run-dir", tmp_path / "new-run")


def object_array(marker: Path) -> np.ndarray:
    array = np.empty((3, 4, 4), dtype=object)
    array[...] = 0
    array[0, 0, 0] = TouchMarker(marker)
    return array


def test_npy_object_array_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npy"
    np.save(path, object_array(marker), allow_pickle=True)
    assert_refused(train_on(tmp_path, path), "evil.npy", "object arrays / pickled data are refused")
    assert not marker.exists()
    assert not (tmp_path / "new-run").exists()


@pytest.mark.parametrize("key", ["images", "labels", "other"])
def test_npz_with_an_object_array_is_refused(tmp_path, key):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.npz"
    arrays = {"images": np.zeros((20, 8, 8), np.uint8)}
    arrays[key] = object_array(marker) if key == "images" else np.array([TouchMarker(marker)])
    np.savez(path, **arrays)
    error = assert_refused(
        train_on(tmp_path, path), "evil.npz", "object arrays / pickled data are refused"
    )
    assert repr(key) in error
    assert not marker.exists()


def test_a_bare_pickle_named_npy_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "data.npy"
    path.write_bytes(pickle.dumps(OpenMarker(marker)))
    assert_refused(train_on(tmp_path, path), "data.npy", "object arrays / pickled data are refused")
    assert not marker.exists()


# --------------------------------------------------------------------------- the source itself


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            keywords = {k.arg: k.value for k in node.keywords}
            yield node, owner, name, keywords


def test_the_source_never_unpickles():
    """Every torch.load passes weights_only=True, every np.load allow_pickle=False; no pickle."""
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(SRC.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                bad = {"pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "yaml"}
                if bad & {n.split(".")[0] for n in names}:
                    problems.append(f"{where}:{node.lineno}: imports {names}")
        for node, owner, name, keywords in _calls(tree):
            const = {k: getattr(v, "value", None) for k, v in keywords.items()}
            if owner == "torch" and name == "load" and const.get("weights_only") is not True:
                problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            if (
                owner in ("np", "numpy")
                and name == "load"
                and const.get("allow_pickle") is not False
            ):
                problems.append(f"{where}:{node.lineno}: np.load without allow_pickle=False")
            if owner == "" and name in ("eval", "exec"):
                problems.append(f"{where}:{node.lineno}: {name}()")
    assert not problems, problems
