"""Convolutional encoder and decoder for square images whose side halves cleanly per layer.

Each encoder layer is a 4x4 convolution with stride 2 and padding 1, which halves an even
side exactly; the decoder mirrors it with 4x4 transposed convolutions. A 28x28 image takes
at most two layers (28 -> 14 -> 7), 32x32 up to five, 64x64 up to six.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from vaekit.nets.layers import activation


def _norm(channels: int, batchnorm: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels)] if batchnorm else []


class ConvEncoder(nn.Module):
    """Strided convolutions, then one linear layer to ``out_features`` numbers."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        channels: list[int],
        out_features: int,
        act: str = "relu",
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        layers: list[nn.Module] = []
        for c_out in channels:
            layers += [nn.Conv2d(c, c_out, 4, 2, 1), *_norm(c_out, batchnorm), activation(act)]
            c, h, w = c_out, h // 2, w // 2
        self.body = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(c * h * w, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ConvDecoder(nn.Module):
    """One linear layer to a small feature map, then transposed convolutions up to the image."""

    def __init__(
        self,
        latent_dim: int,
        channels: list[int],
        out_shape: tuple[int, int, int],
        act: str = "relu",
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        c_out, h, w = out_shape
        factor = 2 ** len(channels)
        self.start = (channels[-1], h // factor, w // factor)
        self.head = nn.Sequential(
            nn.Linear(latent_dim, channels[-1] * (h // factor) * (w // factor)), activation(act)
        )
        layers: list[nn.Module] = []
        widths = list(reversed(channels))
        for c_in, c_next in pairwise(widths):
            layers += [
                nn.ConvTranspose2d(c_in, c_next, 4, 2, 1),
                *_norm(c_next, batchnorm),
                activation(act),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], c_out, 4, 2, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, *self.start)
        out = self.body(h)
        return out.reshape(*lead, *out.shape[1:])
