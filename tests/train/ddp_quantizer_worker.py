"""Run under torchrun by tests/train/test_ddp.py: a VQ codebook trained on data that differs
between processes. Usage: ddp_quantizer_worker.py OUT DEAD_CODE_STEPS KMEANS_INIT(0|1).

Every process draws the same global batches and quantizes its own rows of each (with one
process: the whole batch); each saves its codebook state and its count of restarts to
OUT/rank-R.pt.
"""

import sys

import torch

from vaekit import distributed
from vaekit.config import QuantizerConfig
from vaekit.models.quantizer import VectorQuantizer
from vaekit.probability.noise import rows_of

STEPS, ROWS = 12, 32


def main(out: str, dead_code_steps: int, kmeans_init: bool) -> None:
    world = distributed.start("cpu", timeout_s=60)
    torch.manual_seed(0)
    quantizer = VectorQuantizer(
        QuantizerConfig(
            num_codes=32,
            code_dim=3,
            ema_decay=0.9,
            dead_code_steps=dead_code_steps,
            kmeans_init=kmeans_init,
        )
    ).train()
    restarts = []
    original = quantizer._restart

    def counted(dead, flat):
        restarts.append(len(dead))
        original(dead, flat)

    quantizer._restart = counted
    data = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        global_batch = torch.randn(ROWS, 3, 2, 2, generator=data) * 3
        share = rows_of(ROWS, world.rank, world.world_size)
        quantizer(global_batch[share.start : share.stop])
    state = {k: v.clone() for k, v in quantizer.state_dict().items()}
    state["restarted_codes"] = sum(restarts)
    torch.save(state, f"{out}/rank-{world.rank}.pt")
    distributed.stop()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1")
