"""Stages in sequence: ``kmtr train`` with no stage runs I → II → III (every task).

Each stage gets its preset's per-stage settings (:data:`kmtr.config.STAGE_DEFAULTS`) and then the
user's overrides. A stage whose run folder already holds a checkpoint is resumed (a finished one
costs nothing), so an interrupted pipeline continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from kmtr.config import TrainConfig, apply_overrides, preset
from kmtr.train.runner import ConfigError, run_dir

__all__ = ["stage_config", "train_one", "train_pipeline", "is_finished"]


def stage_config(preset_name: str, stage: int, task: str = "", overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The preset for ``stage`` (and ``task``), then ``overrides`` (dotted keys; None values skipped)."""
    cfg = preset(preset_name, stage, task)
    return apply_overrides(cfg, dict(overrides or {}))


def train_one(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Run ``cfg.stage`` (1, 2 or 3) as configured."""
    if cfg.stage == 1:
        from kmtr.train.stage1 import train_stage1

        return train_stage1(cfg, resume=resume)
    if cfg.stage == 2:
        from kmtr.train.stage2 import train_stage2

        return train_stage2(cfg, resume=resume)
    if cfg.stage == 3:
        from kmtr.train.stage3 import train_stage3

        return train_stage3(cfg, resume=resume)
    raise ConfigError(f"stage must be 1, 2 or 3, not {cfg.stage}")


def train_pipeline(
    preset_name: str,
    stages: Iterable[int] = (1, 2, 3),
    tasks: Iterable[str] = ("regression", "classification", "segmentation", "reconstruction"),
    overrides: dict[str, Any] | None = None,
    resume: bool = True,
) -> list[dict[str, Any]]:
    """Run the stages in order (stage III once per task); returns one summary per run.

    With ``resume`` a stage whose ``last.pt`` exists continues from it (finished stages are skipped).
    """
    summaries = []
    for stage in stages:
        for task in (tasks if stage == 3 else ("",)):
            cfg = stage_config(preset_name, stage, task, overrides)
            done = is_finished(cfg)
            if done:
                print(f"== {run_dir(cfg)}: already trained ({cfg.optim.epochs} epochs), skipped", flush=True)
                continue
            print(f"== stage {stage}{' / ' + task if task else ''}: {run_dir(cfg)}", flush=True)
            summaries.append(train_one(cfg, resume=resume))
    return summaries


def is_finished(cfg: TrainConfig) -> bool:
    """True when the run folder's ``last.pt`` has trained all ``cfg.optim.epochs`` (and no step cap is set)."""
    ckpt = Path(run_dir(cfg)) / "last.pt"
    if not ckpt.exists():
        return False
    from kmtr.train.checkpoint import load_checkpoint

    state = load_checkpoint(ckpt)
    return int(state.get("epoch", 0)) >= cfg.optim.epochs and cfg.run.max_steps is None
