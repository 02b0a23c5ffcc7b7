"""A callback for `mypt fit --trainer.callbacks`: each rank's peak GPU memory, for scripts/gpu_check.sh.

PYTHONPATH=scripts mypt fit ... --trainer.callbacks '[{"class_path": "peak_memory.PeakMemory",
    "init_args": {"out_file": "peak.json"}}]'
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch


class PeakMemory(pl.Callback):
    def __init__(self, out_file: str) -> None:
        """Writes {rank: peak GiB allocated during training} to `out_file` (rank zero gathers).

        Args:
            out_file: The JSON file to write.
        """
        self.out_file = Path(out_file)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        torch.cuda.reset_peak_memory_stats()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        peak = torch.cuda.max_memory_allocated() / 2**30
        peaks = trainer.strategy.all_gather(torch.tensor(peak, device=pl_module.device)).reshape(-1)
        if trainer.is_global_zero:
            self.out_file.write_text(
                json.dumps({str(rank): round(float(p), 3) for rank, p in enumerate(peaks)})
            )
