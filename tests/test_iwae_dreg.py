"""IWAE and DReG training objectives against independent computations.

Values against log p(x) of a linear-Gaussian model and a hand-written float64 loop; DReG's
gradients against IWAE's, an explicit autograd expression and its own Monte Carlo average.
"""

import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Normal

from conftest import TINY_VQ, tiny_raw
from test_iw import (
    SHAPE,
    SIGMA,
    LinearDecoder,
    _weights,
    exact_log_px,
    exact_vae_with_diagonal_posterior,
    linear_gaussian_vae,
    sample_data,
)
from vaekit import objectives
from vaekit.config import ModelConfig, ObjectiveConfig, config_from_dict
from vaekit.data import load_dataset
from vaekit.errors import ConfigError
from vaekit.models import build_vae
from vaekit.models.vae import VAE
from vaekit.objectives import (
    IWTerms,
    analytic_elbo,
    dreg_bound,
    iw_loss,
    iwae_bound,
    monte_carlo_elbo,
    training_loss,
)
from vaekit.probability.likelihoods import Gaussian
from vaekit.probability.priors import StandardNormal
from vaekit.train import checkpoint as ckpt
from vaekit.train.loop import resolve_config, train, validate


class FreeEncoder(nn.Module):
    """Ignores x and returns its own [B, 2D] parameters: one posterior per row, whose gradient
    is that row's own draw of the encoder gradient."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.rows = nn.Parameter(rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows


def _mean_and_se(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return t.mean(0), t.std(0) / math.sqrt(len(t))


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def _small_mlp_vae(linear_encoder: bool = False) -> tuple[VAE, torch.Tensor]:
    """A float64 MLP VAE on 2x3 binary images (optionally with one linear encoder layer)."""
    torch.manual_seed(0)
    model = build_vae(ModelConfig(arch="mlp", hidden=[8], latent_dim=2), SHAPE).double()
    if linear_encoder:
        model.encoder = nn.Sequential(nn.Flatten(), nn.Linear(6, 4)).double()
    x = (torch.rand(5, *SHAPE, dtype=torch.float64) < 0.5).double()
    return model, x


# (a) the bound on a model whose log p(x) is exact


def test_one_sample_bound_is_the_elbo():
    model = linear_gaussian_vae()
    x = sample_data(model, 2000, seed=5)
    with torch.no_grad():
        torch.manual_seed(3)
        iw = iwae_bound(model, x, 1)
        torch.manual_seed(3)
        mc = monte_carlo_elbo(model, x)
        analytic = analytic_elbo(model, x)
    # With one sample log (1/1) w_1 = log p(x|z) + log p(z) - log q(z|x): the same noise gives
    # the single-sample ELBO to rounding, and its average is the analytic ELBO.
    torch.testing.assert_close(iw.bound(), mc.elbo, rtol=0, atol=1e-10)
    torch.testing.assert_close(iw.elbo, iw.bound(), rtol=0, atol=1e-10)
    mean, se = _mean_and_se(iw.bound() - analytic.elbo)
    assert abs(mean) < 4 * se


def test_bound_rises_with_k_towards_the_exact_log_likelihood():
    model = linear_gaussian_vae()
    x = sample_data(model, 500, seed=2)
    exact = exact_log_px(model, x)
    torch.manual_seed(0)
    with torch.no_grad():
        bounds = {k: iwae_bound(model, x, k).bound() for k in (1, 10, 100, 2000)}
    gaps = {}
    for k, bound in bounds.items():
        gap, se = _mean_and_se(exact - bound)
        assert gap > -3 * se  # a lower bound on average
        gaps[k] = gap
    # Each step up in K closes most of the remaining gap (it falls like 1/K).
    assert gaps[1] > 3.0 and gaps[10] < gaps[1] / 5 and gaps[100] < gaps[10] / 5
    assert gaps[2000] < 0.01


# (b) the value against a hand-written loop


def test_bound_and_logged_terms_equal_a_float64_loop_over_samples():
    model, x = _small_mlp_vae()
    k = 7
    cfg = ObjectiveConfig(estimator="iwae", iw_samples=k)
    torch.manual_seed(11)
    terms = model.elbo(x, cfg)
    torch.manual_seed(11)
    eps = torch.randn(k, len(x), 2, dtype=torch.float64)  # the draws rsample makes
    with torch.no_grad():
        mean, log_var = model.encoder(x).chunk(2, dim=-1)
        std = torch.exp(0.5 * log_var)
        log_px, log_pz, log_qz = [], [], []
        for e in eps:
            z = mean + std * e
            log_px.append(Bernoulli(logits=model.decoder(z)).log_prob(x).sum((1, 2, 3)))
            log_pz.append(Normal(0.0, 1.0).log_prob(z).sum(-1))
            log_qz.append(Normal(mean, std).log_prob(z).sum(-1))
        log_px, log_pz, log_qz = map(torch.stack, (log_px, log_pz, log_qz))
    assert isinstance(terms, IWTerms) and terms.log_px.shape == (k, 5)
    for scale in (1.0, 0.3):
        expected = torch.logsumexp(log_px + scale * (log_pz - log_qz), dim=0) - math.log(k)
        torch.testing.assert_close(terms.bound(scale), expected, rtol=0, atol=1e-10)
        loss = training_loss(terms, cfg, kl_scale=scale)
        torch.testing.assert_close(loss, -expected.mean(), rtol=0, atol=1e-10)
    logged = terms.logged()
    torch.testing.assert_close(logged["recon"], -log_px.mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(logged["kl"], (log_qz - log_pz).mean(0), rtol=0, atol=1e-10)
    torch.testing.assert_close(logged["elbo"], -(logged["recon"] + logged["kl"]))
    assert (logged["elbo"] <= logged["iwae_bound"] + 1e-12).all()  # Jensen, per example
    assert not any(v.requires_grad for v in logged.values())
    # DReG changes the gradient, not the value.
    torch.manual_seed(11)
    dreg = model.elbo(x, ObjectiveConfig(estimator="dreg", iw_samples=k))
    torch.testing.assert_close(dreg.bound(), terms.bound(), rtol=0, atol=1e-12)


def test_a_bare_estimator_name_uses_the_default_sample_count():
    model, x = _small_mlp_vae()
    with torch.no_grad():
        terms = model.elbo(x, "iwae")
    assert terms.log_px.shape == (ObjectiveConfig().iw_samples, 5)
    with pytest.raises(ValueError, match="samples"):
        iwae_bound(model, x, 0)


# (c) DReG's gradients


def test_dreg_decoder_gradient_is_iwae_and_encoder_gradient_is_not():
    model, x = _small_mlp_vae()
    grads = {}
    for name in ("iwae", "dreg"):
        cfg = ObjectiveConfig(estimator=name, iw_samples=6)
        model.zero_grad()
        torch.manual_seed(4)
        training_loss(model.elbo(x, cfg), cfg, 1.0).backward()
        grads[name] = (_grads(model.decoder), _grads(model.encoder))
    for a, b in zip(grads["iwae"][0], grads["dreg"][0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not all(
        torch.allclose(a, b) for a, b in zip(grads["iwae"][1], grads["dreg"][1], strict=True)
    )


def test_dreg_encoder_gradient_is_the_squared_weight_path_derivative():
    model, x = _small_mlp_vae(linear_encoder=True)
    k, batch = 6, len(x)
    model.zero_grad()
    torch.manual_seed(8)
    iw_loss(dreg_bound(model, x, k)).backward()
    got = _grads(model.encoder)

    # sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi), with log w_k written out by hand and
    # q's parameters held fixed in log q, of the loss -mean_b bound_b.
    torch.manual_seed(8)
    eps = torch.randn(k, batch, 2, dtype=torch.float64)
    mean, log_var = model.encoder(x).chunk(2, dim=-1)
    z = mean + torch.exp(0.5 * log_var) * eps
    z_free = z.detach().requires_grad_()
    q_fixed = Normal(mean.detach(), torch.exp(0.5 * log_var).detach())
    log_w = (
        Bernoulli(logits=model.decoder(z_free)).log_prob(x).sum((2, 3, 4))
        + Normal(0.0, 1.0).log_prob(z_free).sum(-1)
        - q_fixed.log_prob(z_free).sum(-1)
    )
    (d_log_w_dz,) = torch.autograd.grad(log_w.sum(), z_free)  # log w_k depends on z_k alone
    w_tilde = torch.softmax(log_w.detach(), dim=0).unsqueeze(-1)
    expected = torch.autograd.grad(
        z, list(model.encoder.parameters()), grad_outputs=-(w_tilde**2) * d_log_w_dz / batch
    )
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _per_draw_encoder_gradients(shift: float, rows: int, k: int) -> dict[str, torch.Tensor]:
    """Each row's encoder gradient [rows, 4] of the linear-Gaussian model at one x, per
    estimator, from the same noise: ``rows`` independent draws of each estimator."""
    w, b = _weights()
    x = sample_data(linear_gaussian_vae(), 1, seed=7).expand(rows, *SHAPE)
    params = torch.tensor([shift, -shift, math.log(0.5), math.log(0.5)], dtype=torch.float64)
    encoder = FreeEncoder(params.expand(rows, 4).clone())
    model = VAE(encoder, LinearDecoder(w, b), StandardNormal(2), Gaussian(SIGMA), 2, SHAPE)
    out = {}
    for estimator in (iwae_bound, dreg_bound):
        model.zero_grad()
        torch.manual_seed(1)
        (iw_loss(estimator(model, x, k)) * rows).backward()  # the sum: each row's own gradient
        out[estimator.__name__] = encoder.rows.grad.clone()
    return out


def test_dreg_encoder_gradient_is_unbiased_with_lower_variance():
    grads = _per_draw_encoder_gradients(shift=0.3, rows=20_000, k=20)
    iwae, dreg = grads["iwae_bound"], grads["dreg_bound"]
    mean, se = _mean_and_se(iwae)
    assert ((mean.abs() / se) > 5).sum() >= 2  # a gradient clearly away from zero
    # Both estimate the gradient of the same bound: paired draws agree on average ...
    diff_mean, diff_se = _mean_and_se(dreg - iwae)
    assert (diff_mean.abs() < 4 * diff_se).all(), (diff_mean, diff_se)
    # ... and DReG's draws scatter far less (Tucker et al. 2018, figure 1).
    ratio = dreg.var(0) / iwae.var(0)
    assert (ratio < 0.3).all(), ratio


def test_dreg_encoder_gradient_vanishes_at_the_exact_posterior():
    # q = p(z|x) makes log w_k = log p(x) for every z, so the path term is zero for every
    # draw, while IWAE's score-function term is noise around zero.
    model = exact_vae_with_diagonal_posterior()
    x = sample_data(model, 50, seed=3)
    model.encoder = FreeEncoder(model.encoder(x).detach())
    got = {}
    for estimator in (iwae_bound, dreg_bound):
        model.zero_grad()
        torch.manual_seed(2)
        iw_loss(estimator(model, x, 10)).backward()
        got[estimator.__name__] = model.encoder.rows.grad.clone()
    assert got["dreg_bound"].abs().max() < 1e-10
    assert got["iwae_bound"].abs().max() > 1e-3


def test_dreg_refuses_a_tempered_bound_and_runs_without_gradients():
    model, x = _small_mlp_vae()
    with pytest.raises(ValueError, match="untempered"):
        iw_loss(dreg_bound(model, x, 3), kl_scale=0.5)
    with torch.no_grad():  # no hook on a z that needs no gradient
        assert torch.isfinite(dreg_bound(model, x, 3).bound()).all()


# (d) training through the loop


@pytest.mark.parametrize("estimator", ["iwae", "dreg"])
def test_training_raises_the_bound(tmp_path, monkeypatch, estimator):
    config = config_from_dict(tiny_raw(objective={"estimator": estimator, "iw_samples": 3}))
    seen = []
    real = objectives.IW_ESTIMATORS[estimator]

    def spy(model, x, samples):
        seen.append(samples)
        return real(model, x, samples)

    monkeypatch.setitem(objectives.IW_ESTIMATORS, estimator, spy)
    val_data = load_dataset(config.data, "val")
    resolved = resolve_config(config, load_dataset(config.data, "train"))
    torch.manual_seed(resolved.train.seed)
    before = validate(ckpt.build_model(resolved), val_data, resolved, seed=123)
    train(config, tmp_path / "run")
    after = validate(ckpt.load_run(tmp_path / "run"), val_data, resolved, seed=123)
    assert set(seen) == {3}  # objective.iw_samples reaches the estimator, in training too
    assert after["iwae_bound"] > before["iwae_bound"] + 50.0, (before, after)
    assert after["elbo"] <= after["iwae_bound"]
    records = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    assert {"train/iwae_bound", "val/iwae_bound", "val/elbo"} <= set(records[-1])


# (e) configs that make no sense


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (tiny_raw(objective={"estimator": "iwae", "free_bits": 0.5}), "free_bits"),
        (tiny_raw(objective={"estimator": "dreg", "beta": 0.5}), "untempered"),
        (
            tiny_raw(objective={"estimator": "dreg", "warmup": "linear", "warmup_steps": 9}),
            "untempered",
        ),
        (tiny_raw(objective={"estimator": "iwae", "iw_samples": 0}), r"objective\.iw_samples"),
        (tiny_raw(model=TINY_VQ, objective={"estimator": "dreg"}), "VQ-VAE"),
    ],
)
def test_config_refuses_what_the_bounds_cannot_do(raw, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_iwae_accepts_warmup_and_beta():
    raw = tiny_raw(objective={"estimator": "iwae", "warmup": "linear", "warmup_steps": 9})
    assert config_from_dict(raw).objective.estimator == "iwae"
    assert config_from_dict(tiny_raw(objective={"estimator": "iwae", "beta": 0.5}))
