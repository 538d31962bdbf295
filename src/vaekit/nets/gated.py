"""Fully connected encoder and decoder built from gated linear units.

A gated layer computes h = (W1 x + b1) * sigmoid(W2 x + b2) (Dauphin et al. 2017, "Language
Modeling with Gated Convolutional Networks", eq. 1): the sigmoid gate lets each unit learn how
much of its input passes. Tomczak & Welling (2018, "VAE with a VampPrior") build their
fully connected encoders and decoders from such layers (two of 300 units, no activation on
the value half), and van den Berg et al. (2018, "Sylvester Normalizing Flows") their gated
networks likewise.

The classes mirror :mod:`vaekit.nets.mlp` (same arguments, same shapes), so a model picks
either by name. Both keep MLPEncoder's split into ``body`` (to the last hidden layer) and
``head`` (one linear layer).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from vaekit.nets.layers import activation


class GatedLinear(nn.Module):
    """act(W1 x + b1) * sigmoid(W2 x + b2); ``act=None`` is the published (linear) form.

    Both halves come from one ``nn.Linear`` to 2 * out_features (one matrix product, not two):
    rows [:out] are W1, rows [out:] are W2. With ``batchnorm`` the 2 * out pre-activations are
    normalised before the gate, as MLPEncoder normalises before its activation.
    """

    def __init__(
        self, in_features: int, out_features: int, act: str | None = None, batchnorm: bool = False
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 2 * out_features)
        self.norm = nn.BatchNorm1d(2 * out_features) if batchnorm else nn.Identity()
        self.act = activation(act) if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.norm(self.linear(x)).chunk(2, dim=-1)
        return self.act(value) * torch.sigmoid(gate)


def gated_stack(sizes: list[int], act: str | None, batchnorm: bool) -> list[nn.Module]:
    """Gated layers sizes[0] -> sizes[1] -> ... -> sizes[-1], one per consecutive pair."""
    return [GatedLinear(n_in, n_out, act, batchnorm) for n_in, n_out in pairwise(sizes)]


class GatedMLPEncoder(nn.Module):
    """Flatten an image, pass it through gated layers, then a linear map to ``out_features``."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        hidden: list[int],
        out_features: int,
        act: str | None = None,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        sizes = [math.prod(image_shape), *hidden]
        self.body = nn.Sequential(nn.Flatten(), *gated_stack(sizes, act, batchnorm))
        self.head = nn.Linear(sizes[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class GatedMLPDecoder(nn.Module):
    """Map a latent vector [..., D] through gated layers to image-shaped parameters."""

    def __init__(
        self,
        latent_dim: int,
        hidden: list[int],
        out_shape: tuple[int, int, int],
        act: str | None = None,
        batchnorm: bool = False,
    ) -> None:
        super().__init__()
        sizes = [latent_dim, *hidden]
        self.out_shape = tuple(out_shape)
        self.body = nn.Sequential(*gated_stack(sizes, act, batchnorm))
        self.head = nn.Linear(sizes[-1], math.prod(out_shape))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.body(z.reshape(-1, z.shape[-1]))
        return self.head(h).reshape(*lead, *self.out_shape)
