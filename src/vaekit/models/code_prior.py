"""A learned autoregressive prior over VQ-VAE code maps.

van den Oord et al. (2017, "Neural Discrete Representation Learning", sec. 3.2) fit a
PixelCNN to the discrete latents after training the VQ-VAE. We fit a small causal
transformer instead: on a map as small as 7x7 every position can attend to every earlier one,
so there is no blind spot (van den Oord et al. 2016, "Conditional Image Generation with
PixelCNN Decoders", sec. 2.2) and no deep stack is needed to cover the map, and torch's own
fused attention does the work.

The map is read in raster order c_0, ..., c_{T-1} with T = H * W and factorised exactly as
p(c) = prod_t p(c_t | c_<t). Position t sees the embedding of c_{t-1} (a learned start
embedding at t = 0) plus a learned position embedding, and a causal mask keeps it from the
positions after it, so its output depends on c_<t only and can predict c_t.
"""

from __future__ import annotations

import torch
from torch import nn


class CodePrior(nn.Module):
    """Causal transformer over a code map read in raster order: p(c) = prod_t p(c_t | c_<t)."""

    def __init__(
        self,
        num_codes: int,
        height: int,
        width: int,
        *,
        dim: int = 128,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_codes < 1 or height < 1 or width < 1:
            raise ValueError(
                f"num_codes, height and width must be positive, got {num_codes}, {height}, {width}"
            )
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.num_codes = num_codes
        self.height = height
        self.width = width
        length = height * width
        self.code_embed = nn.Embedding(num_codes, dim)
        self.start = nn.Parameter(torch.zeros(dim))
        self.pos_embed = nn.Parameter(torch.zeros(length, dim))
        # Small embeddings, as in GPT-2 (nanoGPT's _init_weights): the residual stream starts
        # near zero and pre-norm layers see unit-scale inputs.
        for p in (self.code_embed.weight, self.start, self.pos_embed):
            nn.init.normal_(p, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim,
            heads,
            dim_feedforward=4 * dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only help with padding masks, which a full code map never has.
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_codes)
        mask = nn.Transformer.generate_square_subsequent_mask(length)
        self.register_buffer("causal_mask", mask, persistent=False)

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, height={self.height}, width={self.width}"

    @property
    def length(self) -> int:
        """Positions per map, T = H * W."""
        return self.height * self.width

    def _next_logits(self, previous: torch.Tensor) -> torch.Tensor:
        """Logits [B, t + 1, K] at positions 0..t from the codes [B, t] before position t."""
        batch, t = previous.shape
        start = self.start.expand(batch, 1, -1)
        x = torch.cat([start, self.code_embed(previous)], dim=1) + self.pos_embed[: t + 1]
        mask = self.causal_mask[: t + 1, : t + 1]
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.head(self.norm(x))

    def logits(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits [B, H*W, K] of p(c_t | c_<t) for codes [B, H, W]; position t sees c_<t only."""
        if codes.dim() != 3 or tuple(codes.shape[1:]) != (self.height, self.width):
            raise ValueError(
                f"expected codes of shape [B, {self.height}, {self.width}], "
                f"got {tuple(codes.shape)}"
            )
        flat = codes.reshape(codes.shape[0], self.length).long()
        return self._next_logits(flat[:, :-1])

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(c) in nats, summed over the map's positions: [B, H, W] gives [B] float32."""
        log_p = torch.log_softmax(self.logits(codes).float(), dim=-1)
        flat = codes.reshape(codes.shape[0], self.length, 1).long()
        return log_p.gather(-1, flat).squeeze(-1).sum(-1)

    @torch.no_grad()
    def sample(
        self, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw n code maps [n, H, W] position by position; temperature < 1 sharpens each step.

        ``generator`` must live on the device of the prior's parameters.
        """
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        device = self.pos_embed.device
        codes = torch.empty(n, 0, dtype=torch.long, device=device)
        for _ in range(self.length):
            step = self._next_logits(codes)[:, -1].float()
            probs = torch.softmax(step / temperature, dim=-1)
            draw = torch.multinomial(probs, 1, generator=generator)
            codes = torch.cat([codes, draw], dim=1)
        return codes.reshape(n, self.height, self.width)
