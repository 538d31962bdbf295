"""A function through torch.compile that falls back to eager, once and with a warning.

Compiling needs a C++ compiler and supports most but not all ops; where it fails, the eager
function computes the same quantity, only slower, so the command goes on instead of failing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch


class CompiledOrEager:
    """``fn`` through ``torch.compile(fn, **options)``; after the first failure, ``fn`` itself.

    ``doing`` names the work in the warning ("evaluating", "training").
    """

    def __init__(self, fn: Callable[..., Any], doing: str, **options: Any) -> None:
        self.eager = fn
        self.doing = doing
        self.compiled: Any = torch.compile(fn, **options)

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:  # no compiler, unsupported op: eager gives the same numbers
                print(
                    f"vaekit: torch.compile unavailable ({type(err).__name__}); {self.doing} "
                    "eagerly",
                    file=sys.stderr,
                )
                self.compiled = None
        return self.eager(*args)
