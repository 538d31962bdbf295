from pathlib import Path

import pytest

from conftest import tiny_raw, write_toml
from vaekit.config import (
    Config,
    apply_overrides,
    config_from_dict,
    load_config,
    to_toml,
)
from vaekit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_unknown_key_names_key_and_file(tmp_path):
    raw = tiny_raw(model={"latnt_dim": 3})
    path = write_toml(tmp_path / "bad.toml", raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "model.latnt_dim" in message and "bad.toml" in message and "unknown key" in message
    assert "\n" not in message


def test_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="trian"):
        config_from_dict({"trian": {"epochs": 3}})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.latent_dim=-4", "model.latent_dim"),
        ("train.epochs='many'", "train.epochs"),
        ("train.lr=0", "train.lr"),
        ("data.val_fraction=0.9", "data.val_fraction"),
        ("model.hidden=[64, -1]", "model.hidden"),
    ],
)
def test_impossible_values_name_the_key(tmp_path, override, key):
    path = write_toml(tmp_path / "c.toml", tiny_raw())
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path, [override])


def test_conv_net_too_deep_for_image_size():
    raw = tiny_raw(model={"arch": "conv", "channels": [8, 8, 8]})
    raw["image_shape"] = [1, 28, 28]
    with pytest.raises(ConfigError, match="divisible by 8"):
        config_from_dict(raw)
    raw["image_shape"] = [1, 32, 32]
    assert config_from_dict(raw).image_shape == [1, 32, 32]


def test_overrides_parse_toml_values():
    raw = apply_overrides(
        {"model": {"latent_dim": 2}},
        [
            "model.latent_dim=16",
            "model.hidden=[32, 16]",
            "train.lr=3e-4",
            "data.name=mnist",
            "train.progress=false",
        ],
    )
    assert raw["model"] == {"latent_dim": 16, "hidden": [32, 16]}
    assert raw["train"] == {"lr": 3e-4, "progress": False}
    assert raw["data"] == {"name": "mnist"}


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["model.latent_dim"])


def test_toml_round_trip_keeps_every_value(tmp_path):
    config = config_from_dict(tiny_raw(objective={"free_bits": 0.25, "warmup": "cyclical"}))
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(config))
    assert load_config(path) == config


def test_name_and_path_are_exclusive(tmp_path):
    with pytest.raises(ConfigError, match=r"either data\.name or data\.path"):
        config_from_dict({"data": {"name": "mnist", "path": str(tmp_path)}})
    config = config_from_dict({"data": {"path": str(tmp_path)}})
    assert config.data.name is None


def test_logistic_likelihood_refuses_binarized_data():
    with pytest.raises(ConfigError, match="discretized_logistic"):
        config_from_dict(
            {"data": {"binarize": "dynamic"}, "model": {"likelihood": "discretized_logistic"}}
        )


def test_binarize_and_dequantize_exclude_each_other():
    with pytest.raises(ConfigError, match="exclude each other"):
        config_from_dict({"data": {"binarize": "static", "dequantize": True}})


def test_linear_warmup_needs_steps():
    with pytest.raises(ConfigError, match="warmup_steps"):
        config_from_dict({"objective": {"warmup": "linear"}})


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    assert isinstance(load_config(path), Config)


def test_shipped_configs_cover_the_documented_recipes():
    configs = {p.stem: load_config(p) for p in (REPO / "configs").glob("*.toml")}
    mlp = configs["mlp_fashion_binarized"]
    assert (mlp.model.arch, mlp.model.hidden, mlp.model.latent_dim) == ("mlp", [512, 256], 32)
    assert mlp.data.binarize == "dynamic" and mlp.model.likelihood == "bernoulli"
    logistic = configs["conv_fashion_logistic"]
    assert (logistic.model.arch, logistic.model.likelihood) == ("conv", "discretized_logistic")
    sprites = configs["conv_sprites_2d"]
    assert (sprites.data.name, sprites.model.latent_dim) == ("sprites", 2)
