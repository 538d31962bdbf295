"""Residual conv VAE nets: the conv nets' shapes on 28x28 and 32x32, gradients everywhere."""

import pytest
import torch

from vaekit.nets.residual import PreActBlock, ResidualDecoder, ResidualEncoder


@pytest.mark.parametrize(
    ("shape", "channels"),
    [((1, 28, 28), [16, 32]), ((3, 32, 32), [8, 16, 32])],
)
def test_round_trip_shapes(shape, channels):
    torch.manual_seed(0)
    enc = ResidualEncoder(shape, channels, out_features=10, blocks=2)
    dec = ResidualDecoder(5, channels, out_shape=(2 * shape[0], *shape[1:]), blocks=2)
    assert enc(torch.rand(3, *shape)).shape == (3, 10)
    z = torch.randn(4, 3, 5)
    out = dec(z)
    assert out.shape == (4, 3, 2 * shape[0], *shape[1:])
    torch.testing.assert_close(out[2], dec(z[2]))


def test_block_keeps_the_shape_and_adds_to_its_input():
    torch.manual_seed(0)
    block = PreActBlock(6, act="silu")
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(block(x), x + block.body(x))


def test_sides_that_do_not_halve_are_rejected():
    with pytest.raises(ValueError, match="divisible by 8"):
        ResidualEncoder((1, 28, 28), [8, 16, 32], 4)
    with pytest.raises(ValueError, match="divisible by 8"):
        ResidualDecoder(4, [8, 16, 32], (1, 28, 28))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_gradients_reach_every_parameter(batchnorm):
    torch.manual_seed(0)
    enc = ResidualEncoder((1, 28, 28), [8, 16], 8, batchnorm=batchnorm, blocks=1)
    dec = ResidualDecoder(4, [8, 16], (1, 28, 28), batchnorm=batchnorm, blocks=1)
    mean, _ = enc(torch.rand(4, 1, 28, 28)).chunk(2, dim=-1)
    dec(mean).square().mean().backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
