"""pythae's VAE, IWAE, VAMP and VAE_IAF trained and scored by the quality protocol.

Run by ``bench/quality.py --peer pythae`` with the python of ``bench/.venvs/pythae`` (pythae is
never a dependency of vaekit). The peer gets what vaekit's recipe gets: the same gated nets
(``nets.GatedEncoder`` / ``GatedDecoder``, 784-300-300-(2 x 40)), Adam at the recipe's
learning rate, batch 128, a fresh Bernoulli draw of the training images every epoch, the same
wall-clock budget, and the same test images binarized once by ``vaekit evaluate --seed 0``
(``quality.py`` hands them over). Training is pythae's own ``BaseTrainer.train_step``; what
pythae offers is used as pythae offers it (its IWAE with the recipe's K, its VampPrior with the
recipe's number of pseudo-inputs and KL warm-up, its IAF with the recipe's number of MADE
blocks and width), with none of vaekit's extras (no EMA, no learning-rate warm-up).

The test NLL is the importance-weighted estimate with K samples, written here with torch
only: pythae's ``get_nll`` scores one image at a time, which at K = 5000 on 10,000 images
does not fit a benchmark, and it would also score with its own (clamped) Bernoulli of
probabilities instead of the logits' exact one.

This module imports pythae only inside the functions that need it, so its estimator can be
tested (tests/test_bench_quality_peer.py) without pythae.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from peers import pythae_nets  # noqa: E402

import nets  # noqa: E402

KINDS = ("vae", "iwae", "vamp", "iaf")
LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(log_var)) summed over the last dim, with every constant."""
    return -0.5 * (LOG_2PI + log_var + (z - mu) ** 2 / log_var.exp()).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


class Scorer:
    """The pieces of a model that its importance weights need, as plain callables.

    ``encode(x) -> (mu, log_var)``; ``flow(z0) -> (z, log|det dz/dz0|)`` (identity when there
    is no flow); ``log_prior(z)``; ``logits(z)``: Bernoulli logits of p(x|z), shaped as x.
    """

    def __init__(self, encode, logits, log_prior=None, flow=None) -> None:
        self.encode = encode
        self.logits = logits
        self.log_prior = log_prior or standard_normal_log_prob
        self.flow = flow

    def log_weights(self, x: torch.Tensor, samples: int, generator: torch.Generator):
        """log p(x, z) - log q(z|x) for ``samples`` draws per image: [samples, B]."""
        mu, log_var = self.encode(x)
        eps = torch.randn((samples, *mu.shape), generator=generator, dtype=mu.dtype)
        z0 = mu + (0.5 * log_var).exp() * eps
        log_q = gaussian_log_prob(z0, mu, log_var)
        z = z0
        if self.flow is not None:
            flat, log_det = self.flow(z0.reshape(-1, z0.shape[-1]))
            z = flat.reshape(z0.shape)
            log_q = log_q - log_det.reshape(log_q.shape)
        logits = self.logits(z)
        target = x.expand_as(logits)
        log_px = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        log_px = log_px.flatten(start_dim=2).sum(-1)
        return log_px + self.log_prior(z) - log_q


@torch.no_grad()
def iw_nll(
    scorer: Scorer, images: torch.Tensor, k: int, chunk: int = 100, batch: int = 100, seed: int = 0
) -> dict[str, float]:
    """Mean -log p(x) by K importance samples (chunked, logsumexp) and the mean ELBO.

    The K weights of an image are combined in float64 by a running logsumexp, so memory is
    bounded by ``chunk * batch`` decoder outputs whatever K is.
    """
    generator = torch.Generator().manual_seed(seed)
    nll_sum, elbo_sum = 0.0, 0.0
    for start in range(0, len(images), batch):
        x = images[start : start + batch].float()
        total = torch.full((len(x),), -math.inf, dtype=torch.float64)
        weight_sum = torch.zeros(len(x), dtype=torch.float64)
        for drawn in range(0, k, chunk):
            w = scorer.log_weights(x, min(chunk, k - drawn), generator).double()
            total = torch.logaddexp(total, torch.logsumexp(w, dim=0))
            weight_sum += w.sum(0)
        nll_sum += float(-(total - math.log(k)).sum())
        elbo_sum += float((weight_sum / k).sum())
    n = len(images)
    return {"iw_nll": nll_sum / n, "elbo": elbo_sum / n}


def build_model(kind: str, spec: dict[str, Any]):
    """A pythae model of ``kind`` on the gated nets."""
    from pythae.models import (
        IWAE,
        VAE,
        VAE_IAF,
        VAMP,
        IWAEConfig,
        VAE_IAF_Config,
        VAEConfig,
        VAMPConfig,
    )

    latent = spec["latent"]

    def fresh_nets():
        return pythae_nets(nets.GatedEncoder(latent), nets.GatedDecoder(latent))

    common = {"input_dim": nets.IMAGE, "latent_dim": latent, "reconstruction_loss": "bce"}
    if kind == "vae":
        model = VAE(VAEConfig(**common), *fresh_nets())
    elif kind == "iwae":
        config = IWAEConfig(**common, number_samples=spec["iw_samples"])
        model = IWAE(config, *fresh_nets())
    elif kind == "vamp":
        config = VAMPConfig(
            **common,
            number_components=spec["components"],
            linear_scheduling_steps=spec["warmup_epochs"],
        )
        model = VAMP(config, *fresh_nets())
    elif kind == "iaf":
        config = VAE_IAF_Config(
            **common,
            n_made_blocks=spec["iaf_steps"],
            n_hidden_in_made=len(spec["iaf_hidden"]),
            hidden_size=spec["iaf_hidden"][0],
        )
        model = VAE_IAF(config, *fresh_nets())
    else:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")

    return model


@torch.no_grad()
def make_scorer(kind: str, model) -> Scorer:
    """The trained pythae model's importance weights (VampPrior components computed once)."""

    def encode(x):
        out = model.encoder(x)
        return out.embedding, out.log_covariance

    def logits(z):
        return model.decoder.net(z)

    log_prior = None
    if kind == "vamp":
        pseudo = model.pseudo_inputs(model.idle_input.to(next(model.parameters()).device))
        p_mu, p_log_var = encode(pseudo.reshape(-1, *nets.IMAGE))
        log_prior = GaussianMixture(p_mu, p_log_var).log_prob
    flow = None
    if kind == "iaf":

        def flow(z0):
            out = model.iaf_flow.inverse(z0)  # the direction pythae's VAE_IAF samples in
            return out.out, out.log_abs_det_jac

    return Scorer(encode, logits, log_prior, flow)


class GaussianMixture:
    """Equal-weight mixture of diagonal Gaussians; log_prob by matrix products.

    sum_d (z_d - m_d)^2 / v_d expands to z^2 . (1/v) - 2 z . (m/v) + sum_d m_d^2 / v_d: two
    [N, D] x [D, C] products instead of an [N, C, D] tensor (10^4 samples x 500 components x 40
    latents would be 800 MB).
    """

    def __init__(self, mu: torch.Tensor, log_var: torch.Tensor) -> None:
        inv = (-log_var).exp()
        self.inv, self.scaled = inv, mu * inv
        self.const = -0.5 * (mu.shape[-1] * LOG_2PI + log_var.sum(-1) + (mu * mu * inv).sum(-1))
        self.log_k = math.log(len(mu))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, z.shape[-1])
        per = self.const - 0.5 * (flat * flat) @ self.inv.T + flat @ self.scaled.T
        return (torch.logsumexp(per, dim=-1) - self.log_k).reshape(z.shape[:-1])


def train_and_score(spec: dict[str, Any], data: dict[str, np.ndarray], log) -> dict[str, Any]:
    """Train pythae's model for the budget on fresh binarizations, then its test NLL."""
    from importlib.metadata import version

    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    torch.manual_seed(spec["seed"])
    model = build_model(spec["kind"], spec)
    grey = torch.from_numpy(data["train"]).float() / 255.0
    labels = torch.zeros(len(grey))
    draws = torch.Generator().manual_seed(spec["seed"])

    def binarized() -> BaseDataset:
        return BaseDataset(torch.bernoulli(grey, generator=draws), labels)

    tmp = tempfile.mkdtemp(prefix="pythae-quality-")
    try:
        trainer = BaseTrainer(
            model=model,
            train_dataset=binarized(),
            training_config=BaseTrainerConfig(
                output_dir=tmp,
                per_device_train_batch_size=spec["batch"],
                per_device_eval_batch_size=spec["batch"],
                learning_rate=spec["lr"],
                num_epochs=1_000_000,
                optimizer_cls="Adam",
                no_cuda=True,
            ),
        )
        trainer.prepare_training()
        budget = spec["minutes"] * 60
        start = time.perf_counter()
        epoch = 0
        while time.perf_counter() - start < budget:
            epoch += 1
            if epoch > 1:
                trainer.train_loader = trainer.get_train_dataloader(binarized())
            loss = trainer.train_step(epoch=epoch)
            if epoch % 10 == 0:
                log(f"  pythae {spec['kind']} epoch {epoch}: train loss {loss:.2f}")
        train_seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    model.eval()
    start = time.perf_counter()
    scorer = make_scorer(spec["kind"], model)
    test = torch.from_numpy(data["test"])[: spec.get("test_limit") or None]
    scored = iw_nll(scorer, test, spec["iw"], seed=spec["eval_seed"])
    return {
        "test_nll": scored["iw_nll"],
        "test_elbo": scored["elbo"],
        "iw_k": spec["iw"],
        "test_examples": len(test),
        "epochs": epoch,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start,
        "pythae_version": version("pythae"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="JSON file: kind, seed, minutes, lr, batch, ... (quality.py)")
    parser.add_argument("data", help=".npz with train (uint8 grey) and test (uint8 0/1) images")
    parser.add_argument("out", help="where the result JSON goes")
    args = parser.parse_args(argv)
    spec = json.loads(Path(args.spec).read_text())
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    with np.load(args.data) as npz:
        data = {"train": npz["train"], "test": npz["test"]}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = train_and_score(spec, data, log)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
