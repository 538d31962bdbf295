"""The vector quantizer: nearest-code lookup, straight-through gradients, EMA, restarts, k-means."""

from __future__ import annotations

import math

import pytest
import torch

from vaekit.config import QuantizerConfig
from vaekit.models.quantizer import (
    VectorQuantizer,
    kmeans,
    nearest_codes,
    usage_and_perplexity,
)


def make(**kw) -> VectorQuantizer:
    base = {"num_codes": 8, "code_dim": 3, "kmeans_init": False, "dead_code_steps": 0}
    return VectorQuantizer(QuantizerConfig(**(base | kw)))


def test_lookup_picks_the_nearest_code_by_brute_force():
    torch.manual_seed(0)
    q = make(update="loss").eval()
    z_e = torch.randn(4, 3, 5, 6)
    out = q(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 3)
    expected = torch.cdist(flat, q.codebook.detach()).argmin(1).view(4, 5, 6)
    assert torch.equal(out.codes, expected)
    assert torch.allclose(out.z_q, q.codebook.detach()[out.codes].permute(0, 3, 1, 2), atol=1e-6)


def test_straight_through_copies_the_decoder_gradient_to_the_encoder():
    torch.manual_seed(1)
    q = make(update="loss").eval()
    z_e = torch.randn(2, 3, 4, 4, requires_grad=True)
    upstream = torch.randn(2, 3, 4, 4)
    (q(z_e).z_q * upstream).sum().backward()
    # d z_q / d z_e is the identity under z_e + sg(z_q - z_e); the codebook gets nothing.
    assert torch.allclose(z_e.grad, upstream)
    assert q.codebook.grad is None or torch.count_nonzero(q.codebook.grad) == 0


def test_commitment_and_codebook_gradients_match_their_closed_forms():
    torch.manual_seed(2)
    q = make(update="loss").eval()
    z_e = torch.randn(2, 3, 2, 2, requires_grad=True)
    out = q(z_e)
    z_q = q.codebook.detach()[out.codes].permute(0, 3, 1, 2)
    # commitment ||z_e - sg(z_q)||^2 moves only the encoder: gradient 2 (z_e - z_q).
    (g_ze,) = torch.autograd.grad(out.commitment.sum(), z_e, retain_graph=True)
    assert torch.allclose(g_ze, 2 * (z_e.detach() - z_q), atol=1e-5)
    # codebook ||sg(z_e) - z_q||^2 moves only the codes: 2 (e_k - z_e) summed over its vectors.
    g_book, g_ze2 = torch.autograd.grad(out.codebook.sum(), [q.codebook, z_e], allow_unused=True)
    assert g_ze2 is None
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    codes = out.codes.flatten()
    expected = torch.zeros_like(q.codebook).index_add_(
        0, codes, 2 * (q.codebook.detach()[codes] - flat)
    )
    assert torch.allclose(g_book, expected, atol=1e-5)
    # the per-example terms are squared distances summed over positions
    assert torch.allclose(out.commitment, (z_e.detach() - z_q).pow(2).sum((1, 2, 3)), atol=1e-5)


def test_ema_moves_a_code_to_the_mean_of_its_vectors():
    torch.manual_seed(3)
    q = make(num_codes=2, code_dim=2, ema_decay=1e-6, ema_epsilon=1e-9).train()
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vectors = torch.tensor([[1.0, 2.0], [3.0, 0.0], [9.0, 9.0], [11.0, 13.0]])
    q(vectors.t().reshape(1, 2, 4, 1))  # z_e[0, :, i, 0] is vectors[i]
    assert torch.allclose(q.codebook[0], torch.tensor([2.0, 1.0]), atol=1e-4)
    assert torch.allclose(q.codebook[1], torch.tensor([10.0, 11.0]), atol=1e-4)


def test_ema_with_paper_decay_converges_to_the_mean():
    torch.manual_seed(4)
    q = make(num_codes=2, code_dim=2, ema_decay=0.99).train()
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    q.ema_sum.copy_(q.codebook)
    z_e = torch.tensor([[1.0, 2.0], [3.0, 0.0], [9.0, 9.0], [11.0, 13.0]]).t().reshape(1, 2, 4, 1)
    for _ in range(1500):
        q(z_e)
    assert torch.allclose(q.codebook, torch.tensor([[2.0, 1.0], [10.0, 11.0]]), atol=1e-3)


def test_no_codebook_updates_in_eval_mode():
    q = make(num_codes=4, code_dim=2, dead_code_steps=1).eval()
    before = q.codebook.clone()
    q(torch.randn(3, 2, 4, 4))
    assert torch.equal(q.codebook, before)
    assert torch.count_nonzero(q.steps_unused) == 0


def test_a_dead_code_is_revived_at_an_encoder_output():
    torch.manual_seed(5)
    q = make(num_codes=3, code_dim=2, update="loss", dead_code_steps=3).train()
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [1000.0, 1000.0]]))
    z_e = torch.rand(2, 2, 3, 3)  # all near codes 0 and 1; code 2 is never chosen
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 2)
    for step in range(1, 3):
        q(z_e)
        assert q.steps_unused[2] == step
        assert q.codebook[2, 0] == 1000.0
    q(z_e)
    revived = q.codebook[2].detach()
    assert (flat - revived).abs().sum(1).min() < 1e-6  # it now sits on one of the vectors
    assert q.steps_unused[2] == 0
    assert q(z_e).codes.eq(2).any()  # and it is in use


def test_kmeans_finds_well_separated_clusters():
    gen = torch.Generator().manual_seed(6)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    vectors = (centres.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2, generator=gen))[
        torch.randperm(200, generator=gen)
    ]
    found = kmeans(vectors, 4, iters=5, generator=gen)
    # every true centre has a found centre within the noise
    assert torch.cdist(centres, found).min(1).values.max() < 0.1


def test_first_training_batch_initialises_the_codebook_by_kmeans():
    torch.manual_seed(7)
    q = make(num_codes=4, code_dim=2, kmeans_init=True).train()
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    flat = centres.repeat(16, 1) + 0.05 * torch.randn(64, 2)
    q(flat.t().reshape(1, 2, 8, 8))
    assert bool(q.initialised)
    assert torch.cdist(centres, q.codebook).min(1).values.max() < 0.1
    snapshot = q.codebook.clone()
    q.eval()
    q(torch.randn(1, 2, 8, 8) * 100)  # no re-initialisation later, nor in eval mode
    assert torch.equal(q.codebook, snapshot)


def test_usage_and_perplexity_against_categorical_entropy():
    counts = torch.tensor([5, 0, 3, 2, 0, 10])
    usage, perplexity = usage_and_perplexity(counts)
    entropy = torch.distributions.Categorical(probs=counts / counts.sum()).entropy()
    assert usage == pytest.approx(4 / 6)
    assert perplexity == pytest.approx(math.exp(entropy.item()), rel=1e-6)
    assert usage_and_perplexity(torch.full((7,), 3)) == pytest.approx((1.0, 7.0))


def test_nearest_codes_handles_ties_and_shapes():
    book = torch.tensor([[0.0], [2.0]])
    assert nearest_codes(torch.tensor([[0.9], [1.1], [5.0]]), book).tolist() == [0, 1, 1]
