"""Stage I: image MAE and k-space MAE (``models = image | kspace | both``) on a store.

:func:`train_stage1` checks everything that can be wrong (store format, mask, splits, patch
versus data shape, widths versus heads) before the first step, prints parameter counts, saves
``runs/<name>/config.json`` and runs :class:`kmtr.train.loop.Trainer`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kmtr.coils import sense1
from kmtr.config import TrainConfig
from kmtr.data import prepare_batch
from kmtr.fft import ifft2c
from kmtr.models.mae import count_parameters
from kmtr.train.datasets import build_datasets
from kmtr.train.distributed import DistInfo, cleanup_distributed, init_distributed
from kmtr.train.maes import Stage1Model, build_stage1_model, validate_config
from kmtr.train.runner import ConfigError, fit_model, param_groups, run_dir, seed_everything
from kmtr.viz import save_reconstruction_png

__all__ = [
    "ConfigError",
    "Stage1Model",
    "build_datasets",
    "build_stage1_model",
    "make_optimizer_groups",
    "train_stage1",
    "validate_config",
]


def make_optimizer_groups(model: Stage1Model, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups with per-model learning rates; no weight decay on biases, norms, tokens and codes."""
    lrs = {"image": cfg.optim.lr_image, "kspace": cfg.optim.lr_kspace}
    return [g for name, sub in model.submodels().items() for g in param_groups(sub, lrs[name], cfg.optim.weight_decay)]


def _png_callback(run_dir: Path, device: torch.device) -> Any:
    def callback(epoch: int, model: nn.Module, raw: dict[str, torch.Tensor]) -> None:
        assert isinstance(model, Stage1Model)
        batch = prepare_batch({k: v[:1] for k, v in raw.items()}, device)
        s_last = batch["image"].shape[1] - 1
        rows: dict[str, dict[str, torch.Tensor]] = {}
        was_training = model.training
        model.eval()
        devices = [device] if device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            if model.image is not None:
                rec = model.image.reconstruct(model.image(batch["image"]))
                for s in sorted({0, s_last}):
                    rows[f"image MAE, slice {s}"] = {k: v[0, s, 0] for k, v in rec.items()}
            if model.kspace is not None:
                rec = model.kspace.reconstruct(model.kspace(batch["kspace"], batch["mask"]))
                imgs = {k: sense1(v, batch["maps"]) if v.ndim == 6 else ifft2c(v) for k, v in rec.items()}
                for s in sorted({0, s_last}):
                    rows[f"k-space MAE, slice {s}"] = {k: v[0, s, 0] for k, v in imgs.items()}
        model.train(was_training)
        save_reconstruction_png(rows, run_dir / f"recon_epoch{epoch + 1:04d}.png", f"epoch {epoch + 1}")

    return callback


def train_stage1(cfg: TrainConfig, resume: bool | str = False, dist_info: DistInfo | None = None) -> dict[str, Any]:
    """Run stage I as configured; returns the loop summary (last metrics, history, counters).

    Raises:
        StoreError, ConfigError: before training, for bad stores or settings.
        NonFiniteLossError: the loss became NaN/Inf (message names the step).
    """
    own_dist = dist_info is None
    info = dist_info or init_distributed(cfg.run.device)
    try:
        train_ds, val_ds = build_datasets(cfg)
        grid = validate_config(cfg, train_ds.shape)
        seed_everything(cfg.run.seed)
        model = build_stage1_model(cfg, grid, train_ds.info.view_ids, train_ds.coils).to(info.device)
        seed_everything(cfg.run.seed + info.rank)
        if info.is_main:
            if train_ds.info.coils is not None:
                print(f"coils: {train_ds.info.coils.summary()}; k-space tokens carry 2 x {train_ds.coils} channels, "
                      "images are the SENSE-1 combination with the true maps", flush=True)
            print(f"data: {train_ds.info.url}  train {len(train_ds)} subjects, shape (S, T, H, W) = {train_ds.shape}, "
                  f"mask {cfg.data.mask}; {grid.num_tokens} tokens/subject of {grid.patch_dim * (train_ds.coils or 1)} "
                  f"k-space values; "
                  f"device {info.device}"
                  f" x {info.world_size}", flush=True)
            for name, sub in model.submodels().items():
                enc = sum(count_parameters(m) for m in (sub.embed, sub.pos, sub.encoder)) + sub.cls_token.numel()
                print(f"{name} MAE: {count_parameters(sub):,} parameters ({enc:,} in the encoder)", flush=True)
        return fit_model(
            cfg, model, train_ds, val_ds, info, make_optimizer_groups(model, cfg),
            clip_groups=[list(m.parameters()) for m in model.submodels().values()],
            tokens_per_sample=grid.num_tokens * len(model.submodels()),
            on_epoch_end=_png_callback(run_dir(cfg), info.device), resume=resume,
        )
    finally:
        if own_dist:
            cleanup_distributed()
