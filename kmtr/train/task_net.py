"""The stage-III networks: :class:`KSpaceTaskNet` (the k-space encoder of stage I or II with the
task's head) and :class:`TaskModel` (any method's network with its task's loss and prediction).
The task is a :class:`kmtr.tasks.base.Task` object passed in (this module does not look tasks up)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kmtr.config import TaskConfig
from kmtr.errors import ConfigError
from kmtr.models.heads import AttentionPool
from kmtr.models.mae import KSpaceMAE
from kmtr.models.spectrum import KSpaceSpectrum

__all__ = ["POOLS", "KSpaceTaskNet", "TaskModel"]

#: ``heads.pool``: what the regression / classification heads read
POOLS = ("mean", "cls", "attention")


class KSpaceTaskNet(nn.Module):
    """The k-space encoder (stage I or II) with a task head; input undersampled k-space only.

    Regression and classification heads read the encoder's class token (``heads.pool = cls``, the
    representation stage II aligns), the LayerNorm'd mean of its visible output tokens (``mean``,
    MAE's fine-tuning default) or an attention pooling of its tokens (``attention``,
    :class:`kmtr.models.heads.AttentionPool`). Only for the method ``kmtr_spectrum`` is this
    concatenated with the standardised radial power spectrum of the same undersampled k-space
    (:class:`kmtr.models.spectrum.KSpaceSpectrum`, ``rings`` > 0).

    ``forward(kspace, mask)`` with kspace (B, S, T, H, W) complex (normalised, fully sampled: it is
    undersampled here by ``mask`` (B, S, T, W)) returns (B, out) for regression/classification,
    (B, S, C, T, H, W) logits for segmentation, a complex (B, S, T, H, W) image for reconstruction.
    """

    #: ``forward`` takes ``views``: the segmentation decoder decodes only those views
    selects_views = True

    def __init__(self, encoder: KSpaceMAE, task: Any, out_dim: int, heads: Any, rings: int = 0) -> None:
        super().__init__()
        self.encoder, self.task, self.task_def = encoder.drop_decoder(), task.name, task
        width, grid = encoder.cfg.width, encoder.grid
        if heads.pool not in POOLS:
            raise ConfigError(f"heads.pool must be mean, cls or attention, not {heads.pool!r}")
        self.pool = heads.pool
        pooled = task.pooled
        self.pool_norm = nn.LayerNorm(width) if pooled and heads.pool == "mean" else None
        self.attn_pool = AttentionPool(width, encoder.cfg.heads) if pooled and heads.pool == "attention" else None
        self.spectrum = KSpaceSpectrum((grid.s, grid.t, grid.h, grid.w), rings) if pooled and rings else None
        in_dim = width + (self.spectrum.n_features if self.spectrum is not None else 0)
        self.head = task.build_head(self, encoder, in_dim, out_dim, heads)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """The task's raw output; ``views`` (B, S) bool, segmentation only: decode only these views
        ((n, C, T, H, W) logits; :meth:`kmtr.tasks.segmentation.Segmentation.training_outputs`)."""
        if views is None:
            return self.task_def.run_head(self, kspace, mask)
        return self.task_def.run_head(self, kspace, mask, views)

    def pooled(self, latent: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor:
        """(B, 1 + Lk, D) encoder output → (B, D): the class token, the LayerNorm'd mean of the
        visible tokens (MAE's global pooling for fine-tuning), or their attention pooling."""
        if self.pool == "cls":
            return latent[:, 0]
        tokens = latent[:, 1:]
        if self.attn_pool is not None:
            return self.attn_pool(tokens, None if key_valid is None else key_valid[:, 1:])
        if key_valid is None:
            mean = tokens.mean(dim=1)
        else:
            w = key_valid[:, 1:, None].to(tokens.dtype)
            mean = (tokens * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        assert self.pool_norm is not None
        return self.pool_norm(mean)


class TaskModel(nn.Module):
    """A network for one task plus its loss and target handling (statistics travel in buffers).

    ``forward(batch)`` → ``{"loss": …}`` for :class:`kmtr.train.loop.Trainer`;
    :meth:`predict` → the task's outputs in reporting form: regression (B, P) in original units;
    classification (B, D) probabilities; segmentation (B, S, T, H, W) uint8 labels;
    reconstruction (B, S, T, H, W) complex image. ``heads`` is the run's ``cfg.heads``
    (:class:`kmtr.config.TaskConfig`; the task's loss settings, e.g. ``seg_dice_weight`` and
    ``seg_dice_frames``); None = its defaults.
    """

    def __init__(self, net: nn.Module, task: Any, targets: dict[str, Any], heads: Any = None) -> None:
        super().__init__()
        self.net, self.task, self.task_def = net, task.name, task
        task.register_targets(self, targets, TaskConfig() if heads is None else heads)

    def outputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The network's output; networks with ``reads_coil_maps`` (the image and k-space CNN
        baselines) also get the batch's coil maps on a store with coils (SENSE-1 images)."""
        if "maps" in batch and getattr(self.net, "reads_coil_maps", False):
            return self.net(batch["kspace"], batch["mask"], batch["maps"])
        return self.net(batch["kspace"], batch["mask"])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self.task_def.loss(self, self.task_def.training_outputs(self, batch), batch)}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.task_def.predict(self, self.task_def.prediction_outputs(self, batch))
