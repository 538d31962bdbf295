import itertools

import pytest
import torch

from vaekit.models.code_prior import CodePrior


def make_prior(num_codes: int, height: int, width: int, seed: int = 0) -> CodePrior:
    torch.manual_seed(seed)
    return CodePrior(num_codes, height, width, dim=32, layers=2, heads=2)


def all_maps(num_codes: int, height: int, width: int) -> torch.Tensor:
    """Every code map of the given size, [K^(H*W), H, W], in lexicographic raster order."""
    seqs = itertools.product(range(num_codes), repeat=height * width)
    return torch.tensor(list(seqs)).reshape(-1, height, width)


@pytest.mark.parametrize("train_mode", [True, False])
def test_logits_at_t_ignore_codes_at_and_after_t(train_mode):
    prior = make_prior(5, 3, 3).train(train_mode)
    codes = torch.randint(0, 5, (4, 3, 3), generator=torch.Generator().manual_seed(1))
    with torch.set_grad_enabled(train_mode):  # eval + no_grad takes torch's fast path
        base = prior.logits(codes)
        assert base.shape == (4, 9, 5)
        for t in range(9):
            changed = codes.clone().reshape(4, 9)
            changed[:, t] = (changed[:, t] + 1) % 5
            logits = prior.logits(changed.reshape(4, 3, 3))
            torch.testing.assert_close(logits[:, : t + 1], base[:, : t + 1])
            if t < 8:
                assert (logits[:, t + 1 :] - base[:, t + 1 :]).abs().max() > 1e-4


def test_probabilities_of_all_maps_sum_to_one():
    prior = make_prior(3, 2, 2)
    maps = all_maps(3, 2, 2)
    assert maps.shape == (81, 2, 2)
    log_p = prior.log_prob(maps)
    assert log_p.shape == (81,) and log_p.dtype == torch.float32
    assert log_p.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_log_prob_matches_categorical_on_logits():
    prior = make_prior(6, 2, 3)
    codes = torch.randint(0, 6, (7, 2, 3), generator=torch.Generator().manual_seed(2))
    expected = (
        torch.distributions.Categorical(logits=prior.logits(codes))
        .log_prob(codes.reshape(7, 6))
        .sum(-1)
    )
    torch.testing.assert_close(prior.log_prob(codes), expected)


def test_wrong_code_shape_is_rejected():
    prior = make_prior(4, 2, 2)
    with pytest.raises(ValueError, match="shape"):
        prior.log_prob(torch.zeros(3, 2, 3, dtype=torch.long))


def test_sample_shape_range_and_seed():
    prior = make_prior(5, 3, 4).eval()
    a = prior.sample(6, generator=torch.Generator().manual_seed(3))
    b = prior.sample(6, generator=torch.Generator().manual_seed(3))
    c = prior.sample(6, generator=torch.Generator().manual_seed(4))
    assert a.shape == (6, 3, 4) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() < 5
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_frequencies_match_log_prob():
    prior = make_prior(2, 1, 2, seed=5).eval()
    n = 4000
    samples = prior.sample(n, generator=torch.Generator().manual_seed(6))
    maps = all_maps(2, 1, 2)
    probs = prior.log_prob(maps).double().exp()
    assert probs.min() > 0.05  # every cell is visited often enough for the normal approximation
    assert (probs.max() - probs.min()).item() > 0.01  # the test would not notice a uniform draw
    index = (samples.reshape(n, 2) * torch.tensor([2, 1])).sum(-1)  # raster order as in all_maps
    counts = torch.bincount(index, minlength=4).double()
    z = (counts - n * probs) / (n * probs * (1 - probs)).sqrt()
    assert z.abs().max().item() < 4.0, (counts / n, probs)


def test_cold_sampling_gives_the_greedy_map():
    prior = make_prior(6, 2, 3, seed=7).eval()
    greedy = torch.zeros(1, 6, dtype=torch.long)
    with torch.no_grad():
        for t in range(6):
            greedy[0, t] = prior.logits(greedy.reshape(1, 2, 3))[0, t].argmax()
    samples = prior.sample(5, temperature=1e-4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(samples, greedy.reshape(1, 2, 3).expand(5, 2, 3))


@pytest.mark.parametrize(("n", "temperature"), [(0, 1.0), (2, 0.0), (2, -1.0)])
def test_sample_rejects_bad_arguments(n, temperature):
    with pytest.raises(ValueError):
        make_prior(3, 2, 2).sample(n, temperature=temperature)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_device_of_its_parameters():
    prior = make_prior(5, 3, 3).cuda().eval()
    samples = prior.sample(4, generator=torch.Generator("cuda").manual_seed(0))
    assert samples.device.type == "cuda" and samples.shape == (4, 3, 3)
    assert prior.log_prob(samples).device.type == "cuda"
