"""What every stage does around its model: run folder, data loaders, AdamW groups, the warm-up +
cosine schedule, the :class:`~kmtr.train.loop.Trainer`, resume."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kmtr.config import TrainConfig, config_to_dict, save_config, stage_dir
from kmtr.data import KSpaceDataset, prepare_batch
from kmtr.errors import ConfigError
from kmtr.train.distributed import DistInfo
from kmtr.train.loop import LoopConfig, ResumableSampler, Trainer, WarmupCosine
from kmtr.train.run_guard import RunConflictError, prepare_run_folder

__all__ = ["ConfigError", "RunConflictError", "run_dir", "seed_everything", "param_groups", "make_loaders", "fit_model"]


def run_dir(cfg: TrainConfig) -> Path:
    """``<out_dir>/<name>/<stage folder>`` (see :func:`kmtr.config.stage_dir`)."""
    return Path(cfg.run.out_dir) / cfg.run.name / stage_dir(cfg)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decayed weights, and biases / norms / tokens / positional codes without decay."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "pos." in name or "token" in name else decay).append(p)
    return [{"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0}]


def make_loaders(
    cfg: TrainConfig, train_ds: KSpaceDataset, val_ds: KSpaceDataset | None, info: DistInfo
) -> tuple[DataLoader, DataLoader | None]:
    """Training loader on a :class:`ResumableSampler` (drop_last) and a rank-0 validation loader."""
    sampler = ResumableSampler(train_ds, info.world_size, info.rank, shuffle=True, seed=cfg.run.seed)
    pin = info.device.type == "cuda"
    loader = DataLoader(
        train_ds, batch_size=cfg.data.batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
        drop_last=True, pin_memory=pin, generator=torch.Generator().manual_seed(cfg.run.seed + info.rank),
        persistent_workers=cfg.data.cache and cfg.data.num_workers > 0,
    )
    val_loader = None
    if val_ds is not None and info.is_main:
        val_loader = DataLoader(val_ds, batch_sampler=validation_batches(len(val_ds), cfg.data.batch_size),
                                num_workers=0, pin_memory=pin)
    return loader, val_loader


def validation_batches(n: int, batch_size: int) -> list[list[int]]:
    """Rows 0..n-1 in order, in batches of ``batch_size``, except that a last batch of one subject
    joins the batch before it (stage II's contrastive loss cannot score a single subject)."""
    batches = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        last = batches.pop()
        batches[-1] += last
    return batches


def fit_model(
    cfg: TrainConfig,
    model: nn.Module,
    train_ds: KSpaceDataset,
    val_ds: KSpaceDataset | None,
    info: DistInfo,
    groups: list[dict[str, Any]],
    clip_groups: list[list[nn.Parameter]] | None = None,
    tokens_per_sample: int = 0,
    on_epoch_end: Callable[[int, nn.Module, dict[str, torch.Tensor]], None] | None = None,
    val_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
    resume: bool | str = False,
    extra_state: dict[str, Any] | None = None,
    chunk_size: int | str = 0,
) -> dict[str, Any]:
    """Train ``model`` as ``cfg`` says; returns the loop summary plus ``model``, ``run_dir`` and
    ``already_trained`` (True when the run folder held a finished run: nothing was trained).

    ``resume`` says what happens to a run folder that holds a checkpoint
    (:func:`kmtr.train.run_guard.prepare_run_folder`): ``"auto"`` (or False) continues it when
    its config matches and stops otherwise, ``"resume"`` (or True) continues it whatever the
    config, ``"restart"`` deletes it first. Then ``config.json`` is written to the run folder;
    ``extra_state`` (e.g. target statistics) is saved inside every checkpoint. ``chunk_size``:
    gradient caching (stage II, :mod:`kmtr.train.gradcache`).

    Raises:
        ConfigError: the training split is smaller than one batch.
        RunConflictError: the run folder holds a run of another config (``"auto"``).
    """
    if len(train_ds) < cfg.data.batch_size * info.world_size:
        raise ConfigError(
            f"split {cfg.data.train_split!r} has {len(train_ds)} subjects, fewer than one batch "
            f"({cfg.data.batch_size} x {info.world_size} processes)"
        )
    out = run_dir(cfg)
    config = config_to_dict(cfg)
    if extra_state:
        config["extra_state"] = extra_state
    mode = ("resume" if resume else "auto") if isinstance(resume, bool) else resume
    continues = prepare_run_folder(out, config, mode, cfg.optim.epochs, remove=info.is_main)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.json")
    loader, val_loader = make_loaders(cfg, train_ds, val_ds, info)
    steps_per_epoch = len(loader)
    optimizer = torch.optim.AdamW(groups, betas=tuple(cfg.optim.betas))  # type: ignore[arg-type]
    schedule = WarmupCosine(round(cfg.optim.warmup_epochs * steps_per_epoch), cfg.optim.epochs * steps_per_epoch,
                            cfg.optim.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    loop_cfg = LoopConfig(
        epochs=cfg.optim.epochs, run_dir=out, clip_grad=cfg.optim.clip_grad, amp=cfg.run.amp,
        log_every=cfg.run.log_every, ckpt_every_steps=cfg.run.ckpt_every_steps,
        png_every_epochs=cfg.run.png_every_epochs, max_steps=cfg.run.max_steps, progress=cfg.run.progress,
        tensorboard=cfg.run.tensorboard, config=config, chunk_size=chunk_size,
    )
    trainer = Trainer(
        model, optimizer, scheduler, loader, prepare_batch, info, loop_cfg, clip_groups=clip_groups,
        tokens_per_sample=tokens_per_sample, val_loader=val_loader, on_epoch_end=on_epoch_end,
        val_metrics=val_metrics,
    )
    finished = False
    if continues and trainer.resume():
        finished = trainer.epoch >= cfg.optim.epochs and cfg.run.max_steps is None
        if info.is_main:
            print(f"{out}: already trained ({trainer.epoch} epochs); --restart trains it again" if finished else
                  f"resumed from {trainer.ckpt_path} at epoch {trainer.epoch}, step {trainer.global_step}", flush=True)
    summary = trainer.fit()
    summary["model"] = model
    summary["run_dir"] = out
    summary["already_trained"] = finished
    return summary
