"""Metrics of a trained VQ-VAE: reconstruction, codebook use, and a bound on -log p(x).

The encoder's posterior is one-hot on the nearest codes z_q(x), so the ELBO is exact to
compute and needs no sampling: log p(x) >= log p(x | z_q(x)) + log p(z_q(x)) with
KL(q || p) = -log p(z_q(x)) (van den Oord et al. 2017, section 3.1). With the learned prior
over codes the bound uses its log-probability; without one, the uniform prior's H W log K.
The keys ``elbo``, ``recon``, ``kl`` and ``nll_upper_bound`` mean what they mean for a VAE,
so VQ-VAE and VAE runs compare in one table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from vaekit.config import Config
from vaekit.data import iterate_batches, to_model_input
from vaekit.data.pipeline import ImageData
from vaekit.diagnostics import seeded_model_inputs
from vaekit.models import VQVAE
from vaekit.models.quantizer import usage_and_perplexity
from vaekit.probability.likelihoods import bits_per_dim
from vaekit.train.prior_fit import code_nll


def _batches(
    model: VQVAE, data: ImageData, config: Config, binarize: str, seed: int, batch_size: int
) -> Iterable[torch.Tensor]:
    device = next(model.parameters()).device
    dequantize = config.data.dequantize and binarize == "none"
    for x in seeded_model_inputs(
        data, binarize=binarize, dequantize=dequantize, seed=seed, batch_size=batch_size
    ):
        yield x.to(device)


@torch.no_grad()
def encode_dataset(
    model: VQVAE, data: ImageData, *, seed: int, batch_size: int = 500
) -> torch.Tensor:
    """Code maps [N, h, w] of a dataset's images, prepared as the run's data config says (no
    dequantization noise; a binarizing run's images binarized once, seeded by ``seed``)."""
    noise = torch.Generator().manual_seed(seed)
    binarize = model.config.data.binarize
    parts = [
        model.encode_codes(to_model_input(xb, binarize=binarize, dequantize=False, generator=noise))
        for xb in iterate_batches(data, batch_size, shuffle=False, generator=None)
    ]
    return torch.cat(parts)


@torch.no_grad()
def code_pass(
    model: VQVAE, data: ImageData, config: Config, binarize: str, seed: int, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example -log p(x|z_q) [N] and squared error [N] (float64), and the codes [N, h, w]."""
    model.eval()
    recon, sq_err, codes = [], [], []
    for x in _batches(model, data, config, binarize, seed, batch_size):
        q = model.quantize(x)
        params = model.decode(q.z_q)
        recon.append(-model.likelihood.log_prob(params, x).double().cpu())
        sq_err.append((model.likelihood.mean(params) - x).pow(2).flatten(1).sum(1).double().cpu())
        codes.append(q.codes.cpu())
    return torch.cat(recon), torch.cat(sq_err), torch.cat(codes)


def _code_cost(model: VQVAE, codes: torch.Tensor) -> torch.Tensor:
    """-log p(codes) per map [N] float64: the learned prior's, or the uniform H W log K."""
    prior = model.code_prior
    if prior is None:
        h, w = model.code_shape
        return torch.full((len(codes),), h * w * math.log(model.num_codes), dtype=torch.float64)
    return code_nll(prior, codes.to(next(prior.parameters()).device)).cpu()


@torch.no_grad()
def vq_bound_per_example(
    model: VQVAE, data: ImageData, config: Config, binarize: str, seed: int, batch_size: int
) -> torch.Tensor:
    """-log p(x|z_q(x)) - log p(z_q(x)) per example, [N] float64: an upper bound on -log p(x)."""
    recon, _, codes = code_pass(model, data, config, binarize, seed, batch_size)
    return recon + _code_cost(model, codes)


@torch.no_grad()
def evaluate_vqvae(
    model: VQVAE,
    config: Config,
    data: ImageData,
    *,
    split: str,
    binarize: str,
    seed: int,
    batch_size: int,
    discrete_nll: Any,
) -> dict[str, Any]:
    """The VQ-VAE's test metrics in nats per example (see the module docstring).

    ``discrete_nll(nats, config, num_dims)`` converts a bound to the 8-bit data's -log P(x)
    where the likelihood allows it (None otherwise), for bits/dim.
    """
    recon, sq_err, codes = code_pass(model, data, config, binarize, seed, batch_size)
    num_dims = math.prod(model.image_shape)
    h, w = model.code_shape
    counts = torch.bincount(codes.flatten(), minlength=model.num_codes)
    usage, perplexity = usage_and_perplexity(counts)
    uniform = h * w * math.log(model.num_codes)
    result: dict[str, Any] = {
        "dataset": config.data.name or str(config.data.path),
        "split": split,
        "examples": len(data),
        "model": "vqvae",
        "binarization": binarize,
        "seed": seed,
        "recon": recon.mean().item(),
        "mse_per_pixel": (sq_err.mean() / num_dims).item(),
        "num_codes": model.num_codes,
        "code_map": [h, w],
        "codes_used": int((counts > 0).sum()),
        "code_usage": usage,
        "perplexity": perplexity,
        "uniform_prior_nll": uniform,
        "nll_upper_bound_uniform_prior": recon.mean().item() + uniform,
    }
    if model.code_prior is not None:
        prior_nll = _code_cost(model, codes).mean().item()
        result["prior"] = "learned"
        result["prior_nll"] = prior_nll
        result["prior_bits_per_code"] = prior_nll / (h * w * math.log(2))
        kl = prior_nll
    else:
        result["prior"] = "uniform (run `vaekit train-prior` for the learned one)"
        kl = uniform
    bound = recon.mean().item() + kl
    result.update({"kl": kl, "elbo": -bound, "nll_upper_bound": bound})
    discrete = discrete_nll(bound, config, num_dims)
    if discrete is not None:
        result["bits_per_dim"] = float(bits_per_dim(discrete, num_dims))
    result["units"] = "nats per example"
    return result
