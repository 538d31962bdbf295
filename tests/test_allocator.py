"""vaekit.allocator: freed tensors' memory is reused instead of mapped anew as fresh pages."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt thresholds are glibc's",
)

# Each child allocates, fills and frees a 64 MiB tensor 4 times, then 20 times more, and
# prints its minor page faults over the 20. 64 MiB is above the 32 MiB up to which glibc
# adapts its mmap threshold by itself, so with its defaults every allocation is a new mmap.
CHILD = """
import resource, sys, torch
from vaekit.allocator import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "reuse" else None
for _ in range(4):  # the first allocations map their pages either way
    torch.ones(16 * 2**20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16 * 2**20).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _child(mode: str, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**clean, **env},
    )
    applied, faults = done.stdout.split()
    return applied, int(faults)


@glibc_only
def test_reuse_freed_memory_stops_large_allocations_from_faulting_in_fresh_pages():
    _, default_faults = _child("default")
    applied, reuse_faults = _child("reuse")
    assert applied == "True"
    pages = 20 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert default_faults > pages / 2  # glibc's defaults: each 64 MiB tensor faults anew
    # With reuse, at most a few of the 20 still grow the heap (as other small blocks land at
    # its top); the rest reuse the freed block.
    assert reuse_faults < default_faults / 4


@glibc_only
def test_a_malloc_setting_in_the_environment_is_left_alone():
    applied, faults = _child("reuse", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"
    pages = 20 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert faults > pages / 2  # still glibc's own behaviour
