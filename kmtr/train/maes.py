"""The configured MAEs of stage I (image and/or k-space, same sizes) and their token grid; stages
II and III build their encoders with the same functions."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from kmtr.config import MAEConfig, TrainConfig
from kmtr.errors import ConfigError
from kmtr.models.mae import ImageMAE, KSpaceMAE
from kmtr.models.tokenizer import TokenGrid

__all__ = ["Stage1Model", "build_stage1_model", "validate_config"]


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
    if a.distance_bias_models not in ("image", "kspace", "both"):
        raise ConfigError(f"arch.distance_bias_models must be image, kspace or both, not {a.distance_bias_models!r}")
    if not 0.0 <= a.mask_ratio < 1.0:
        raise ConfigError(f"mask_ratio must be in [0, 1), not {a.mask_ratio}")
    if cfg.data.batch_size < 1:
        raise ConfigError("batch_size must be ≥ 1")
    try:
        return TokenGrid(*shape, patch=tuple(a.patch))  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"{exc} (frames={cfg.data.frames}; set --frames or --patch)") from exc


def build_stage1_model(cfg: TrainConfig, grid: TokenGrid, view_ids: tuple[int, ...],
                       coils: int | None = None) -> Stage1Model:
    """The configured MAEs (same architecture sizes for both); ``coils`` = C for a store with coils
    (the k-space MAE then reads 2·C channels), None for a single-coil store."""
    a = cfg.arch
    sizes = {f.name: getattr(a, f.name) for f in dataclasses.fields(MAEConfig)}
    mcfg = MAEConfig(**{**sizes, "patch": tuple(a.patch)})
    icfg = dataclasses.replace(mcfg, distance_bias=a.distance_bias and a.distance_bias_models in ("image", "both"))
    kcfg = dataclasses.replace(mcfg, distance_bias=a.distance_bias and a.distance_bias_models in ("kspace", "both"))
    image = ImageMAE(grid, view_ids, icfg, a.mask_ratio, a.image_magnitude) if cfg.models in ("image", "both") else None
    kspace = (KSpaceMAE(grid, view_ids, kcfg, a.kspace_rel_weight, a.kspace_rel_eps, a.kspace_rel_to, a.signed_log_c,
                        a.kspace_magnitude_c, coils)
              if cfg.models in ("kspace", "both") else None)
    return Stage1Model(image, kspace)
