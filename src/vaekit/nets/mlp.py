"""Fully connected encoder and decoder: tensors in, tensors out, no probability."""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from vaekit.nets.layers import activation


def _stack(sizes: list[int], act: str, batchnorm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in pairwise(sizes):
        layers.append(nn.Linear(n_in, n_out))
        if batchnorm:
            layers.append(nn.BatchNorm1d(n_out))
        layers.append(activation(act))
    return layers


class MLPEncoder(nn.Module):
    """Flatten an image and map it through hidden layers to ``out_features`` numbers."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden: list[int],
        out_features: int,
        act: str = "relu",
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        sizes = [math.prod(image_shape), *hidden]
        self.body = nn.Sequential(nn.Flatten(), *_stack(sizes, act, batchnorm))
        self.head = nn.Linear(sizes[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MLPDecoder(nn.Module):
    """Map a latent vector through hidden layers to an image-shaped tensor of parameters."""

    def __init__(
        self,
        latent_dim: int,
        hidden: list[int],
        out_shape: tuple[int, int, int],
        act: str = "relu",
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        sizes = [latent_dim, *hidden]
        self.out_shape = tuple(out_shape)
        self.body = nn.Sequential(*_stack(sizes, act, batchnorm))
        self.head = nn.Linear(sizes[-1], math.prod(out_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.body(z.reshape(-1, z.shape[-1]))
        return self.head(h).reshape(*lead, *self.out_shape)
