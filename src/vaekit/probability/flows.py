"""Inverse autoregressive flow (IAF) posteriors (Kingma et al. 2016, "Improved Variational
Inference with Inverse Autoregressive Flow").

A diagonal Gaussian q0(z0|x) is made richer by T invertible steps, each driven by a MADE-style
masked network (Germain et al. 2015) of z and of a context vector h that the encoder emits
beside (mu, log var). Step t computes [m, s] = AR_t(z, h), sigma = sigmoid(s) and

    z <- sigma * z + (1 - sigma) * m                       (Kingma et al. 2016, eq. 13-14)

Because m_d and s_d depend only on the coordinates before d (in the step's order), the
Jacobian is triangular with diagonal sigma, so log |det| = sum_d log sigma_d and

    log q(z_T|x) = log q0(z0|x) - sum_t sum_d log sigma_{t,d}     (eq. 10 with eq. 15)

The paper reverses the order of the variables between steps. Here no coordinate moves:
odd steps give their network the reversed order (degrees D..1 instead of 1..D), which is the
same flow up to a permutation (|det| = 1), and keeps coordinate d of z_T tied to coordinate d
of z0, so the log-determinant splits per latent dimension (``log_det_per_dim``) for the
per-dimension KL terms that free bits and diagnostics read.

Every tensor here may carry leading sample dimensions: z [..., B, D] with context h [B, H]
(e.g. K importance samples per image) broadcasts without copying h.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.probability.gaussian import DiagonalGaussian


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask [out, in] (MADE, eq. 10)."""

    def __init__(self, mask: torch.Tensor) -> None:
        n_out, n_in = mask.shape
        super().__init__(n_in, n_out)
        # Not persistent: the mask follows from the constructor, so checkpoints need not hold it.
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(order: torch.Tensor, hidden: list[int]) -> list[torch.Tensor]:
    """The masks of a MADE whose input d has degree ``order[d]`` in 1..D, one per layer.

    Hidden units get degrees 0..D-1 in turn (deterministic, unlike MADE's random draw, so a
    model is the same on every run). A unit of degree k sees the inputs of degree <= k and an
    output of degree d sees the units of degree < d (Germain et al. 2015, eq. 12-13), so output
    d depends only on inputs before d. Degree-0 units see no input: they carry the context
    alone, which lets h reach even the first coordinate's (m, s).
    """
    dim = len(order)
    degrees = [order]
    for width in hidden:
        degrees.append(torch.arange(width) % dim)
    masks = [later[:, None] >= earlier[None, :] for earlier, later in pairwise(degrees)]
    out = torch.cat([order, order])  # m and s share the inputs' degrees
    masks.append(out[:, None] > degrees[-1][None, :])
    return [m.float() for m in masks]


class IAFStep(nn.Module):
    """One IAF step: a masked network gives (m, s) from (z, h); z <- sigmoid(s) z + (1 - ...) m."""

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        hidden: list[int],
        reverse: bool = False,
        gate_bias: float = 2.0,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("an IAF step needs at least one hidden layer")
        order = torch.arange(1, latent_dim + 1)
        self.latent_dim = latent_dim
        self.reverse = reverse
        masks = made_masks(order.flip(0) if reverse else order, hidden)
        self.first = MaskedLinear(masks[0])
        # The context enters the first layer unmasked: it does not depend on z, so every
        # output may see it without breaking the autoregressive order (Kingma et al. 2016, 4).
        self.context = nn.Linear(context_dim, hidden[0], bias=False) if context_dim else None
        self.rest = nn.ModuleList(MaskedLinear(m) for m in masks[1:])
        # s starts near +gate_bias so sigma is near 1 and each step starts close to the
        # identity, the initialisation Kingma et al. (2016, section 4) recommend.
        with torch.no_grad():
            self.rest[-1].bias[latent_dim:].fill_(gate_bias)

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, reverse={self.reverse}"

    def shift_and_gate(
        self, z: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(m, s), each [..., D]; coordinate d depends on z only through the ones before it."""
        a = self.first(z)
        if self.context is not None:
            if context is None:
                raise ValueError("this IAF step was built with a context; pass h")
            a = a + self.context(context)
        for layer in self.rest:
            a = layer(F.elu(a))
        m, s = a.chunk(2, dim=-1)
        return m, s

    def forward(
        self, z: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the new z, log sigma [..., D]), the latter this step's per-dimension log |det|."""
        m, s = self.shift_and_gate(z, context)
        sigma = torch.sigmoid(s)
        # The convex combination keeps z bounded where z + sigma * m would not (eq. 14).
        return sigma * z + (1 - sigma) * m, F.logsigmoid(s)

    def inverse(
        self, y: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(the z that :meth:`forward` maps to y, log sigma there), by D sequential passes.

        After pass d the first d coordinates (in the step's order) are exact, because they
        depend only on coordinates already recovered, so D passes recover all of z. Used to
        evaluate log q at a given z_T (density checks, DReG-style estimators), not to train.
        """
        z = y
        for _ in range(self.latent_dim):
            m, s = self.shift_and_gate(z, context)
            sigma = torch.sigmoid(s)
            z = (y - (1 - sigma) * m) / sigma
        return z, F.logsigmoid(self.shift_and_gate(z, context)[1])


class IAFFlow(nn.Module):
    """T IAF steps that turn a sample z0 of the encoder's Gaussian into z_T, tracking log q.

    ``hidden`` are the widths of each step's masked network (ELU between layers, as in the
    paper's experiments); ``context_dim`` is the size of the encoder's extra output h (0: no
    context). Steps alternate the variable order (see the module docstring).
    """

    def __init__(
        self,
        latent_dim: int,
        context_dim: int,
        steps: int = 2,
        hidden: list[int] | None = None,
        gate_bias: float = 2.0,
    ) -> None:
        super().__init__()
        if latent_dim <= 0:
            raise ValueError(f"latent_dim must be positive, got {latent_dim}")
        if context_dim < 0:
            raise ValueError(f"context_dim must be non-negative, got {context_dim}")
        if steps < 1:
            raise ValueError(f"an IAF needs at least one step, got {steps}")
        widths = list(hidden) if hidden is not None else [max(2 * latent_dim, 32)] * 2
        self.latent_dim = latent_dim
        self.context_dim = context_dim
        self.steps = nn.ModuleList(
            IAFStep(latent_dim, context_dim, widths, reverse=bool(t % 2), gate_bias=gate_bias)
            for t in range(steps)
        )

    def transform(
        self, z0: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_T, sum_t log sigma_t) for z0 [..., B, D] and h [B, H]; both results [..., B, D].

        The second is the flow's log |det dz_T/dz0| split by latent coordinate.
        """
        if z0.shape[-1] != self.latent_dim:
            raise ValueError(f"expected z0 with last dim {self.latent_dim}, got {tuple(z0.shape)}")
        z, log_det = z0, torch.zeros_like(z0)
        for step in self.steps:
            z, log_sigma = step(z, context)
            log_det = log_det + log_sigma
        return z, log_det

    def forward(
        self, z0: torch.Tensor, context: torch.Tensor | None, q0: DiagonalGaussian
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_T [..., B, D], log q(z_T|x) [..., B]) = log q0(z0|x) - log |det dz_T/dz0|."""
        z, log_det = self.transform(z0, context)
        return z, q0.log_prob(z0) - log_det.sum(-1)

    def sample_and_log_prob(
        self,
        q0: DiagonalGaussian,
        context: torch.Tensor | None,
        sample_shape: torch.Size | tuple[int, ...] = (),
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw z0 ~ q0 (``q0.rsample``, so data-parallel noise stays global) and push it through.

        ``sample_shape`` is a prefix as in ``rsample``: (K,) gives z_T [K, B, D], log q [K, B].
        """
        return self(q0.rsample(sample_shape, generator=generator), context, q0)

    def inverse(
        self, z: torch.Tensor, context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(z0, log |det dz_T/dz0| per coordinate at z0) for a given z_T; D passes per step."""
        log_det = torch.zeros_like(z)
        for step in reversed(self.steps):
            z, log_sigma = step.inverse(z, context)
            log_det = log_det + log_sigma
        return z, log_det

    def log_prob(
        self, z: torch.Tensor, context: torch.Tensor | None, q0: DiagonalGaussian
    ) -> torch.Tensor:
        """log q(z_T|x) at a given z_T [..., B, D]: [..., B], by inverting the flow."""
        z0, log_det = self.inverse(z, context)
        return q0.log_prob(z0) - log_det.sum(-1)
