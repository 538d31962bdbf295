"""Vector quantization: the VQ-VAE bottleneck that maps each encoder vector to its nearest code.

van den Oord et al. (2017), "Neural Discrete Representation Learning": the encoder output
z_e(x) [B, D, H, W] is replaced at each position by the nearest of K codebook vectors e_k.
Gradients pass the non-differentiable lookup by the straight-through estimator
z_e + sg(z_q - z_e) (eq. 3 of the paper: the decoder's gradient is copied to the encoder).
The codebook learns either by the codebook loss ||sg(z_e) - z_q||^2 or, as in the paper's
appendix A.1, by exponential moving averages of the vectors assigned to each code.

Two additions keep codes in use: k-means initialisation of the codebook (k-means++ seeding,
then Lloyd steps) from the encoder outputs of the first training batch, and restarting codes
unused for ``dead_code_steps`` training steps at randomly chosen encoder outputs (as in
Dhariwal et al. 2020, Jukebox).
All codebook updates happen in training mode only, in float32, under ``torch.no_grad``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vaekit import distributed
from vaekit.config import QuantizerConfig


@dataclass(frozen=True)
class Quantized:
    """What the quantizer gives for a batch: the decoder input and its per-example losses.

    ``z_q`` [B, D, H, W] carries the straight-through gradient; ``codes`` [B, H, W] are the
    chosen indices; ``codebook`` and ``commitment`` [B] are squared distances summed over an
    example's positions and dimensions (the codebook term is zero with the EMA update).
    """

    z_q: torch.Tensor
    codes: torch.Tensor
    codebook: torch.Tensor
    commitment: torch.Tensor


def nearest_codes(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code (squared Euclidean distance) for each row of ``vectors`` [N, D]."""
    # ||v - e||^2 = ||v||^2 - 2 v.e + ||e||^2; ||v||^2 is the same for every code, so drop it.
    scores = codebook.pow(2).sum(1) - 2.0 * vectors @ codebook.t()
    return scores.argmin(1)


def kmeans_plus_plus(
    vectors: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``k`` starting centres drawn by D^2 sampling (Arthur & Vassilvitskii 2007, k-means++).

    Each next centre is a row drawn with probability proportional to its squared distance to
    the nearest centre so far, so well-separated clusters each get a centre. Rows may repeat
    when there are fewer distinct rows than centres.
    """
    n = vectors.shape[0]
    first = torch.randint(n, (1,), generator=generator).item()
    picks = [first]
    nearest = (vectors - vectors[first]).pow(2).sum(1)
    for _ in range(k - 1):
        total = nearest.sum()
        if total <= 0:  # every row sits on a centre already
            index = torch.randint(n, (1,), generator=generator).item()
        else:
            index = torch.multinomial((nearest / total).cpu(), 1, generator=generator).item()
        picks.append(index)
        nearest = torch.minimum(nearest, (vectors - vectors[index]).pow(2).sum(1))
    return vectors[torch.tensor(picks, device=vectors.device)].clone()


def kmeans(
    vectors: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``k`` centres of ``vectors`` [N, D]: k-means++ seeding, then ``iters`` Lloyd steps.

    A centre that loses all its rows in a Lloyd step stays where it was.
    """
    centres = kmeans_plus_plus(vectors, k, generator)
    for _ in range(iters):
        assign = nearest_codes(vectors, centres)
        sums = torch.zeros_like(centres).index_add_(0, assign, vectors)
        counts = torch.bincount(assign, minlength=k).to(vectors.dtype)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres


def usage_and_perplexity(counts: torch.Tensor) -> tuple[float, float]:
    """Fraction of codes used at least once, and the perplexity exp(H) of the code frequencies.

    Perplexity is the effective number of codes in use: K when all are used equally often,
    1 when one code takes every position.
    """
    counts = counts.double()
    total = counts.sum()
    if total <= 0:
        return 0.0, 0.0
    p = counts[counts > 0] / total
    entropy = -(p * p.log()).sum().item()
    return (counts > 0).double().mean().item(), math.exp(entropy)


class VectorQuantizer(nn.Module):
    """A codebook of K vectors of size D, with the lookup, its losses and its upkeep."""

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.num_codes = cfg.num_codes
        self.code_dim = cfg.code_dim
        self.use_ema = cfg.update == "ema"
        self.decay = cfg.ema_decay
        self.epsilon = cfg.ema_epsilon
        self.dead_code_steps = cfg.dead_code_steps
        self.kmeans_init = cfg.kmeans_init
        self.kmeans_iters = cfg.kmeans_iters
        k, d = cfg.num_codes, cfg.code_dim
        # Uniform in [-1/K, 1/K] as in the reference implementation's initialiser scale.
        init = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)
        if self.use_ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("steps_unused", torch.zeros(k, dtype=torch.long))
        self.register_buffer("initialised", torch.tensor(not cfg.kmeans_init))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code vectors for a map of indices: [B, H, W] -> [B, D, H, W]."""
        return self.codebook[codes].permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: torch.Tensor) -> Quantized:
        """Quantize ``z_e`` [B, D, H, W]; in training mode also update the codebook."""
        z_e = z_e.float()  # distances and codebook statistics in full precision under autocast
        b, d, h, w = z_e.shape
        if d != self.code_dim:
            raise ValueError(f"quantizer expects {self.code_dim} channels, got {d}")
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training:
            self._maybe_initialise(flat.detach())
        codes = nearest_codes(flat.detach(), self.codebook.detach())
        if self.training:
            self._update(flat.detach(), codes)
        z_q = self.lookup(codes.view(b, h, w))
        commitment = (z_e - z_q.detach()).pow(2).sum((1, 2, 3))
        if self.use_ema:
            codebook = torch.zeros_like(commitment)
        else:
            codebook = (z_e.detach() - z_q).pow(2).sum((1, 2, 3))
        straight_through = z_e + (z_q - z_e).detach()
        return Quantized(straight_through, codes.view(b, h, w), codebook, commitment)

    @torch.no_grad()
    def _maybe_initialise(self, flat: torch.Tensor) -> None:
        if bool(self.initialised):
            return
        centres = kmeans(flat, self.num_codes, self.kmeans_iters)
        # Under DDP every process starts from rank 0's codebook (its first local batch).
        distributed.broadcast_(centres)
        self.codebook.data.copy_(centres)
        if self.use_ema:
            self.ema_sum.copy_(centres)
            self.ema_count.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.num_codes).to(flat.dtype)
        if self.use_ema:
            sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat)
            if distributed.active():
                # The statistics of the global batch, so the codebooks stay identical.
                both = distributed.all_reduce_sum_(torch.cat([counts[:, None], sums], 1))
                counts, sums = both[:, 0], both[:, 1:]
            self._ema_step(counts, sums)
        elif distributed.active():
            distributed.all_reduce_sum_(counts)
        if self.dead_code_steps > 0:
            self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
            dead = (self.steps_unused >= self.dead_code_steps).nonzero().flatten()
            if len(dead):
                self._restart(dead, flat)

    def _ema_step(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """N_k <- g N_k + (1-g) n_k, m_k <- g m_k + (1-g) sum_k, e_k = m_k / N~_k (App. A.1).

        N~ is N with Laplace smoothing, (N_k + eps) / (n + K eps) * n, so that a code with no
        assignments for a long time never divides by zero.
        """
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_count.sum()
        smoothed = (self.ema_count + self.epsilon) / (n + self.num_codes * self.epsilon) * n
        self.codebook.copy_(self.ema_sum / smoothed[:, None])

    def _restart(self, dead: torch.Tensor, flat: torch.Tensor) -> None:
        """Move dead codes onto encoder outputs drawn at random from the batch."""
        pick = torch.randint(flat.shape[0], (len(dead),), device=flat.device)
        fresh = distributed.broadcast_(flat[pick].contiguous())  # rank 0's picks for all
        self.codebook.data[dead] = fresh
        if self.use_ema:
            self.ema_sum[dead] = fresh
            self.ema_count[dead] = 1.0
        self.steps_unused[dead] = 0
