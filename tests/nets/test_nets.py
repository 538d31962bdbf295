import pytest
import torch

from vaekit.nets.conv import ConvDecoder, ConvEncoder
from vaekit.nets.mlp import MLPDecoder, MLPEncoder


@pytest.mark.parametrize(
    ("shape", "channels"),
    [
        ((1, 28, 28), [32, 64]),
        ((3, 32, 32), [16, 32, 64]),
        ((1, 64, 64), [8, 16, 32, 64]),
    ],
)
def test_conv_round_trip_shapes(shape, channels):
    enc = ConvEncoder(shape, channels, out_features=10)
    dec = ConvDecoder(5, channels, out_shape=(shape[0] * 2, *shape[1:]))
    x = torch.rand(3, *shape)
    assert enc(x).shape == (3, 10)
    out = dec(torch.randn(3, 5))
    assert out.shape == (3, shape[0] * 2, *shape[1:])


@pytest.mark.parametrize("dec_cls,sizes", [(MLPDecoder, [16, 32]), (ConvDecoder, [8, 16])])
def test_decoders_accept_leading_sample_dims(dec_cls, sizes):
    torch.manual_seed(0)
    dec = dec_cls(4, sizes, (1, 28, 28))
    z = torch.randn(5, 3, 4)
    out = dec(z)
    assert out.shape == (5, 3, 1, 28, 28)
    # Same numbers as decoding each sample separately.
    assert torch.allclose(out[2], dec(z[2]), atol=1e-6)


def test_mlp_encoder_layer_sizes():
    enc = MLPEncoder((1, 28, 28), [512, 256], out_features=64)
    linears = [m for m in enc.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 512), (512, 256), (256, 64)]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in enc.modules())
    bn = MLPEncoder((1, 28, 28), [512, 256], out_features=64, batchnorm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in bn.modules()) == 2
