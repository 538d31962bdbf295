"""The small Python API a user sees after `import vaekit`."""

import math

import numpy as np
import pytest

import vaekit
from conftest import needs_fashion, tiny_raw, write_toml
from vaekit.evaluate import evaluate_model


def test_public_names():
    for name in (
        "Config",
        "DataConfig",
        "ModelConfig",
        "TrainConfig",
        "VAE",
        "load_dataset",
        "train",
        "load_run",
        "load_config",
        "VaekitError",
    ):
        assert hasattr(vaekit, name), name
    assert set(vaekit.__all__) <= set(dir(vaekit))


def test_train_load_encode_decode_sample(tmp_path):
    config = vaekit.load_config(write_toml(tmp_path / "c.toml", tiny_raw()))
    result = vaekit.train(config, tmp_path / "run")
    assert result.epochs == 2 and "val/elbo" in result.last
    model = vaekit.load_run(tmp_path / "run")
    assert isinstance(model, vaekit.VAE) and model.config.data.name == "sprites"
    data = vaekit.load_dataset(model.config.data, "test")
    x = data.images[:5].float() / 255
    q = model.encode(x)
    assert q.mean.shape == (5, 4)
    assert model.decode_mean(q.mean).shape == (5, 1, 28, 28)
    terms = model.elbo(x.round())
    assert terms.recon.shape == (5,) and terms.kl.shape == (5,)
    assert model.sample(7).shape == (7, 1, 28, 28)


def test_user_npz_rgb_with_conv_and_learned_gaussian(tmp_path):
    # 300 RGB 40x40 images of coloured squares, resized to 32x32 for a 3-layer conv net.
    rng = np.random.default_rng(0)
    images = np.zeros((300, 40, 40, 3), dtype=np.uint8)
    for i in range(300):
        y, x = rng.integers(0, 28, size=2)
        images[i, y : y + 12, x : x + 12] = rng.integers(60, 256, size=3)
    np.savez(tmp_path / "squares.npz", images=images, labels=np.arange(300) % 3)
    raw = {
        "data": {"path": str(tmp_path / "squares.npz"), "image_size": 32, "dequantize": True},
        "model": {"arch": "conv", "channels": [8, 16, 16], "likelihood": "gaussian_learned"},
        "train": {"epochs": 1, "progress": False},
    }
    config = vaekit.Config.model_validate(raw)
    vaekit.train(config, tmp_path / "run")
    model = vaekit.load_run(tmp_path / "run")
    assert model.config.image_shape == [3, 32, 32]
    result = evaluate_model(model, model.config)
    # Dequantized Gaussian: bits/dim of the 8-bit data adds D log 256 to the density NLL.
    dims = 3 * 32 * 32
    expected = (-result["elbo"] + dims * math.log(256)) / (dims * math.log(2))
    assert result["bits_per_dim"] == pytest.approx(expected, rel=1e-9)


def test_sprites_64_with_a_deeper_conv_net(tmp_path):
    raw = tiny_raw(
        data={"image_size": 64, "sprites_count": 300},
        model={"arch": "conv", "channels": [8, 8, 16, 16]},
        train={"epochs": 1, "batch_size": 32},
    )
    vaekit.train(vaekit.Config.model_validate(raw), tmp_path / "run")
    model = vaekit.load_run(tmp_path / "run")
    assert model.sample(2).shape == (2, 1, 64, 64)


@needs_fashion
def test_fashion_mnist_logistic_reports_bits_per_dim(tmp_path):
    raw = {
        "data": {"name": "fashion-mnist", "limit": 2000},
        "model": {
            "arch": "conv",
            "channels": [16, 32],
            "latent_dim": 8,
            "likelihood": "discretized_logistic",
        },
        "train": {"epochs": 1, "progress": False},
    }
    vaekit.train(vaekit.Config.model_validate(raw), tmp_path / "run")
    result = vaekit.evaluate_run(tmp_path / "run")
    assert result["examples"] == 10000 and result["dataset"] == "fashion-mnist"
    expected = -result["elbo"] / (784 * math.log(2))
    assert result["bits_per_dim"] == pytest.approx(expected, rel=1e-9)
    # A model with some training is far better than uniform over 256 levels (8 bits/dim).
    assert 0 < result["bits_per_dim"] < 8
