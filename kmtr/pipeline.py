"""Stages in sequence: ``kmtr train`` with no stage runs I → II → III (every task).

Each stage gets its preset's per-stage settings (:data:`kmtr.config.STAGE_DEFAULTS`) and then the
user's overrides. A stage whose run folder already holds a checkpoint of the same config is
resumed (a finished one costs nothing), so an interrupted pipeline continues where it stopped; one
of another config stops the pipeline unless told to resume or restart it
(:mod:`kmtr.train.run_guard`).
"""

from __future__ import annotations

from typing import Any, Iterable

from kmtr.config import TrainConfig, apply_overrides, preset
from kmtr.data import shared_sample_cache
from kmtr.train.runner import ConfigError, run_dir

__all__ = ["stage_config", "train_one", "train_pipeline", "is_finished"]


def stage_config(preset_name: str, stage: int, task: str = "", overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The preset for ``stage`` (and ``task``), then ``overrides`` (dotted keys; None values skipped)."""
    cfg = preset(preset_name, stage, task)
    return apply_overrides(cfg, dict(overrides or {}))


def train_one(cfg: TrainConfig, resume: bool | str = False) -> dict[str, Any]:
    """Run ``cfg.stage`` (1, 2 or 3) as configured; ``resume``: ``auto`` (False) | ``resume``
    (True) | ``restart``, see :func:`kmtr.train.runner.fit_model`.

    Raises:
        RunConflictError: (``auto``) the run folder holds a run of another config; checked before
            any data is read for every field a stage does not adopt from its init checkpoint
            (architecture and frame count), and after adoption for those.
    """
    from kmtr.config import config_to_dict
    from kmtr.train.run_guard import check_run_folder

    if resume is False or resume == "auto":
        check_run_folder(run_dir(cfg), config_to_dict(cfg), ignore=("arch.", "data.frames") if cfg.stage > 1 else ())
    if cfg.stage == 1:
        from kmtr.train.stage1 import train_stage1

        return train_stage1(cfg, resume=resume)
    if cfg.stage == 2:
        from kmtr.train.stage2 import train_stage2

        return train_stage2(cfg, resume=resume)
    if cfg.stage == 3:
        from kmtr.stage3 import train_stage3

        return train_stage3(cfg, resume=resume)
    raise ConfigError(f"stage must be 1, 2 or 3, not {cfg.stage}")


def train_pipeline(
    preset_name: str,
    stages: Iterable[int] = (1, 2, 3),
    tasks: Iterable[str] = ("regression", "classification", "segmentation", "reconstruction"),
    overrides: dict[str, Any] | None = None,
    resume: bool | str = "auto",
) -> list[dict[str, Any]]:
    """Run the stages in order (stage III once per task); returns one summary per trained run.

    ``resume`` applies to every stage (see :func:`train_one`); finished stages are skipped
    (with ``auto``, those whose saved config matches).
    """
    mode = ("resume" if resume else "auto") if isinstance(resume, bool) else resume
    summaries = []
    with shared_sample_cache():  # with data.cache on, the stages read each subject from the store once
        for stage in stages:
            for task in (tasks if stage == 3 else ("",)):
                cfg = stage_config(preset_name, stage, task, overrides)
                done = mode != "restart" and is_finished(cfg, same_config=mode == "auto")
                if done:
                    print(f"== {run_dir(cfg)}: already trained ({cfg.optim.epochs} epochs), skipped", flush=True)
                    continue
                print(f"== stage {stage}{' / ' + task if task else ''}: {run_dir(cfg)}", flush=True)
                summaries.append(train_one(cfg, resume=mode))
    return summaries


def is_finished(cfg: TrainConfig, same_config: bool = False) -> bool:
    """True when the run folder's ``last.pt`` has trained all ``cfg.optim.epochs`` (and no step cap
    is set); with ``same_config``, only when its saved config also matches ``cfg``
    (:func:`kmtr.train.run_guard.config_differences`)."""
    from kmtr.config import config_to_dict
    from kmtr.train.run_guard import config_differences, saved_config

    if cfg.stage == 3:
        from kmtr.methods import method_spec

        own = method_spec(cfg.method).is_finished
        if own is not None:  # no last.pt (nnU-Net keeps its own checkpoints)
            return own(cfg, same_config)
    saved = saved_config(run_dir(cfg))
    if saved is None:
        return False
    config, epochs = saved
    if same_config and config_differences(config, config_to_dict(cfg)):
        return False
    return epochs >= cfg.optim.epochs and cfg.run.max_steps is None
