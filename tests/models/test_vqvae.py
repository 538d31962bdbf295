"""The VQ-VAE model: shapes, terms, the uniform-prior bound and training through `vaekit train`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_VQ, tiny_raw
from vaekit.config import ModelConfig, config_from_dict
from vaekit.errors import ConfigError, RunError
from vaekit.models import build_vqvae
from vaekit.objectives import training_loss
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import train


def vq_model_cfg(**kw) -> dict:
    return TINY_VQ | {"likelihood": "bernoulli"} | kw


@pytest.mark.parametrize(
    ("likelihood", "shape"),
    [("bernoulli", (1, 28, 28)), ("discretized_logistic", (3, 32, 32)), ("gaussian", (1, 28, 28))],
)
def test_vqvae_terms_and_pictures(likelihood, shape):
    torch.manual_seed(0)
    model = build_vqvae(ModelConfig(**vq_model_cfg(likelihood=likelihood)), shape)
    x = torch.randint(0, 256, (5, *shape)) / 255.0
    model.train()
    terms = model.elbo(x)
    h, w = shape[1] // 4, shape[2] // 4
    assert terms.codes.shape == (5, h, w) and terms.codes.dtype == torch.long
    assert terms.recon.shape == terms.commitment.shape == (5,)
    # KL(one-hot q || uniform over K codes) = h w log K, per example
    assert torch.allclose(terms.kl, torch.full((5,), h * w * math.log(16)))
    assert torch.allclose(terms.elbo, -(terms.recon + terms.kl))
    recon = model.reconstruct(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1


def test_loss_is_recon_plus_codebook_plus_weighted_commitment():
    torch.manual_seed(1)
    cfg = config_from_dict(
        {
            "model": vq_model_cfg(quantizer={"num_codes": 8, "code_dim": 4, "update": "loss"}),
            "objective": {"commitment": 0.4},
        }
    )
    model = build_vqvae(cfg.model, (1, 28, 28)).eval()
    terms = model.elbo(torch.rand(6, 1, 28, 28))
    expected = terms.recon.mean() + terms.codebook.mean() + 0.4 * terms.commitment.mean()
    assert torch.allclose(training_loss(terms, cfg.objective, kl_scale=123.0), expected)
    assert terms.codebook.min() > 0  # the loss update has a real codebook term
    # the decoder's gradient reaches the encoder through the straight-through estimator
    terms.recon.mean().backward()
    assert model.encoder.body[0].weight.grad.abs().sum() > 0


def test_sampling_without_a_prior_says_what_to_do():
    model = build_vqvae(ModelConfig(**vq_model_cfg()), (1, 28, 28))
    with pytest.raises(RunError, match="train-prior"):
        model.sample(4)


def test_config_rejects_mismatched_kind_arch_and_image_size():
    with pytest.raises(ConfigError, match="resnet"):
        config_from_dict({"model": {"kind": "vqvae", "arch": "conv"}})
    with pytest.raises(ConfigError, match="divisible by 4"):
        config_from_dict({"model": vq_model_cfg(), "image_shape": [1, 30, 30]})
    with pytest.raises(ConfigError, match="num_codes"):
        config_from_dict({"model": vq_model_cfg(quantizer={"num_codes": 1})})


def vq_raw(**train):
    return tiny_raw(
        model=vq_model_cfg(),
        train={"epochs": 2, "batch_size": 64} | train,
    )


def test_vqvae_trains_from_a_config_and_logs_code_usage(tmp_path):
    config = config_from_dict(vq_raw())
    result = train(config, tmp_path / "run")
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for rec in records:
        for split in ("train", "val"):
            usage, perplexity = rec[f"{split}/code_usage"], rec[f"{split}/perplexity"]
            assert 0 < usage <= 1
            # perplexity is at most the number of codes in use
            assert 1 <= perplexity <= usage * 16 + 1e-6
    assert records[-1]["val/recon"] < records[0]["val/recon"]
    assert result.last["val/commitment"] > 0
    assert (tmp_path / "run/pictures/reconstructions.png").is_file()
    assert not (tmp_path / "run/pictures/samples.png").exists()  # no prior while training
    model = ckpt.load_run(tmp_path / "run")
    assert bool(model.quantizer.initialised)


def test_vqvae_resume_is_exact(tmp_path):
    # codebook buffers (EMA statistics, dead-code counters) travel with the weights
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(config_from_dict(vq_raw(epochs=2)), straight)
    train(config_from_dict(vq_raw(epochs=1)), split)
    resumed = ckpt.read_run_config(split).model_copy(deep=True)
    resumed.train.epochs = 2
    train(resumed, split, resume=True)
    a, b = load_file(straight / ckpt.WEIGHTS_FILE), load_file(split / ckpt.WEIGHTS_FILE)
    assert a.keys() == b.keys() and "quantizer.ema_count" in a
    for key in a:
        assert torch.equal(a[key], b[key]), key
