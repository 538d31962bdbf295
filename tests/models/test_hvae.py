"""The Ladder VAE: its log-weights, KLs and merge checked against independent computations."""

import math

import pytest
import torch
from pydantic import Field
from torch.distributions import Bernoulli, Normal, kl_divergence

from conftest import tiny_raw
from vaekit.config import ModelConfig, ObjectiveConfig, config_from_dict
from vaekit.data import load_dataset
from vaekit.data.pipeline import to_model_input
from vaekit.models.hvae import (
    HierarchicalVAE,
    LadderTerms,
    build_hvae,
    gaussian_kl_per_dim,
    precision_weighted,
)
from vaekit.objectives import IWTerms, training_loss
from vaekit.probability import noise
from vaekit.probability.gaussian import DiagonalGaussian
from vaekit.probability.likelihoods import LIKELIHOODS


class HVAEConfig(ModelConfig):
    """ModelConfig with the two fields the hierarchical VAE reads (until config.py has them)."""

    latent_dims: list[int] = Field(default=[32, 16])
    ladder_width: int = 256


def tiny(dims=(3, 2), width=16, shape=(1, 8, 8), **options) -> HierarchicalVAE:
    options = {"arch": "mlp", "hidden": [24], **options}
    return build_hvae(HVAEConfig(latent_dims=list(dims), ladder_width=width, **options), shape)


def binary(n, shape=(1, 8, 8), seed=0):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed)).round()


# ------------------------------------------------------------------------------ (d) the merge


def test_precision_weighted_merge_is_the_normalised_product_on_a_grid():
    a = DiagonalGaussian(torch.tensor([0.7, -2.0, 0.0]), torch.tensor([0.5, 1.3, 2.0]).log() * 2)
    b = DiagonalGaussian(torch.tensor([-1.2, 1.0, 3.0]), torch.tensor([1.3, 0.2, 2.0]).log() * 2)
    merged = precision_weighted(a, b)
    t = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64)[:, None]  # [T, 1] x 3 dims
    density = (
        Normal(a.mean.double(), a.std.double()).log_prob(t)
        + Normal(b.mean.double(), b.std.double()).log_prob(t)
    ).exp()
    density = density / torch.trapezoid(density, t, dim=0)
    mean = torch.trapezoid(t * density, t, dim=0)
    var = torch.trapezoid((t - mean) ** 2 * density, t, dim=0)
    torch.testing.assert_close(merged.mean.double(), mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged.var.double(), var, rtol=1e-5, atol=0)
    # The normalised product is that Gaussian pointwise, not just in its first two moments.
    gauss = Normal(merged.mean.double(), merged.std.double()).log_prob(t).exp()
    torch.testing.assert_close(gauss, density, rtol=0, atol=1e-5)


def test_merge_with_a_far_wider_gaussian_is_the_narrow_one():
    narrow = DiagonalGaussian(torch.tensor([1.5]), torch.tensor([-6.0]))
    wide = DiagonalGaussian(torch.tensor([-40.0]), torch.tensor([18.0]))
    merged = precision_weighted(narrow, wide)
    assert merged.mean.item() == pytest.approx(1.5, abs=1e-6)
    assert merged.log_var.item() == pytest.approx(-6.0, abs=1e-6)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    q = DiagonalGaussian(torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g))
    p = DiagonalGaussian(torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g))
    expected = kl_divergence(Normal(q.mean, q.std), Normal(p.mean, p.std))
    torch.testing.assert_close(gaussian_kl_per_dim(q, p), expected)


# ---------------------------------------------------------------- (a), (b) the log-weights


@pytest.mark.parametrize("dims", [(3, 2), (4, 3, 2), (5,)])
def test_one_sample_log_weight_is_the_monte_carlo_elbo_with_the_same_noise(dims):
    torch.manual_seed(0)
    model = tiny(dims).double()
    x = binary(6).double()
    torch.manual_seed(11)
    terms = model.elbo(x, "monte_carlo")
    torch.manual_seed(11)
    log_w = model.log_weights(x, 1)
    assert log_w.shape == (1, 6)
    torch.testing.assert_close(log_w[0], -(terms.recon + terms.kl), rtol=0, atol=1e-10)


@pytest.mark.parametrize("arch", ["mlp", "gated_mlp"])
def test_log_weights_match_a_hand_written_float64_computation(arch):
    torch.manual_seed(1)
    model = tiny((3, 2), width=16, arch=arch).double()
    x = binary(4, seed=3).double()
    k = 5
    got = model.log_weights(x, k, generator=torch.Generator().manual_seed(42))

    # The same noise, in the documented order: per sample, the top layer's [B, D_2] first.
    g = torch.Generator().manual_seed(42)
    eps2, eps1 = [], []
    for _ in range(k):
        eps2.append(torch.randn(4, 2, generator=g, dtype=torch.float64))
        eps1.append(torch.randn(4, 3, generator=g, dtype=torch.float64))
    eps2, eps1 = torch.stack(eps2), torch.stack(eps1)

    with torch.no_grad():
        d1 = model.bottom_up[0](x)
        d2 = model.bottom_up[1](d1)
        mu1_hat, lv1_hat = model.heads[0](d1).chunk(2, dim=-1)
        mu2_hat, lv2_hat = model.heads[1](d2).chunk(2, dim=-1)
        z2 = mu2_hat + (0.5 * lv2_hat).exp() * eps2  # [k, B, 2]
        mu_p, lv_p = model.top_down[0](z2).chunk(2, dim=-1)
        # Precision-weighted merge, in its textbook form (Sønderby et al. 2016, eqs. 18-19).
        var_hat, var_p = lv1_hat.exp(), lv_p.exp()
        var_q = 1.0 / (1.0 / var_hat + 1.0 / var_p)
        mu_q = var_q * (mu1_hat / var_hat + mu_p / var_p)
        z1 = mu_q + var_q.sqrt() * eps1
        logits = model.decoder(z1)
        log_px = Bernoulli(logits=logits).log_prob(x).sum((-3, -2, -1))
        log_pz2 = Normal(0.0, 1.0).log_prob(z2).sum(-1)
        log_pz1 = Normal(mu_p, var_p.sqrt()).log_prob(z1).sum(-1)
        log_qz2 = Normal(mu2_hat, (0.5 * lv2_hat).exp()).log_prob(z2).sum(-1)
        log_qz1 = Normal(mu_q, var_q.sqrt()).log_prob(z1).sum(-1)
        expected = log_px + log_pz2 + log_pz1 - log_qz2 - log_qz1

    assert got.dtype == torch.float64 and got.shape == (k, 4)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_a_process_of_a_data_parallel_run_sees_its_rows_of_the_global_noise():
    torch.manual_seed(0)
    model = tiny((3, 2)).double()
    x = binary(6).double()
    torch.manual_seed(4)
    whole_elbo = model.elbo(x, "monte_carlo").elbo
    whole_w = model.log_weights(x, 3, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(4)
    with noise.row_share(noise.rows_of(6, rank=1, world_size=3)):
        part_elbo = model.elbo(x[2:4], "monte_carlo").elbo
        part_w = model.log_weights(x[2:4], 3, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(part_elbo, whole_elbo[2:4], rtol=0, atol=1e-12)
    torch.testing.assert_close(part_w, whole_w[:, 2:4], rtol=0, atol=1e-12)


def test_log_weights_do_not_depend_on_how_k_is_cut_into_chunks():
    torch.manual_seed(0)
    model = tiny((3, 2)).double()
    x = binary(3).double()
    whole = model.log_weights(x, 6, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    parts = torch.cat([model.log_weights(x, 2, g), model.log_weights(x, 4, g)])
    torch.testing.assert_close(parts, whole, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------- (c) the IW bound


def test_iw_bound_rises_with_k_and_lies_above_the_elbo():
    torch.manual_seed(2)
    model = tiny((4, 2), width=16).double()
    x = binary(32, seed=4).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.decoder.head.weight *= 4  # a decoder that z moves: a wide Jensen gap to close
        log_w = model.log_weights(x, 1000, generator=g)  # [1000, 32]

        def bound(k):  # mean over 1000 / k independent K-sample bounds and the images
            groups = log_w.reshape(1000 // k, k, -1)
            return (torch.logsumexp(groups, dim=1) - math.log(k)).mean().item()

        bounds = [bound(k) for k in (1, 10, 100, 1000)]
        torch.manual_seed(9)
        elbo = torch.stack([model.elbo(x).elbo for _ in range(200)]).mean().item()
    assert bounds[0] < bounds[1] < bounds[2] < bounds[3]
    assert bounds[3] - bounds[0] > 0.5  # a clear gain, not rounding
    assert elbo < bounds[1]
    # The analytic and the one-sample Monte Carlo ELBO estimate the same bound.
    assert elbo == pytest.approx(bounds[0], abs=0.3)


def test_iwae_objective_gives_iw_terms_whose_bound_trains():
    torch.manual_seed(0)
    model = tiny((3, 2))
    x = binary(5)
    terms = model.elbo(x, ObjectiveConfig(estimator="iwae", iw_samples=4))
    assert isinstance(terms, IWTerms) and terms.log_px.shape == (4, 5)
    assert (terms.bound() >= terms.elbo - 1e-5).all()
    training_loss(terms, ObjectiveConfig(estimator="iwae", iw_samples=4), 1.0).backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="DReG"):
        model.elbo(x, "dreg")


# ---------------------------------------------------------------- terms and per-layer KL


def test_terms_carry_per_layer_kl_and_free_bits_apply():
    torch.manual_seed(0)
    model = tiny((3, 2))
    x = binary(7)
    terms = model.elbo(x)
    assert isinstance(terms, LadderTerms)
    assert terms.recon.shape == (7,) and terms.kl_per_dim.shape == (7, 5)
    logged = terms.logged()
    assert set(logged) == {"elbo", "recon", "kl", "kl_z1", "kl_z2"}
    torch.testing.assert_close(logged["kl_z1"] + logged["kl_z2"], terms.kl)
    torch.testing.assert_close(logged["kl_z1"], terms.kl_per_dim[:, model.layer_slices[0]].sum(1))
    # Analytic KLs of Gaussians are non-negative per dimension, layer by layer.
    assert (terms.kl_per_dim >= 0).all()
    loss = training_loss(terms, ObjectiveConfig(free_bits=0.5), kl_scale=1.0)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_a_vamp_top_split_evenly_keeps_each_layers_kl_and_the_gradient():
    # per_dim=False changes only how p(z_L)'s log density is spread over z_L's dims.
    model = tiny((3, 2), prior="vamp", prior_components=4).double()
    x = binary(6).double()
    runs = []
    for per_dim in (True, False):
        model.zero_grad()
        torch.manual_seed(5)
        terms = model.elbo(x, "monte_carlo", per_dim=per_dim)
        (-terms.elbo.mean()).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        runs.append((terms.kl_per_layer.detach(), terms.kl_per_dim.detach(), grads))
    (layers, exact, grads), (layers2, even, grads2) = runs
    torch.testing.assert_close(layers2, layers)
    torch.testing.assert_close(even[:, :3], exact[:, :3])  # z_1 has a Gaussian p(z_1 | z_2)
    assert (even[:, 3:] - exact[:, 3:]).abs().max() > 1e-3
    assert len(grads2) == len(grads) > 4
    for g2, g in zip(grads2, grads, strict=True):
        torch.testing.assert_close(g2, g)


def test_analytic_and_monte_carlo_elbo_agree_on_average():
    torch.manual_seed(3)
    model = tiny((3, 2)).double()
    x = binary(4).double()
    with torch.no_grad():
        torch.manual_seed(0)
        analytic = torch.stack([model.elbo(x, "analytic").kl for _ in range(4000)])
        mc = torch.stack([model.elbo(x, "monte_carlo").kl for _ in range(4000)])
    stderr = (mc.var(0) / 4000).sqrt()
    assert ((analytic.mean(0) - mc.mean(0)).abs() < 5 * stderr + 1e-3).all()


def test_vamp_prior_on_the_top_layer():
    torch.manual_seed(0)
    model = tiny((3, 2), prior="vamp", prior_components=6)
    x = binary(4)
    with pytest.raises(ValueError, match="monte_carlo"):
        model.elbo(x, "analytic")
    torch.manual_seed(1)
    terms = model.elbo(x, "monte_carlo")
    torch.manual_seed(1)
    torch.testing.assert_close(model.log_weights(x, 1)[0].float(), terms.elbo, atol=1e-4, rtol=0)
    terms.elbo.mean().neg().backward()
    assert model.prior.pseudo_logits.grad.abs().sum() > 0
    assert model.sample(3).shape == (3, 1, 8, 8)


# ----------------------------------------------------------------------- (e) training


def test_a_tiny_model_learns_sprites():
    config = config_from_dict(tiny_raw())
    data, val = load_dataset(config.data, "train"), load_dataset(config.data, "val")
    torch.manual_seed(0)
    model = tiny((8, 4), width=64, shape=(1, 28, 28), hidden=[128])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    binarized = torch.Generator().manual_seed(1)
    held_out = to_model_input(val.images, binarize="dynamic", dequantize=False, generator=binarized)

    def held_out_elbo():
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(2)
            return model.elbo(held_out).elbo.mean().item()

    before = held_out_elbo()
    g = torch.Generator().manual_seed(3)
    for _ in range(300):
        index = torch.randint(0, len(data.images), (64,), generator=g)
        x = to_model_input(data.images[index], binarize="dynamic", dequantize=False, generator=g)
        loss = -model.elbo(x).elbo.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_elbo()
    assert after > before + 200, (before, after)
    with torch.no_grad():
        kl = model.elbo(held_out).logged()
    assert kl["kl_z1"].mean() > 0.1 and kl["kl_z2"].mean() > 0.1  # neither layer collapsed


def test_a_gated_ladder_gates_every_layer_by_hand():
    """With arch gated_mlp each deterministic layer is value * sigmoid(gate) of one linear
    map, with no activation on the value: d_1 from x by hand through [64, 24, 16], d_2 from d_1,
    and p(z_1 | z_2) through a gated hidden layer of 16."""
    torch.manual_seed(2)
    model = tiny((3, 2), width=16, arch="gated_mlp").double()
    x = binary(5, seed=4).double()

    def gated(h, linear):
        value, gate = (h @ linear.weight.T + linear.bias).chunk(2, dim=-1)
        return value * torch.sigmoid(gate)

    with torch.no_grad():
        d1 = gated(gated(x.flatten(1), model.bottom_up[0][1].linear), model.bottom_up[0][2].linear)
        torch.testing.assert_close(model.bottom_up[0](x), d1, rtol=0, atol=1e-12)
        d2 = gated(d1, model.bottom_up[1].linear)
        torch.testing.assert_close(model.bottom_up[1](d1), d2, rtol=0, atol=1e-12)
        z2 = torch.randn(7, 2, dtype=torch.float64)
        td = model.top_down[0]
        expected = gated(z2, td.body[0].linear) @ td.head.weight.T + td.head.bias
        torch.testing.assert_close(td(z2), expected, rtol=0, atol=1e-12)
        assert (d1 < 0).any()  # a linear value, not a ReLU's output


# ------------------------------------------------------------------- (f) pictures


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("arch", ["mlp", "gated_mlp", "conv"])
def test_samples_and_reconstructions_are_images(arch, likelihood):
    torch.manual_seed(0)
    model = tiny((5, 3), shape=(1, 28, 28), arch=arch, channels=[4, 8], likelihood=likelihood)
    x = torch.randint(0, 256, (3, 1, 28, 28)) / 255.0
    terms = model.elbo(x)
    assert torch.isfinite(terms.elbo).all() and torch.isfinite(model.log_weights(x, 3)).all()
    channels = LIKELIHOODS[likelihood].params_per_pixel  # numbers per pixel the decoder makes
    assert model.decode(torch.zeros(2, 5)).shape == (2, channels, 28, 28)
    for images in (model.sample(4), model.sample(2, temperature=0.0), model.reconstruct(x)):
        assert images.shape[1:] == (1, 28, 28)
        assert images.min() >= 0 and images.max() <= 1


def test_batchnorm_ladder_evaluates_k_samples_and_single_images():
    torch.manual_seed(0)
    model = tiny((3, 2), batchnorm=True)
    x = binary(8)
    model.elbo(x).elbo.mean().neg().backward()  # training mode: batch statistics
    model.eval()
    assert model.log_weights(x, 4).shape == (4, 8)
    assert model.traverse(x, 2, [0], torch.zeros(3)).shape == (3, 1, 8, 8)


def test_sample_is_seeded_by_its_generator():
    torch.manual_seed(0)
    model = tiny((3, 2))
    a = model.sample(5, generator=torch.Generator().manual_seed(7))
    b = model.sample(5, generator=torch.Generator().manual_seed(7))
    c = model.sample(5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_traversals_per_layer():
    torch.manual_seed(0)
    model = tiny((3, 2)).eval()
    x = binary(2)
    values = torch.linspace(-2.0, 2.0, 5)
    for layer in (1, 2):
        for lower in ("prior", "posterior"):
            images = model.traverse(x, layer, [0, 1], values, lower=lower)
            assert images.shape == (10, 1, 8, 8)
            assert not torch.allclose(images[0], images[4])  # the latent changes the image
    # At the posterior's own value the traversal is the reconstruction, for either layer.
    means = [q.mean[0] for q in model.encode_layers(x[:1])]
    for layer in (1, 2):
        at_mean = model.traverse(x, layer, [0], means[layer - 1][:1], lower="posterior")
        torch.testing.assert_close(at_mean, model.reconstruct(x[:1]))
    assert model.posterior_means(x).shape == (2, 5)
    with pytest.raises(ValueError, match="dimensions"):
        model.traverse(x, 2, [2], values)
