"""Where training numbers go: ``metrics.jsonl`` (one JSON object per epoch) and TensorBoard."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vaekit.atomic import atomic_write_text
from vaekit.errors import RunError


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file (an empty list when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise RunError(f"{path}: line {number} is not a JSON record") from None
        if not isinstance(record, dict):
            raise RunError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


class MetricsLog:
    """Append-only JSON lines, one record per epoch, plus the same scalars in TensorBoard."""

    def __init__(self, path: Path, tensorboard_dir: Path | None, keep_epochs: int = 0) -> None:
        # On resume, drop records of epochs after the checkpoint (a crash may have left them).
        self.path = path
        kept = [r for r in read_metrics(path) if r.get("epoch", 0) <= keep_epochs]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self.writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard_dir), purge_step=None)

    def write(self, record: dict[str, Any], step: int) -> None:
        """Append one record and mirror its numeric fields as TensorBoard scalars."""
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key not in ("epoch", "step"):
                    self.writer.add_scalar(key, value, step)
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self.writer is not None:
            self.writer.close()
