"""Residual convolutional encoder and decoder that keep a spatial map (the VQ-VAE's nets).

The shape of van den Oord et al. (2017), section 4.1: two 4x4 stride-2 convolutions
(downsampling by 4), a 3x3 convolution, residual blocks ReLU-3x3-ReLU-1x1 added to their
input, and a 1x1 convolution to the D channels of the latent map. The decoder mirrors it
with 4x4 stride-2 transposed convolutions. 28x28 images give a 7x7 map, 32x32 an 8x8 one.
"""

from __future__ import annotations

import torch
from torch import nn

DOWNSAMPLE = 4


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): a block that starts close to the identity."""

    def __init__(self, channels: int, inner: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, inner, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(inner, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _blocks(channels: int, inner: int, count: int) -> list[nn.Module]:
    return [ResidualBlock(channels, inner) for _ in range(count)]


class ResidualConvEncoder(nn.Module):
    """[B, C, H, W] images -> [B, out_channels, H/4, W/4] feature map."""

    def __init__(
        self, in_channels: int, hidden: int, blocks: int, inner: int, out_channels: int
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, hidden // 2, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(hidden // 2, hidden, 4, 2, 1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            *_blocks(hidden, inner, blocks),
            nn.ReLU(),
            nn.Conv2d(hidden, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualConvDecoder(nn.Module):
    """[B, in_channels, h, w] map -> [B, out_channels, 4h, 4w] likelihood parameters."""

    def __init__(
        self, in_channels: int, hidden: int, blocks: int, inner: int, out_channels: int
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 3, padding=1),
            *_blocks(hidden, inner, blocks),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden // 2, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden // 2, out_channels, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)
