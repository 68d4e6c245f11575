"""Rank-0 metric sinks: a long-format CSV (step, epoch, phase, name, value) and TensorBoard
when the ``tensorboard`` package is importable."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

__all__ = ["MetricLogger"]


class MetricLogger:
    """Append metrics to ``<run>/metrics.csv`` and, if available, ``<run>/tb/``."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._fh = open(self.path, "a", newline="")
        self._csv = csv.writer(self._fh)
        if new:
            self._csv.writerow(["step", "epoch", "phase", "name", "value"])
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except ImportError:
                self._tb = None

    @property
    def has_tensorboard(self) -> bool:
        return self._tb is not None

    def log(self, step: int, epoch: int, phase: str, values: dict[str, float]) -> None:
        for name, value in values.items():
            self._csv.writerow([step, epoch, phase, name, f"{float(value):.6g}"])
            if self._tb is not None:
                self._tb.add_scalar(f"{phase}/{name}", float(value), step)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()
