"""Random draws for a whole global batch, of which this process keeps its own rows.

Under data-parallel training each process holds a contiguous block of rows of the global
batch. If every process drew noise only for its own rows, the run's randomness would depend on
the number of processes. Instead, inside :func:`row_share`, :func:`randn` and :func:`rand` draw
the global batch's noise (every process from the same generator state) and return this
process's rows. A run on N processes then sees exactly the noise of a one-process run with the
same global batch, and its generator states after each step are the same: a checkpoint resumes
on any number of processes. The cost is drawing N times the noise, which is small beside the
networks.

Outside :func:`row_share` both are plain ``torch.randn`` / ``torch.rand``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class RowShare:
    """Rows ``start:stop`` of a global batch of ``total`` rows."""

    start: int
    stop: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.stop <= self.total:
            raise ValueError(f"need 0 <= start <= stop <= total, got {self}")

    @property
    def rows(self) -> int:
        return self.stop - self.start


_active: ContextVar[RowShare | None] = ContextVar("vaekit_row_share", default=None)


@contextmanager
def row_share(share: RowShare | None) -> Iterator[None]:
    """Within the block, draws whose batch dimension has ``share.rows`` rows are global draws."""
    token = _active.set(share)
    try:
        yield
    finally:
        _active.reset(token)


def rows_of(total: int, rank: int, world_size: int) -> RowShare:
    """Process ``rank``'s contiguous block of a ``total``-row batch; blocks differ by <= 1 row."""
    return RowShare(total * rank // world_size, total * (rank + 1) // world_size, total)


def _global_shape(shape: Sequence[int], batch_dim: int) -> tuple[torch.Size, RowShare | None]:
    share = _active.get()
    shape = torch.Size(shape)
    if share is None or share.rows == share.total or shape[batch_dim] != share.rows:
        return shape, None
    full = list(shape)
    full[batch_dim] = share.total
    return torch.Size(full), share


def _draw(
    draw: Callable[..., torch.Tensor],
    shape: Sequence[int],
    *,
    batch_dim: int = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    full, share = _global_shape(shape, batch_dim)
    values = draw(full, generator=generator, dtype=dtype, device=device)
    return values if share is None else values.narrow(batch_dim, share.start, share.rows)


def randn(shape: Sequence[int], **options: Any) -> torch.Tensor:
    """N(0, 1) noise of ``shape`` (options: batch_dim=0, generator, dtype, device); in a share,
    this process's rows of the global draw."""
    return _draw(torch.randn, shape, **options)


def rand(shape: Sequence[int], **options: Any) -> torch.Tensor:
    """U[0, 1) noise of ``shape``, with the options of :func:`randn`."""
    return _draw(torch.rand, shape, **options)
