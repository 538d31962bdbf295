"""Gated MLP nets: the layer is its formula, shapes match the plain MLP's, gradients flow."""

import pytest
import torch

from vaekit.nets.gated import GatedLinear, GatedMLPDecoder, GatedMLPEncoder
from vaekit.nets.mlp import MLPEncoder


def test_gated_layer_equals_its_formula():
    torch.manual_seed(0)
    layer = GatedLinear(3, 2)
    x = torch.randn(4, 3)
    w, b = layer.linear.weight.detach(), layer.linear.bias.detach()
    expected = torch.empty(4, 2)
    for i in range(4):
        for j in range(2):
            value = sum(w[j, k] * x[i, k] for k in range(3)) + b[j]
            gate = sum(w[2 + j, k] * x[i, k] for k in range(3)) + b[2 + j]
            expected[i, j] = value / (1 + torch.exp(-gate))
    torch.testing.assert_close(layer(x), expected)


def test_gated_layer_with_an_activation_applies_it_to_the_value_half_only():
    torch.manual_seed(0)
    layer = GatedLinear(3, 2, act="relu")
    x = torch.randn(5, 3)
    value, gate = layer.linear(x).chunk(2, dim=-1)
    torch.testing.assert_close(layer(x), value.clamp_min(0) * torch.sigmoid(gate))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_shapes_match_the_plain_mlp_and_accept_leading_sample_dims(shape):
    torch.manual_seed(0)
    enc = GatedMLPEncoder(shape, [64, 32], out_features=10)
    x = torch.rand(3, *shape)
    assert enc(x).shape == MLPEncoder(shape, [64, 32], 10)(x).shape == (3, 10)
    assert enc.body(x).shape == (3, 32)  # the last hidden layer, e.g. an IAF context
    dec = GatedMLPDecoder(5, [32, 64], out_shape=(2 * shape[0], *shape[1:]))
    z = torch.randn(4, 3, 5)
    out = dec(z)
    assert out.shape == (4, 3, 2 * shape[0], *shape[1:])
    torch.testing.assert_close(out[1], dec(z[1]))


@pytest.mark.parametrize("batchnorm", [False, True])
def test_gradients_reach_every_parameter(batchnorm):
    torch.manual_seed(0)
    enc = GatedMLPEncoder((1, 28, 28), [32, 16], 8, act="elu", batchnorm=batchnorm)
    dec = GatedMLPDecoder(4, [16, 32], (1, 28, 28), act="elu", batchnorm=batchnorm)
    mean, _ = enc(torch.rand(6, 1, 28, 28)).chunk(2, dim=-1)
    dec(mean).square().mean().backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
