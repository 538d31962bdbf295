"""Keep freed memory in the process, so that each step's large tensors do not page-fault anew.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a block larger than
its mmap threshold (128 KiB, rising on its own up to 32 MiB) with a fresh ``mmap`` and gives
it back with ``munmap`` when it is freed, and it returns the free top of its heap to the system
once more than the trim threshold is free there. A training step of a convolutional VAE, or
one importance-sampling chunk of an evaluation, allocates and frees tens of MiB of activations;
with those defaults the kernel maps them as new, zeroed pages every time: 12,551 minor page
faults per step of the bench's conv workload (batch 128) and 11,475 per image of its iw-eval
workload (K = 5000) on 2 cores. Raising both thresholds to 1 GiB lets malloc reuse the freed
blocks instead (314 and 56 faults; conv 1.5x and iw-eval 1.3x faster, bench/reuse_memory.py),
the reason CPU tuning guides for PyTorch suggest a caching allocator such as jemalloc or
tcmalloc. The price: memory freed below the peak stays with the process until it exits, so
its resident size does not fall after a peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt's parameter numbers, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to this size come from (and go back to) the heap instead of their own mmap.
KEEP_BYTES = 1 << 30
# glibc reads these from the environment at start-up; a user who set them has chosen.
ENV_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_applied = False


def _glibc() -> ctypes.CDLL | None:
    """The process's glibc, or None on another C library (musl, macOS, Windows)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def reuse_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks of up to 1 GiB for reuse instead of unmapping
    them; True when these settings are in force (set now or by an earlier call).

    Left alone (False) on a C library other than glibc, and when the environment sets
    ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (the user's own choice, and the
    way to opt out). Under a preloaded jemalloc or tcmalloc the call changes glibc's unused
    malloc only. Process-wide and not undone: call it from an entry point (``train``,
    ``evaluate``), never at import.
    """
    global _applied
    if _applied:
        return True
    if any(name in os.environ for name in ENV_SETTINGS):
        return False
    libc = _glibc()
    if libc is None:
        return False
    # mallopt returns 1 on success; setting either threshold also stops glibc adapting them.
    ok = libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(KEEP_BYTES)) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(KEEP_BYTES)) == 1 and ok
    _applied = ok
    return ok
