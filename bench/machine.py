"""Facts about the machine a benchmark ran on: CPU, threads, memory, torch build, GPU."""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def minor_faults() -> int:
    """Minor page faults of this process so far (ru_minflt): pages the kernel mapped anew."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def facts(device: str) -> dict[str, Any]:
    """CPU model, cores, torch threads and version, and the GPU when ``device`` is cuda."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "blas": "mkl" if torch.backends.mkl.is_available() else "other",
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
