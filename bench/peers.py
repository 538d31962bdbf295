"""Peers trained side by side with vaekit on the same nets, batch size and optimiser.

``plain``: the loop PyTorch tutorials write (pytorch/examples vae/main.py): a ``Dataset`` whose
``__getitem__`` returns one image as a float tensor, a shuffling ``DataLoader``, BCE-with-logits
plus analytic KL summed over the batch, and ``loss.item()`` every step.
``pythae``: pythae's own ``BaseTrainer.train_step`` (its DataLoader, model forward, optimiser
step and per-step ``loss.item()``) with the same encoder and decoder passed in as custom nets;
it runs in its own virtual environment under bench/.venvs/, never a dependency of vaekit.

This module imports only torch, numpy and the bench's nets, so both environments can run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from machine import peak_rss_mb

import nets

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venvs" / "pythae"
TORCH_PIN = "torch==2.13.0"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _cycle(loader):
    while True:
        yield from loader


class ImageDataset(torch.utils.data.Dataset):
    """Images as a tutorial's Dataset: one float [1, 28, 28] tensor in [0, 1] per index."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = torch.from_numpy(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i].float() / 255.0, 0


class PlainVAE(torch.nn.Module):
    """The tutorial VAE: encoder -> (mu, logvar) -> reparameterise -> decoder logits."""

    def __init__(self, arch: str, latent: int) -> None:
        super().__init__()
        self.encoder, self.decoder = nets.make_nets(arch, latent)

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z), mu, logvar


def plain_worker(spec: dict[str, Any], images: np.ndarray) -> dict[str, Any]:
    """Samples/s of the tutorial loop (dynamic binarization per batch, as vaekit's workload)."""
    device = torch.device(spec["device"])
    torch.manual_seed(0)
    model = PlainVAE(spec["arch"], spec["latent"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        ImageDataset(images), batch_size=spec["batch"], shuffle=True
    )
    batches = _cycle(loader)
    model.train()
    bf16 = spec["precision"] == "bf16"

    def run(steps: int) -> int:
        seen = 0
        train_loss = 0.0
        for _ in range(steps):
            x, _ = next(batches)
            x = torch.bernoulli(x.to(device))
            optimizer.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits, mu, logvar = model(x)
            bce = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar.float() - mu.float().pow(2) - logvar.float().exp())
            loss = bce + kld
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
            seen += x.shape[0]
        _sync(device)
        return seen

    run(spec["warmup"])
    rates = []
    rss = None
    for r in range(spec["inner"]):
        start = time.perf_counter()
        seen = run(spec["steps"])
        rates.append(seen / (time.perf_counter() - start))
        if r == 0:
            rss = peak_rss_mb()
    return {"samples_per_s": rates, "peak_rss_mb": rss}


def pythae_nets(encoder: torch.nn.Module, decoder: torch.nn.Module):
    """The bench's nets as pythae's encoder and decoder (pythae imported here, in its venv).

    The encoder's output splits into (mu, log-variance); the decoder's logits go through a
    sigmoid, since pythae's "bce" loss takes probabilities. ``.net`` is the wrapped module.
    """
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            BaseEncoder.__init__(self)
            self.net = encoder

        def forward(self, x):
            mu, log_var = self.net(x).chunk(2, dim=-1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            BaseDecoder.__init__(self)
            self.net = decoder

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    return Encoder(), Decoder()


def pythae_worker(spec: dict[str, Any], images: np.ndarray) -> dict[str, Any]:
    """Samples/s of pythae's BaseTrainer.train_step over ``steps`` batches (runs in its venv)."""
    from importlib.metadata import version

    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    arch, latent, batch = spec["arch"], spec["latent"], spec["batch"]

    torch.manual_seed(0)
    config = VAEConfig(input_dim=nets.IMAGE, latent_dim=latent, reconstruction_loss="bce")
    model = VAE(config, *pythae_nets(*nets.make_nets(arch, latent)))
    data = torch.from_numpy(images).float() / 255.0  # pythae stores float data in memory
    labels = torch.zeros(len(data))
    tmp = tempfile.mkdtemp(prefix="pythae-bench-")
    try:
        trainer_config = BaseTrainerConfig(
            output_dir=tmp,
            per_device_train_batch_size=batch,
            per_device_eval_batch_size=batch,
            learning_rate=1e-3,
            num_epochs=1,
            optimizer_cls="Adam",
            no_cuda=spec["device"] != "cuda",
        )
        n_timed = spec["steps"] * batch
        n_warm = spec["warmup"] * batch
        trainer = BaseTrainer(
            model=model,
            train_dataset=BaseDataset(data[:n_timed], labels[:n_timed]),
            training_config=trainer_config,
        )
        trainer.prepare_training()
        timed_loader = trainer.train_loader
        device = torch.device(trainer.device)
        trainer.train_loader = trainer.get_train_dataloader(
            BaseDataset(data[n_timed : n_timed + n_warm], labels[n_timed : n_timed + n_warm])
        )
        trainer.train_step(epoch=1)
        trainer.train_loader = timed_loader
        rates = []
        rss = None
        for r in range(spec["inner"]):
            _sync(device)
            start = time.perf_counter()
            trainer.train_step(epoch=1)
            _sync(device)
            rates.append(n_timed / (time.perf_counter() - start))
            if r == 0:
                rss = peak_rss_mb()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"samples_per_s": rates, "peak_rss_mb": rss, "pythae_version": version("pythae")}


def ensure_pythae(log=print) -> tuple[Path | None, str]:
    """The pythae venv's python (created on first use), or None and the reason it failed.

    torch is installed first with the pin so that pip takes the on-disk CPU wheel, then
    pythae (its newest release that installs beside that torch).
    """
    python = VENV / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"}
    probe = [str(python), "-c", "import torch, pythae.models"]
    if python.exists() and subprocess.run(probe, env=env, capture_output=True).returncode == 0:
        return python, "ok"
    log(f"creating {VENV} (torch, then pythae) ...")
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", TORCH_PIN],
        [str(python), "-m", "pip", "install", "--quiet", "pythae", TORCH_PIN],
    ]
    for cmd in steps:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return None, f"{' '.join(cmd[-2:])} failed: {done.stderr.strip()[-400:]}"
    if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        return None, "pythae installed but does not import beside torch 2.13.0"
    return python, "ok"
