"""Residual convolutional encoder and decoder for the Gaussian VAE (vector latents).

The layout of :mod:`vaekit.nets.conv` (4x4 stride-2 convolutions that halve the side, a
linear layer to or from the vector), with residual blocks at every resolution. Each block is
the pre-activation form x + conv(act(norm(conv(act(norm(x)))))) of He et al. (2016, "Identity
Mappings in Deep Residual Networks", fig. 4e): the identity path carries the signal and its
gradient unchanged, so depth adds capacity without making training harder. The VQ-VAE's
:class:`vaekit.nets.resnet.ResidualBlock` is fixed to ReLU, has no normalisation and keeps a
spatial latent map; these nets take the VAE's activation and batchnorm options instead.

As for ConvEncoder, a 28x28 image takes at most two stride-2 stages, 32x32 up to five.
"""

from __future__ import annotations

import torch
from torch import nn

from vaekit.nets.layers import activation


def _pre(channels: int, act: str, batchnorm: bool) -> list[nn.Module]:
    norm = [nn.BatchNorm2d(channels)] if batchnorm else []
    return [*norm, activation(act)]


class PreActBlock(nn.Module):
    """x + conv3x3(act(norm(conv3x3(act(norm(x)))))), the same shape in and out."""

    def __init__(self, channels: int, act: str = "relu", batchnorm: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_pre(channels, act, batchnorm),
            nn.Conv2d(channels, channels, 3, padding=1),
            *_pre(channels, act, batchnorm),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _blocks(channels: int, count: int, act: str, batchnorm: bool) -> list[nn.Module]:
    return [PreActBlock(channels, act, batchnorm) for _ in range(count)]


def _check_side(shape: tuple[int, int, int], stages: int) -> None:
    factor = 2**stages
    if shape[1] % factor or shape[2] % factor:
        raise ValueError(
            f"{stages} stride-2 stages need sides divisible by {factor}, got {shape[1:]}"
        )


class ResidualEncoder(nn.Module):
    """Per width in ``channels``: a stride-2 convolution, then ``blocks`` residual blocks;
    then a linear layer to ``out_features``. ``body`` ends at the flattened features."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: list[int],
        out_features: int,
        act: str = "relu",
        batchnorm: bool = False,
        blocks: int = 1,
    ) -> None:
        super().__init__()
        _check_side(image_shape, len(channels))
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for i, c_out in enumerate(channels):
            # The image itself is not activated; later stages see the pre-activated stream.
            pre = _pre(c, act, batchnorm) if i else []
            layers += [*pre, nn.Conv2d(c, c_out, 4, 2, 1), *_blocks(c_out, blocks, act, batchnorm)]
            c, h, w = c_out, h // 2, w // 2
        self.body = nn.Sequential(*layers, *_pre(c, act, batchnorm), nn.Flatten())
        self.head = nn.Linear(c * h * w, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ResidualDecoder(nn.Module):
    """A linear layer to a small map, then per width (reversed): ``blocks`` residual blocks
    and a stride-2 transposed convolution, the last one to the ``out_shape`` channels."""

    def __init__(
        self,
        latent_dim: int,
        channels: list[int],
        out_shape: tuple[int, int, int],
        act: str = "relu",
        batchnorm: bool = False,
        blocks: int = 1,
    ) -> None:
        super().__init__()
        _check_side(out_shape, len(channels))
        c_out, h, w = out_shape
        factor = 2 ** len(channels)
        self.start = (channels[-1], h // factor, w // factor)
        self.head = nn.Linear(latent_dim, channels[-1] * (h // factor) * (w // factor))
        widths = list(reversed(channels))
        layers: list[nn.Module] = []
        for c_in, c_next in zip(widths, [*widths[1:], c_out], strict=True):
            layers += [
                *_blocks(c_in, blocks, act, batchnorm),
                *_pre(c_in, act, batchnorm),
                nn.ConvTranspose2d(c_in, c_next, 4, 2, 1),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        out = self.body(h)
        return out.reshape(*lead, *out.shape[1:])
