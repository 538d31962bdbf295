"""The benchmark's networks, in plain torch so that every peer (vaekit, a tutorial loop,
pythae in its own virtual environment) trains exactly the same layer shapes.

``mlp``: encoder 784-512-256-(2 x latent), mirrored decoder, ReLU.
``gated_mlp``: encoder 784-300-300-(2 x latent) of gated units h = a * sigmoid(b), mirrored
decoder (the nets of vaekit's fmnist-* quality recipes, ``model.arch = "gated_mlp"``).
``conv``: encoder Conv(32, 3, s2)-Conv(64, 3, s2)-Linear(2 x latent); decoder
Linear(7*7*32)-ConvT(64, 3, s2)-ConvT(32, 3, s2)-ConvT(1, 3, s1), ReLU; 3x3 kernels with
padding 1 (and output_padding 1 on the stride-2 transposed convolutions), so 28 -> 14 -> 7
and back. Decoders return logits [..., 1, 28, 28]; encoders return [B, 2 * latent].
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

IMAGE = (1, 28, 28)
MLP_HIDDEN = (512, 256)
GATED_HIDDEN = (300, 300)


class MLPEncoder(nn.Module):
    """784-512-256-(2 x latent)."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 512),
            nn.ReLU(),
            nn.Linear(512, 256),
            nn.ReLU(),
        )
        self.head = nn.Linear(256, 2 * latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class MLPDecoder(nn.Module):
    """latent-256-512-784 logits, any leading dims."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(latent, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU())
        self.head = nn.Linear(512, 784)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        return self.head(self.body(z.reshape(-1, z.shape[-1]))).reshape(*lead, *IMAGE)


class ConvEncoder(nn.Module):
    """Conv(32, 3, s2)-Conv(64, 3, s2)-Linear(2 x latent), ReLU: 28 -> 14 -> 7."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Linear(64 * 7 * 7, 2 * latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ConvDecoder(nn.Module):
    """Linear(7*7*32)-ConvT(64, 3, s2)-ConvT(32, 3, s2)-ConvT(1, 3, s1), ReLU: 7 -> 14 -> 28."""

    def __init__(self, latent: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(latent, 32 * 7 * 7), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose2d(32, 64, 3, 2, 1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 1, 3, 1, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.head(z.reshape(-1, z.shape[-1])).reshape(-1, 32, 7, 7)
        out = self.body(h)
        return out.reshape(*lead, *out.shape[1:])


class Gate(nn.Module):
    """(W1 x + b1) * sigmoid(W2 x + b2), both halves from one Linear(n_in, 2 n_out)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.linear(x).chunk(2, dim=-1)
        return value * torch.sigmoid(gate)


class GatedEncoder(nn.Module):
    """784-300-300-(2 x latent) of gated units: the nets of vaekit's fmnist-* recipes."""

    def __init__(self, latent: int, hidden: tuple[int, ...] = GATED_HIDDEN) -> None:
        super().__init__()
        sizes = (784, *hidden)
        self.body = nn.Sequential(nn.Flatten(), *(Gate(a, b) for a, b in pairwise(sizes)))
        self.head = nn.Linear(sizes[-1], 2 * latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class GatedDecoder(nn.Module):
    """latent-300-300-784 logits of gated units, any leading dims."""

    def __init__(self, latent: int, hidden: tuple[int, ...] = GATED_HIDDEN) -> None:
        super().__init__()
        sizes = (latent, *hidden[::-1])
        self.body = nn.Sequential(*(Gate(a, b) for a, b in pairwise(sizes)))
        self.head = nn.Linear(sizes[-1], 784)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        return self.head(self.body(z.reshape(-1, z.shape[-1]))).reshape(*lead, *IMAGE)


NETS = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
    "gated_mlp": (GatedEncoder, GatedDecoder),
}


def make_nets(arch: str, latent: int) -> tuple[nn.Module, nn.Module]:
    """A fresh (encoder, decoder) pair of the named architecture."""
    enc, dec = NETS[arch]
    return enc(latent), dec(latent)
