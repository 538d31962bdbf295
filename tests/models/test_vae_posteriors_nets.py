"""The IAF posterior and the gated / residual nets inside the VAE, through configs."""

import json

import pytest
import torch

from conftest import tiny_raw
from vaekit.config import config_from_dict
from vaekit.data import load_dataset, to_model_input
from vaekit.errors import ConfigError
from vaekit.objectives import iw_log_likelihood
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import EVAL_SEED_OFFSET, resolve_config, train, validate

IAF = {"posterior": "iaf", "iaf_steps": 2, "iaf_context": 8}


def _model_and_batch(model: dict, objective: dict | None = None, n: int = 16):
    config = config_from_dict(tiny_raw(model=model, objective=objective or {}))
    data = load_dataset(config.data, "train")
    resolved = resolve_config(config, data)
    torch.manual_seed(0)
    built = ckpt.build_model(resolved)
    x = to_model_input(data.images[:n], binarize="none", dequantize=False).round()
    return built, x, resolved


def test_iaf_log_q_equals_the_density_of_the_inverted_flow():
    model, x, _ = _model_and_batch(IAF, {"estimator": "monte_carlo"})
    with torch.no_grad():
        for p in model.flow.parameters():  # away from the identity start
            p.add_(0.3 * torch.randn_like(p))
        q0, h = model.encode_with_context(x)
        z, log_q = model.through_flow(q0, h, q0.rsample((3,)))
        # Independent: invert z_T step by step and apply the change of variables there.
        exact = model.flow.log_prob(z, h, q0)
    assert torch.allclose(log_q.sum(-1), exact, atol=1e-4)
    assert not torch.allclose(log_q.sum(-1), q0.log_prob(z), atol=1e-2)  # the flow matters


def test_one_importance_sample_is_the_monte_carlo_elbo_with_an_iaf_posterior():
    model, x, _ = _model_and_batch(IAF, {"estimator": "monte_carlo"})
    with torch.no_grad():
        torch.manual_seed(7)
        single = iw_log_likelihood(model, x, 1)
        torch.manual_seed(7)
        elbo = model.elbo(x, "monte_carlo").elbo
    assert torch.allclose(single.float(), elbo, atol=1e-3)


def test_an_iaf_vae_trains_and_its_run_loads_with_the_flow(tmp_path):
    raw = tiny_raw(model={**IAF, "latent_dim": 4}, objective={"estimator": "iwae", "iw_samples": 3})
    config = config_from_dict(raw)
    data = load_dataset(config.data, "val")
    resolved = resolve_config(config, load_dataset(config.data, "train"))
    torch.manual_seed(resolved.train.seed)
    before = validate(ckpt.build_model(resolved), data, resolved, seed=5)
    train(config, tmp_path / "run")
    model = ckpt.load_run(tmp_path / "run")
    assert model.flow is not None
    after = validate(model, data, resolved, seed=5)
    assert after["elbo"] > before["elbo"] + 50
    # The flow's weights come back: the same run's numbers from the loaded model.
    run_config = ckpt.read_run_config(tmp_path / "run")
    again = validate(model, data, run_config, run_config.train.seed + EVAL_SEED_OFFSET)
    last = json.loads((tmp_path / "run" / ckpt.METRICS_FILE).read_text().splitlines()[-1])
    assert last["val/iwae_bound"] >= last["val/elbo"]
    assert again["elbo"] == pytest.approx(last["val/elbo"], rel=1e-5)


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ({"arch": "gated_mlp", "hidden": [32, 16]}, None),
        ({"arch": "resnet_vae", "channels": [8, 16], "residual_blocks": 1}, 32),
    ],
)
def test_gated_and_residual_nets_train_a_vae(tmp_path, model, size):
    data = {"image_size": size} if size else {}
    config = config_from_dict(tiny_raw(model=model, data=data, train={"epochs": 1}))
    result = train(config, tmp_path / "run")
    assert result.last["val/elbo"] > -700  # from about -545 per 784 pixels at the start
    assert (
        ckpt.load_run(tmp_path / "run")
        .reconstruct(torch.rand(2, 1, size or 28, size or 28))
        .shape[0]
        == 2
    )


@pytest.mark.parametrize(
    ("model", "objective", "match"),
    [
        (IAF, {"estimator": "analytic"}, "posterior = 'iaf'"),
        (IAF, {"estimator": "dreg"}, "posterior = 'iaf'"),
        ({"kind": "hvae", "latent_dims": [4, 2]}, {"estimator": "dreg"}, "dreg"),
        ({"kind": "hvae", "latent_dims": [4, 0]}, {"estimator": "monte_carlo"}, "latent_dims"),
    ],
)
def test_combinations_without_a_meaning_are_refused(model, objective, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(tiny_raw(model=model, objective=objective))


@pytest.mark.parametrize("kind", ["vae", "hvae"])
def test_decoder_hidden_sets_the_decoder_widths_and_the_run_loads_with_them(tmp_path, kind):
    model = {"kind": kind, "arch": "gated_mlp", "hidden": [24, 16], "decoder_hidden": [40, 56]}
    if kind == "hvae":
        model["latent_dims"] = [4, 2]
    config = config_from_dict(tiny_raw(model=model, train={"epochs": 1}))
    train(config, tmp_path / "run")
    loaded = ckpt.load_run(tmp_path / "run")
    assert _gated_widths(loaded.decoder) == [40, 56]
    assert loaded.decoder.head.in_features == 56
    if kind == "vae":
        assert _gated_widths(loaded.encoder) == [24, 16]


def _gated_widths(net: torch.nn.Module) -> list[int]:
    """The widths of a gated net's body: each layer's linear map gives value and gate."""
    return [m.out_features // 2 for m in net.body.modules() if isinstance(m, torch.nn.Linear)]


def test_decoder_widths_default_to_the_encoder_widths_reversed():
    model, _, _ = _model_and_batch({"arch": "mlp", "hidden": [24, 16]})
    linears = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears[:-1]] == [16, 24]


def test_decoder_hidden_is_refused_for_a_conv_decoder():
    with pytest.raises(ConfigError, match=r"model\.decoder_hidden"):
        config_from_dict(tiny_raw(model={"arch": "conv", "decoder_hidden": [8]}))
