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

from kmtr.config import TrainConfig
from kmtr.data import AugmentConfig, KSpaceDataset, prepare_batch
from kmtr.fft import ifft2c
from kmtr.models.mae import ImageMAE, KSpaceMAE, MAEConfig, count_parameters
from kmtr.models.tokenizer import TokenGrid
from kmtr.train.distributed import DistInfo, cleanup_distributed, init_distributed
from kmtr.train.runner import ConfigError, fit_model, param_groups, run_dir, seed_everything
from kmtr.viz import save_reconstruction_png

__all__ = [
    "ConfigError", "Stage1Model", "validate_config", "build_datasets", "build_stage1_model", "make_optimizer_groups",
    "train_stage1",
]


class Stage1Model(nn.Module):
    """Holds the image MAE and/or the k-space MAE; ``forward(batch)`` sums their losses."""

    def __init__(self, image: ImageMAE | None, kspace: KSpaceMAE | None) -> None:
        super().__init__()
        if image is None and kspace is None:
            raise ConfigError("stage I needs at least one of the image / k-space MAEs")
        self.image, self.kspace = image, kspace

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch from :func:`kmtr.data.prepare_batch` → scalar losses (``loss`` = their sum)."""
        out: dict[str, torch.Tensor] = {}
        total = None
        if self.image is not None:
            o = self.image(batch["image"])
            out["image_loss"] = o["loss"]
            total = o["loss"]
        if self.kspace is not None:
            o = self.kspace(batch["kspace"], batch["mask"])
            out.update(kspace_loss=o["loss"], kspace_mse=o["mse"], kspace_rel=o["rel"])
            total = o["loss"] if total is None else total + o["loss"]
        out["loss"] = total
        return out

    def submodels(self) -> dict[str, nn.Module]:
        return {k: m for k, m in (("image", self.image), ("kspace", self.kspace)) if m is not None}


def validate_config(cfg: TrainConfig, shape: tuple[int, int, int, int]) -> TokenGrid:
    """Check model settings against the data shape (S, T', H, W); returns the token grid.

    Raises:
        ConfigError: bad stage/models value, patch not dividing the data, width/heads mismatch …
    """
    if cfg.stage != 1:
        raise ConfigError(f"stage {cfg.stage} is not implemented here; only stage 1")
    if cfg.models not in ("image", "kspace", "both"):
        raise ConfigError(f"models must be image, kspace or both, not {cfg.models!r}")
    a = cfg.arch
    for w, h, what in ((a.width, a.heads, "width/heads"), (a.dec_width, a.dec_heads, "dec_width/dec_heads")):
        if h < 1 or w % h:
            raise ConfigError(f"{what} = {w}/{h}: the width must be divisible by the head count")
    if not 0.0 <= a.mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio must be in [0, 1), not {a.mask_ratio}")
    if cfg.data.batch_size < 1:
        raise ConfigError("batch_size must be ≥ 1")
    try:
        return TokenGrid(*shape, patch=tuple(a.patch))  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"{exc} (frames={cfg.data.frames}; set --frames or --patch)") from exc


def build_datasets(cfg: TrainConfig) -> tuple[KSpaceDataset, KSpaceDataset | None]:
    """Train (augmented) and validation datasets; raises StoreError early on bad input."""
    d = cfg.data
    if not d.data:
        raise ConfigError("no data given (--data STORE | URL | MANIFEST)")
    aug = AugmentConfig(enabled=d.augment, flip_p=d.flip_p, max_angle=d.max_angle, phase_amplitude=d.phase_amplitude,
                        seed=cfg.run.seed)
    train = KSpaceDataset(d.data, d.train_split, d.mask, d.frames, aug, cache=d.cache)
    val = KSpaceDataset(d.data, d.val_split, d.mask, d.frames, None, cache=d.cache) if d.val_split else None
    return train, val


def build_stage1_model(cfg: TrainConfig, grid: TokenGrid, view_ids: tuple[int, ...]) -> Stage1Model:
    """The configured MAEs (same architecture sizes for both)."""
    a = cfg.arch
    mcfg = MAEConfig(
        patch=tuple(a.patch), width=a.width, depth=a.depth, heads=a.heads,  # type: ignore[arg-type]
        dec_width=a.dec_width, dec_depth=a.dec_depth, dec_heads=a.dec_heads, mlp_ratio=a.mlp_ratio,
        grad_checkpoint=a.grad_checkpoint,
    )
    image = ImageMAE(grid, view_ids, mcfg, a.mask_ratio, a.image_magnitude) if cfg.models in ("image", "both") else None
    kspace = (KSpaceMAE(grid, view_ids, mcfg, a.kspace_rel_weight, a.kspace_rel_eps, a.kspace_rel_to, a.signed_log_c,
                        a.kspace_magnitude_c)
              if cfg.models in ("kspace", "both") else None)
    return Stage1Model(image, kspace)


def make_optimizer_groups(model: Stage1Model, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups with per-model learning rates; no weight decay on biases, norms, tokens and codes."""
    lrs = {"image": cfg.optim.lr_image, "kspace": cfg.optim.lr_kspace}
    return [g for name, sub in model.submodels().items() for g in param_groups(sub, lrs[name], cfg.optim.weight_decay)]


def _png_callback(run_dir: Path, device: torch.device) -> Any:
    def callback(epoch: int, model: nn.Module, raw: dict[str, torch.Tensor]) -> None:
        assert isinstance(model, Stage1Model)
        batch = prepare_batch({k: v[:1] for k, v in raw.items()}, device)
        s_last = batch["kspace"].shape[1] - 1
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
                imgs = {k: ifft2c(v) for k, v in rec.items()}
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
        model = build_stage1_model(cfg, grid, train_ds.info.view_ids).to(info.device)
        seed_everything(cfg.run.seed + info.rank)
        if info.is_main:
            print(f"data: {train_ds.info.url}  train {len(train_ds)} subjects, shape (S, T, H, W) = {train_ds.shape}, "
                  f"mask {cfg.data.mask}; {grid.num_tokens} tokens/subject of {grid.patch_dim} values; "
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
