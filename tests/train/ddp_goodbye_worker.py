"""A torchrun worker whose training stops on a signal at once and which then receives the
launcher's SIGTERM again at the goodbye barrier (rank 0 only), as when torchrun signals its
processes one after another and the later one has already stopped on its peer's signal.
Rank 1 then lingers after leaving the group, so that torchrun, which signals the processes
left once rank 0 has exited, sends it SIGTERM while it is still on its way out.

Usage: ``torchrun --nproc_per_node 2 ddp_goodbye_worker.py CONFIG RUN_DIR``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import torch.distributed as dist

from vaekit import cli, distributed
from vaekit.train import loop


def _stopped_by_signal(*_args: object, **_kwargs: object) -> None:
    raise loop.TrainingInterrupted("SIGTERM at step 0: checkpoint written", signal.SIGTERM)


def _barrier_after_a_late_signal(*args: object, **kwargs: object) -> None:
    if dist.get_rank() == 0:
        os.kill(os.getpid(), signal.SIGTERM)
    _real_barrier(*args, **kwargs)


def _leave_then_linger() -> None:
    rank = dist.get_rank()
    _real_stop_after_signal()
    if rank == 1:
        time.sleep(3)


_real_barrier = dist.barrier
_real_stop_after_signal = distributed.stop_after_signal
loop.train = _stopped_by_signal
dist.barrier = _barrier_after_a_late_signal
distributed.stop_after_signal = _leave_then_linger

if __name__ == "__main__":
    sys.exit(cli.main(["train", sys.argv[1], "--run-dir", sys.argv[2]]))
