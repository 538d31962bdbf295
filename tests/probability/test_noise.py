"""Noise for a global batch, split by rows: the processes together draw what one process draws."""

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vaekit.data import to_model_input
from vaekit.probability import DiagonalGaussian, noise
from vaekit.probability.noise import RowShare, row_share, rows_of
from vaekit.train.loop import steps_in_epoch


@given(total=st.integers(1, 300), world=st.integers(1, 8))
def test_rows_of_partitions_the_batch_in_order(total, world):
    shares = [rows_of(total, r, world) for r in range(world)]
    assert shares[0].start == 0 and shares[-1].stop == total
    assert all(a.stop == b.start for a, b in itertools.pairwise(shares))
    sizes = [s.rows for s in shares]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("world", [2, 3])
def test_shares_of_a_draw_are_the_rows_of_the_global_draw(world):
    total, shape = 10, (5, 7)
    whole = torch.randn((total, *shape), generator=torch.Generator().manual_seed(3))
    parts = []
    for rank in range(world):
        share = rows_of(total, rank, world)
        with row_share(share):
            parts.append(
                noise.randn((share.rows, *shape), generator=torch.Generator().manual_seed(3))
            )
    assert torch.equal(torch.cat(parts), whole)


def test_posterior_samples_with_a_sample_prefix_split_along_the_batch_dim():
    mean, log_var = torch.randn(6, 4), torch.randn(6, 4)
    torch.manual_seed(5)
    whole = DiagonalGaussian(mean, log_var).rsample((3,))  # [k, B, D]
    parts = []
    for share in (RowShare(0, 2, 6), RowShare(2, 6, 6)):
        torch.manual_seed(5)
        with row_share(share):
            q = DiagonalGaussian(mean[share.start : share.stop], log_var[share.start : share.stop])
            parts.append(q.rsample((3,)))
    assert torch.allclose(torch.cat(parts, dim=1), whole)


def test_dynamic_binarization_of_a_share_matches_the_global_batch():
    images = torch.randint(0, 256, (9, 1, 4, 4), dtype=torch.uint8)
    whole = to_model_input(
        images, binarize="dynamic", dequantize=False, generator=torch.Generator().manual_seed(1)
    )
    share = rows_of(9, 1, 2)
    with row_share(share):
        part = to_model_input(
            images[share.start : share.stop],
            binarize="dynamic",
            dequantize=False,
            generator=torch.Generator().manual_seed(1),
        )
    assert torch.equal(part, whole[share.start : share.stop])


def test_draws_of_other_shapes_are_left_alone_inside_a_share():
    with row_share(RowShare(0, 2, 6)):
        assert noise.randn((5, 3)).shape == (5, 3)  # not the share's rows: a plain draw
    assert noise.rand((2, 3)).shape == (2, 3)


def test_a_share_outside_the_batch_is_refused():
    with pytest.raises(ValueError, match="start <= stop <= total"):
        RowShare(3, 2, 6)


@pytest.mark.parametrize(
    ("n", "batch", "world", "expected"),
    [(100, 10, 1, 10), (101, 10, 1, 11), (101, 10, 2, 10), (102, 10, 2, 11), (5, 10, 2, 1)],
)
def test_steps_in_epoch_leave_out_a_last_batch_too_small_to_split(n, batch, world, expected):
    assert steps_in_epoch(n, batch, world) == expected
