"""Learning-rate search for ``kmtr benchmark --lr-search N``: every method at its best, on the
same budget.

For each (method, task) with a grid (``lr_grid`` in :mod:`kmtr.methods`), ``N`` learning rates are taken from the
method's grid (evenly spaced over it: 1 → the middle value, 3 → the ends and the middle, 5 →
all), each trained for the same number of epochs (``search_epochs``, short runs, the warm-up
scaled by the same factor) from the same starting point, and the one with the lowest validation
loss after its last epoch (the task's training loss on the validation split, from the run's
``metrics.csv``; a run whose loss became non-finite counts as infinitely bad) is used for the
method's full-length run. Every method gets
the same ``N`` tries of the same length, k-MTR included; methods without a grid fit their own
settings on the validation split (``spectrum_ridge``: its regularisation) or are not searched.

Search runs live in ``<experiment>/lr-search/lr<lr>/<method>-<task>/`` (resumable like any
run); the record of a search (grid, tried values, validation losses, choice) is written to
``<experiment>/lr-search/<method>-<task>.json``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kmtr.methods import METHODS

__all__ = ["LR_GRIDS", "MAX_TRIES", "LRSearch", "lr_grid", "last_val_loss", "search_lr"]

#: method → (kind, values) of every method with a grid, from the registry (:attr:`kmtr.methods.MethodSpec.lr_grid`)
LR_GRIDS: dict[str, tuple[str, tuple[float, ...]]] = {m: s.lr_grid for m, s in METHODS.items() if s.lr_grid}
MAX_TRIES = 5


@dataclass
class LRSearch:
    """The record of one search."""

    method: str
    task: str
    grid: list[float]  # the method's whole grid (absolute learning rates)
    tried: list[float]
    val_loss: list[float]  # per tried value (inf: diverged)
    chosen: float
    epochs: int  # per try


def lr_grid(method: str, preset_lr: float) -> list[float] | None:
    """The method's grid as absolute learning rates, None when the method is not searched."""
    grid = METHODS[method].lr_grid if method in METHODS else None
    if grid is None:
        return None
    kind, values = grid
    return [float(f"{preset_lr * v:.3g}") for v in values] if kind == "x preset lr" else [float(v) for v in values]


def tries(grid: list[float], n: int) -> list[float]:
    """``n`` values evenly spaced over ``grid`` (1 → the middle one).

    Raises:
        ValueError: ``n`` outside 1 … len(grid).
    """
    if not 1 <= n <= len(grid):
        raise ValueError(f"--lr-search takes 1 to {len(grid)} learning rates, not {n}")
    idx = [len(grid) // 2] if n == 1 else np.round(np.linspace(0, len(grid) - 1, n)).astype(int).tolist()
    return [grid[i] for i in idx]


def last_val_loss(run_path: Path) -> float:
    """The validation loss after the run's last logged epoch (``metrics.csv``); inf when absent or non-finite."""
    path = Path(run_path) / "metrics.csv"
    if not path.exists():
        return math.inf
    best_step, value = -1, math.inf
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["phase"] == "val" and row["name"] == "loss" and int(row["step"]) >= best_step:
                best_step, value = int(row["step"]), float(row["value"])
    return value if math.isfinite(value) else math.inf


def search_lr(cfg: Any, n: int, search_epochs: int, record_dir: Path) -> LRSearch | None:
    """Search ``cfg.method``'s learning rate for ``cfg.task`` (``cfg`` = the method's full run config).

    Returns the record (also written to ``record_dir/<method>-<task>.json``), or None when the
    method has no grid. ``cfg`` itself is not changed.
    """
    import dataclasses

    from kmtr.methods import method_spec
    from kmtr.pipeline import is_finished, train_one
    from kmtr.train.loop import NonFiniteLossError
    from kmtr.train.runner import run_dir

    grid = lr_grid(cfg.method, cfg.optim.lr)
    if grid is None:
        return None
    spec = method_spec(cfg.method)
    init = cfg.init or (str(Path(cfg.run.out_dir) / cfg.run.name / spec.init_from) if spec.init_from else "")
    losses = []
    chosen_from = tries(grid, n)
    for lr in chosen_from:
        # the same schedule shape, shortened: warm-up scaled with the epochs
        warmup = cfg.optim.warmup_epochs * search_epochs / max(cfg.optim.epochs, 1)
        trial = dataclasses.replace(
            cfg, init=init, run=dataclasses.replace(cfg.run, name=f"{cfg.run.name}/lr-search/lr{lr:g}"),
            optim=dataclasses.replace(cfg.optim, lr=lr, epochs=search_epochs, warmup_epochs=warmup))
        if not is_finished(trial, same_config=True):
            print(f"== learning-rate search {cfg.method} / {cfg.task}: lr {lr:g}, {search_epochs} epochs", flush=True)
            try:
                train_one(trial, resume="auto")
            except NonFiniteLossError:
                losses.append(math.inf)
                continue
        losses.append(last_val_loss(run_dir(trial)))
    best = int(np.argmin(losses))  # first minimum: ties go to the smaller learning rate
    record = LRSearch(cfg.method, cfg.task, grid, chosen_from, losses, chosen_from[best], search_epochs)
    record_dir.mkdir(parents=True, exist_ok=True)
    (record_dir / f"{cfg.method}-{cfg.task}.json").write_text(json.dumps(asdict(record), indent=2) + "\n")
    return record
