"""Shared fixtures: tiny configs that train in seconds on procedural sprites."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from vaekit.config import Config, config_from_dict

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
HAVE_FASHION = (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason=f"Fashion-MNIST not installed in {FASHION_DIR}"
)


def tiny_raw(**sections: dict) -> dict:
    """A raw config for a small MLP VAE on 1,200 sprites; sections override keys."""
    raw = {
        "data": {"name": "sprites", "sprites_count": 1200, "binarize": "dynamic"},
        "model": {"arch": "mlp", "hidden": [64], "latent_dim": 4, "likelihood": "bernoulli"},
        "train": {"epochs": 2, "batch_size": 64, "progress": False, "seed": 0},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


# A small VQ-VAE model section: 16 codes of size 4 on a 7x7 map, 16-channel residual nets.
TINY_VQ = {
    "kind": "vqvae",
    "arch": "resnet",
    "hidden_channels": 16,
    "residual_channels": 8,
    "residual_blocks": 1,
    "quantizer": {"num_codes": 16, "code_dim": 4},
}


@pytest.fixture
def tiny_config() -> Config:
    return config_from_dict(tiny_raw())


def write_toml(path: Path, raw: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """Start HTTP servers on 127.0.0.1 for folders; returns a function giving each one's URL."""
    servers, requests = [], []

    class Handler(_QuietHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    def start(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    start.requests = requests
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def train_quietly(raw: dict, run: Path) -> None:
    """Train a raw config into ``run`` in this process, leaving torch's thread count as it was."""
    from vaekit.train.loop import train

    threads = torch.get_num_threads()
    try:
        train(config_from_dict(raw), run, console=Console(quiet=True))
    finally:
        torch.set_num_threads(threads)


def assert_same_weights(a: Path, b: Path, atol: float = 2e-5) -> None:
    """The saved weights of two runs agree tensor by tensor."""
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=1e-4, msg=name)


def run_vaekit(*args: str, world: int = 1) -> subprocess.CompletedProcess:
    """``python -m vaekit ARGS`` in a subprocess, under torchrun with ``world`` processes when
    it is above 1, one thread each; fails the test on a non-zero exit."""
    launcher = [sys.executable, "-m", "vaekit"]
    if world > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc_per_node", str(world), "-m", "vaekit"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
