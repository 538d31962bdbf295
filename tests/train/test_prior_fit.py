import math

import pytest
import torch

from vaekit.models.code_prior import CodePrior
from vaekit.train.prior_fit import PriorEpoch, code_nll, fit_prior

K, H, W = 8, 4, 4
UNIFORM_NLL = H * W * math.log(K)  # nats per map of a prior that knows nothing
TRUE_NLL = H * math.log(K)  # entropy of row_maps: only each row's first code is random


def row_maps(n: int, seed: int) -> torch.Tensor:
    """Code maps whose every row repeats one random code: [n, H, W]."""
    first = torch.randint(0, K, (n, H, 1), generator=torch.Generator().manual_seed(seed))
    return first.expand(n, H, W).clone()


def make_prior(seed: int = 0) -> CodePrior:
    torch.manual_seed(seed)
    return CodePrior(K, H, W, dim=32, layers=2, heads=2)


def fit(prior: CodePrior, **overrides) -> list[PriorEpoch]:
    args = {"epochs": 4, "batch_size": 32, "lr": 3e-3, "seed": 0, "progress": False} | overrides
    return fit_prior(prior, row_maps(512, 0), row_maps(128, 1), **args)


def test_fit_learns_the_structure_of_the_codes():
    prior = make_prior()
    val = row_maps(128, 1)
    untrained = code_nll(prior, val).mean().item()
    seen: list[PriorEpoch] = []
    history = fit(prior, on_epoch=seen.append)
    assert seen == history and [r.epoch for r in history] == [1, 2, 3, 4]
    last = history[-1]
    assert last.val_nll < 0.5 * UNIFORM_NLL
    assert last.val_nll < untrained - 10
    assert last.val_nll > TRUE_NLL - 0.5  # no model beats the entropy by much on 128 maps
    assert last.train_nll < history[0].train_nll
    assert all(r.seconds > 0 for r in history)
    assert last.val_nll == pytest.approx(code_nll(prior, val).mean().item())


def test_code_nll_is_minus_log_prob_in_float64():
    prior = make_prior()
    codes = row_maps(10, 2)
    nll = code_nll(prior, codes, batch_size=3)
    assert nll.shape == (10,) and nll.dtype == torch.float64
    expected = -prior.log_prob(codes).double().detach()
    torch.testing.assert_close(nll, expected, rtol=1e-5, atol=1e-5)  # float32 sums of 16 terms


def test_fit_is_reproducible_for_one_seed():
    a = fit(make_prior(), epochs=2)
    b = fit(make_prior(), epochs=2)
    assert [r.val_nll for r in a] == [r.val_nll for r in b]
    assert [r.train_nll for r in a] == [r.train_nll for r in b]
    c = fit(make_prior(), epochs=2, seed=1, progress=True)  # the bar changes nothing
    assert [r.val_nll for r in a] != [r.val_nll for r in c]


@pytest.mark.parametrize(
    ("train", "match"),
    [
        (torch.zeros(0, H, W, dtype=torch.long), "no code maps"),
        (torch.full((4, H, W), K), r"\[0, 8\)"),
        (torch.full((4, H, W), -1), r"\[0, 8\)"),
        (torch.zeros(4, H, W + 1, dtype=torch.long), "shape"),
        (torch.zeros(4, H * W, dtype=torch.long), "shape"),
        (torch.zeros(4, H, W), "integer"),
    ],
)
def test_bad_codes_raise_value_error(train, match):
    with pytest.raises(ValueError, match=match):
        fit_prior(make_prior(), train, row_maps(4, 1), epochs=1, batch_size=2, lr=1e-3, seed=0)
    with pytest.raises(ValueError, match=match):
        code_nll(make_prior(), train)


def test_bad_validation_codes_raise_value_error():
    with pytest.raises(ValueError, match="val_codes"):
        fit_prior(
            make_prior(),
            row_maps(4, 0),
            row_maps(4, 1)[:, :2],
            epochs=1,
            batch_size=2,
            lr=1e-3,
            seed=0,
        )
