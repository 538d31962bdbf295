"""VAEs with a mixture-of-Gaussians or VampPrior: config, KL, training, checkpoints, evaluation,
diagnostics and pictures, each against an independent computation."""

import math

import pytest
import torch
from safetensors.torch import load_file
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from conftest import tiny_raw
from vaekit.config import ModelConfig, ObjectiveConfig, config_from_dict
from vaekit.data import load_dataset
from vaekit.diagnostics import kl_to_prior_per_dim, seeded_model_inputs
from vaekit.errors import ConfigError
from vaekit.evaluate import evaluate_model
from vaekit.models import build_vae
from vaekit.objectives import iw_log_likelihood, training_loss
from vaekit.probability import MixtureOfGaussians, StandardNormal, VampPrior
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import resolve_config, train, validate
from vaekit.viz.latents import manifold_latents, prior_quantiles

PRIORS = ["mog", "vamp"]


def _model(prior, latent_dim=2, shape=(1, 4, 4), k=3, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(
        arch="mlp", hidden=[16], latent_dim=latent_dim, prior=prior, prior_components=k
    )
    return build_vae(cfg, shape).double()


def _spread(model):
    """Move the prior well away from N(0, I), so that a stray N(0, I) would show."""
    with torch.no_grad():
        if isinstance(model.prior, MixtureOfGaussians):
            k, d = model.prior.means.shape
            model.prior.means.copy_(torch.linspace(-2.0, 3.0, k * d).reshape(k, d))
            model.prior.log_vars.fill_(-1.0)
            model.prior.logits.copy_(torch.linspace(-1.0, 1.0, k))
        else:  # dark, grey and bright pseudo-inputs with narrow, shifted posteriors
            k, d = model.prior.num_components, model.latent_dim
            levels = torch.linspace(-4.0, 4.0, k, dtype=model.prior.pseudo_logits.dtype)
            model.prior.pseudo_logits.copy_(
                levels.view(k, 1, 1, 1).expand_as(model.prior.pseudo_logits)
            )
            model.encoder.head.weight.mul_(4.0)
            model.encoder.head.bias[:d].add_(2.0)
            model.encoder.head.bias[d:].fill_(-2.0)
    return model


def _prior_log_density(model, z):
    """log p(z) of the model's prior, computed without the prior's own log_prob."""
    with torch.no_grad():
        if isinstance(model.prior, MixtureOfGaussians):
            p = model.prior
            parts = Independent(Normal(p.means, torch.exp(0.5 * p.log_vars)), 1)
            return MixtureSameFamily(Categorical(logits=p.logits), parts).log_prob(z)
        rows = []
        for u in model.prior.pseudo_inputs:  # (1/K) sum_k q(z | u_k), one u_k at a time
            q = model.encode(u.unsqueeze(0))
            normal = Normal(q.mean[0], q.std[0])
            rows.append(normal.log_prob(z).sum(-1))
        return torch.logsumexp(torch.stack(rows), 0) - math.log(len(rows))


def _grid(lo=-7.0, hi=8.0, n=301):
    """A square grid of z in 2-D and the area of one cell, for quadrature."""
    t = torch.linspace(lo, hi, n, dtype=torch.float64)
    z1, z2 = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([z1.reshape(-1), z2.reshape(-1)], 1), (t[1] - t[0]) ** 2


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("prior", PRIORS)
def test_config_refuses_the_analytic_kl_with_a_mixture_prior(prior):
    with pytest.raises(ConfigError, match=f"model.prior = '{prior}' has no closed-form KL"):
        config_from_dict(tiny_raw(model={"prior": prior}))
    cfg = config_from_dict(
        tiny_raw(model={"prior": prior}, objective={"estimator": "monte_carlo", "free_bits": 0.1})
    )
    assert cfg.model.prior == prior and cfg.model.prior_components == 500


def test_config_prior_keys_are_checked():
    assert config_from_dict(tiny_raw()).model.prior == "standard_normal"
    with pytest.raises(ConfigError, match=r"model\.prior"):
        config_from_dict(tiny_raw(model={"prior": "flow"}))
    with pytest.raises(ConfigError, match=r"model\.prior_components"):
        config_from_dict(tiny_raw(model={"prior_components": 0}))
    vq = {"kind": "vqvae", "arch": "resnet", "prior": "vamp"}
    with pytest.raises(ConfigError, match="VQ-VAE's prior over codes"):
        config_from_dict(tiny_raw(model=vq, objective={"estimator": "monte_carlo"}))


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize("prior", PRIORS)
def test_built_model_has_the_prior_once_in_its_state_and_gradients_reach_it(prior):
    model = _model(prior, latent_dim=3, shape=(1, 8, 8), k=5)
    expected = {"mog": MixtureOfGaussians, "vamp": VampPrior}[prior]
    assert isinstance(model.prior, expected) and model.prior.num_components == 5
    keys = [k for k in model.state_dict() if k.startswith("prior.")]
    assert keys == (
        ["prior.means", "prior.log_vars", "prior.logits"]
        if prior == "mog"
        else ["prior.pseudo_logits"]
    )
    assert len(model.state_dict()) == len(dict(model.named_parameters()))  # no encoder twice
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64).round()
    terms = model.elbo(x, "monte_carlo")
    assert terms.kl_per_dim.shape == (6, 3) and torch.isfinite(terms.elbo).all()
    terms.elbo.mean().neg().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.sample(4).shape == (4, 1, 8, 8)


@pytest.mark.parametrize("prior", PRIORS)
def test_monte_carlo_kl_averages_to_the_integrated_kl(prior):
    # E_q[log q(z|x) - log p(z)] by quadrature on a 2-D grid, against 40,000 one-sample terms.
    model = _spread(_model(prior))
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        q = model.encode(x)
        z, area = _grid()
        log_q = Independent(Normal(q.mean[0], q.std[0]), 1).log_prob(z)
        integrated = float((log_q.exp() * (log_q - _prior_log_density(model, z))).sum() * area)
        torch.manual_seed(2)
        kl = model.elbo(x.expand(40_000, -1, -1, -1), "monte_carlo").kl
    assert kl.mean().item() == pytest.approx(integrated, abs=5 * kl.std().item() / 200)
    assert integrated > 0.1  # the prior is not the posterior: the test can tell them apart


@pytest.mark.parametrize("prior", PRIORS)
def test_the_cheap_split_of_log_p_gives_the_same_elbo_and_gradient_as_the_chain_rule(prior):
    # per_dim=False (training without free bits) skips the mixture's chain rule: the KL's sum,
    # the ELBO and every parameter's gradient must be those of the exact per-latent terms.
    model = _spread(_model(prior, latent_dim=3, k=4))
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    results = []
    for per_dim in (True, False):
        model.zero_grad()
        torch.manual_seed(4)  # the same posterior draw for both
        terms = model.elbo(x, "monte_carlo", per_dim=per_dim)
        assert terms.per_dim_exact is per_dim
        training_loss(terms, ObjectiveConfig(estimator="monte_carlo"), kl_scale=0.7).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((terms.kl.detach(), terms.elbo.detach(), terms.kl_per_dim.detach(), grads))
    (kl, elbo, exact, grads), (kl2, elbo2, even, grads2) = results
    torch.testing.assert_close(kl2, kl)
    torch.testing.assert_close(elbo2, elbo)
    assert grads2.keys() == grads.keys() and len(grads) > 4
    for name in grads:
        torch.testing.assert_close(grads2[name], grads[name], msg=name)
    # The split itself differs (so the test can tell the two paths apart) ...
    assert (exact - even).abs().max() > 1e-3
    # ... and free bits, which floor each latent's KL, refuse the even split.
    with pytest.raises(ValueError, match="free bits"):
        model.zero_grad()
        terms = model.elbo(x, "monte_carlo", per_dim=False)
        training_loss(terms, ObjectiveConfig(estimator="monte_carlo", free_bits=0.1), 1.0)


def test_iw_evaluation_encodes_the_pseudo_inputs_once_per_batch_and_gives_the_same_bound():
    model = _spread(_model("vamp", latent_dim=3, k=4))
    calls = []
    encode = model.prior._encode
    model.prior.bind(lambda u: calls.append(len(u)) or encode(u))
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    bounds = []
    for grad in (True, False):
        calls.clear()
        with torch.set_grad_enabled(grad):
            bound = iw_log_likelihood(
                model, x, 300, chunk_size=50, generator=torch.Generator().manual_seed(6)
            )
        bounds.append((bound.detach(), list(calls)))
    (with_grad, calls_grad), (without, calls_eval) = bounds
    assert calls_grad == [4] * 6  # training-style: every chunk of 50 encodes the 4 pseudo-inputs
    assert calls_eval == [4]  # evaluation: once for the batch
    torch.testing.assert_close(without, with_grad, rtol=0, atol=1e-12)
    assert model.prior._fixed is None  # nothing is left fixed after the block


@pytest.mark.parametrize("prior", PRIORS)
def test_evaluate_iw_nll_uses_the_model_prior(prior):
    # log p(x) = log integral p(x|z) p(z) dz by quadrature on the 2-D latent plane, with the
    # prior's density computed independently, against `evaluate`'s IW estimate at K = 3000.
    config = config_from_dict(
        tiny_raw(
            data={"image_size": 16},
            model={"latent_dim": 2, "hidden": [16], "prior": prior, "prior_components": 3},
            objective={"estimator": "monte_carlo"},
        )
    )
    model = _spread(_model(prior, shape=(1, 16, 16))).float()
    result = evaluate_model(model, config, seed=0, iw_k=3000, limit=3, diagnostics=False)
    data = load_dataset(config.data.model_copy(update={"binarize": "none"}), "test")
    data = data.subset(torch.arange(3))
    x = next(seeded_model_inputs(data, binarize="dynamic", dequantize=False, seed=0, batch_size=3))
    model = model.double()
    z, area = _grid(-6.0, 7.0, 261)
    with torch.no_grad():
        log_pz = _prior_log_density(model, z)
        params = model.decode(z)
        exact = [
            torch.logsumexp(
                model.likelihood.log_prob(params, xi.expand(len(z), -1, -1, -1)) + log_pz, 0
            )
            + math.log(area)
            for xi in x.double()
        ]
        as_normal = [  # what an N(0, I) prior would give: far off
            torch.logsumexp(
                model.likelihood.log_prob(params, xi.expand(len(z), -1, -1, -1))
                + StandardNormal(2).double().log_prob(z),
                0,
            )
            + math.log(area)
            for xi in x.double()
        ]
    nll = -float(torch.stack(exact).mean())
    assert result["iw_nll"] == pytest.approx(nll, abs=0.05)
    assert abs(-float(torch.stack(as_normal).mean()) - nll) > 0.5


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("prior", PRIORS)
def test_training_with_a_mixture_prior_improves_the_elbo_and_checkpoints_the_prior(tmp_path, prior):
    config = config_from_dict(
        tiny_raw(
            data={"image_size": 16, "sprites_count": 960},
            model={"prior": prior, "prior_components": 10},
            objective={"estimator": "monte_carlo"},
            train={"epochs": 2, "batch_size": 32},
        )
    )
    val_data = load_dataset(config.data, "val")
    resolved = resolve_config(config, load_dataset(config.data, "train"))
    torch.manual_seed(resolved.train.seed)
    start = ckpt.build_model(resolved)
    before = validate(start, val_data, resolved, seed=5)
    train(config, tmp_path / "run")
    loaded = ckpt.load_run(tmp_path / "run")
    after = validate(loaded, val_data, resolved, seed=5)
    assert after["elbo"] > before["elbo"] + 20.0, (before, after)
    # The trained prior is in the checkpoint: a model built with other weights and given the
    # saved tensors has the loaded model's density, which is no longer the initial one.
    torch.manual_seed(99)
    other = ckpt.build_model(resolved)
    other.load_state_dict(load_file(tmp_path / "run" / ckpt.WEIGHTS_FILE))
    z = torch.randn(50, resolved.model.latent_dim)
    with torch.no_grad():
        assert torch.equal(other.prior.log_prob(z), loaded.prior.log_prob(z))
        assert not torch.allclose(start.prior.log_prob(z), loaded.prior.log_prob(z))


# --------------------------------------------------------------------------- diagnostics


def test_per_latent_kl_integrates_against_the_prior_marginal():
    model = _spread(_model("mog", k=4))
    torch.manual_seed(3)
    mean, log_var = (
        torch.randn(5, 2, dtype=torch.float64),
        torch.empty(5, 2).uniform_(-4, 1).double(),
    )
    got = kl_to_prior_per_dim(model.prior, mean, log_var)
    # KL(N(m, s^2) || p_d) = -H - integral N(z; m, s^2) log p_d(z) dz on a fine 1-D grid.
    t = torch.linspace(-20, 20, 40_001, dtype=torch.float64)
    p = model.prior
    expected = []
    for d in range(2):
        marginal = MixtureSameFamily(
            Categorical(logits=p.logits.detach()),
            Normal(p.means.detach()[:, d], torch.exp(0.5 * p.log_vars.detach()[:, d])),
        )
        log_pd = marginal.log_prob(t)
        per_x = []
        for m, lv in zip(mean[:, d], log_var[:, d], strict=True):
            q = Normal(m, torch.exp(0.5 * lv))
            log_q = q.log_prob(t)
            per_x.append((log_q.exp() * (log_q - log_pd)).sum() * (t[1] - t[0]))
        expected.append(torch.stack(per_x).mean())
    torch.testing.assert_close(got, torch.stack(expected), atol=2e-3, rtol=0)
    # A posterior equal to a one-Gaussian marginal has KL 0 there.
    with torch.no_grad():
        p.logits.copy_(torch.tensor([0.0, -1e4, -1e4, -1e4]))
    at_prior = kl_to_prior_per_dim(p, p.means[:1].detach(), p.log_vars[:1].detach())
    torch.testing.assert_close(at_prior, torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)


def test_standard_normal_per_latent_kl_is_the_closed_form():
    mean, log_var = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    got = kl_to_prior_per_dim(StandardNormal(2), mean, log_var)
    expected = torch.tensor([0.5, 0.5 * (2.0 - 1.0 - math.log(2.0))], dtype=torch.float64)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("prior", PRIORS)
def test_manifold_grid_sits_at_the_prior_marginal_quantiles(prior):
    model = _spread(_model(prior, k=4))
    q = prior_quantiles(model.prior, 5)
    z = model.prior.sample(200_000, generator=torch.Generator().manual_seed(4))
    probs = torch.linspace(0.05, 0.95, 5, dtype=torch.float64)
    torch.testing.assert_close(q.double(), torch.quantile(z, probs, dim=0), atol=0.03, rtol=0)
    grid = manifold_latents(5, prior=model.prior).reshape(5, 5, 2)
    torch.testing.assert_close(grid[0, :, 0], q[:, 0])  # z1 across the top row
    torch.testing.assert_close(grid[:, 0, 1], q[:, 1].flip(0))  # z2 up the first column
