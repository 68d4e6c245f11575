"""Stage II: contrastive alignment of the k-space encoder with the image encoder.

Both encoders start from the experiment's stage-I checkpoint (their decoders are dropped). Each
gets a projector (2-layer MLP to ``proj_dim`` = 128) on its class token; the image encoder sees
the fully sampled image (every token), the k-space encoder the undersampled k-space. The loss is
:func:`kmtr.losses.contrastive_loss` (τ, λ from the config); both encoders and both projectors
are trained. Each epoch's validation adds retrieval top-1/top-5 accuracy image ↔ k-space over
the whole validation split (chance = k / N). ``optim.chunk_size`` runs each batch's forward and
backward in chunks with gradient caching (:mod:`kmtr.train.gradcache`): the same loss and
gradient, the memory of one chunk.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from kmtr.analysis.retrieval import retrieval_accuracy
from kmtr.config import TrainConfig
from kmtr.data import KSpaceDataset, prepare_batch
from kmtr.losses import contrastive_loss, cosine_matrix
from kmtr.models.heads import MLPHead
from kmtr.models.mae import ImageMAE, KSpaceMAE, count_parameters
from kmtr.train.datasets import build_datasets
from kmtr.train.distributed import DistInfo, cleanup_distributed, gather_rows, init_distributed
from kmtr.train.init import adopt_architecture, load_init, load_prefixed, resolve_init
from kmtr.train.maes import build_stage1_model, validate_config
from kmtr.train.runner import ConfigError, fit_model, param_groups, seed_everything

__all__ = ["Stage2Model", "build_stage2_model", "chunk_setting", "embed_split", "train_stage2"]


class Stage2Model(nn.Module):
    """Image and k-space encoders with projectors; ``forward(batch)`` → contrastive loss."""

    def __init__(self, image: ImageMAE, kspace: KSpaceMAE, proj_dim: int = 128, tau: float = 0.1,
                 lam: float = 0.5) -> None:
        super().__init__()
        self.image, self.kspace = image.drop_decoder(), kspace.drop_decoder()
        self.proj_image = MLPHead(image.cfg.width, image.cfg.width, proj_dim)
        self.proj_kspace = MLPHead(kspace.cfg.width, kspace.cfg.width, proj_dim)
        self.tau, self.lam = tau, lam

    def embed(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected embeddings (B, proj_dim) of the fully sampled images and the undersampled k-space."""
        z_i = self.proj_image(self.image.encode_image(batch["image"]))
        z_k = self.proj_kspace(self.kspace.encode_kspace(batch["kspace"], batch["mask"]))
        return z_i, z_k

    def forward(self, batch: dict[str, torch.Tensor], embed_only: bool = False) -> Any:
        """→ {loss, pos_cos (mean cosine of matching pairs), neg_cos (mean over non-matching pairs)},
        or with ``embed_only`` the embeddings ``embed(batch)`` (gradient caching runs them through
        the DDP wrapper: :mod:`kmtr.train.gradcache`)."""
        z_i, z_k = self.embed(batch)
        if embed_only:
            return z_i, z_k
        return self.contrast(z_i, z_k)

    def contrast(self, z_i: torch.Tensor, z_k: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss and similarity metrics of (B, proj_dim) embeddings.

        In training under DDP the embeddings of every rank are gathered first, so the loss
        contrasts the global batch (batch size × processes subjects, as the paper's batch of 256
        spread over GPUs), not each rank's share; validation (rank 0 alone) stays local.
        """
        if self.training:
            z_i, z_k = gather_rows(z_i), gather_rows(z_k)
        loss = contrastive_loss(z_i, z_k, self.tau, self.lam)
        with torch.no_grad():
            sim = cosine_matrix(z_i, z_k)
            eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
            pos, neg = sim[eye].mean(), sim[~eye].mean()
        return {"loss": loss, "pos_cos": pos, "neg_cos": neg}


def build_stage2_model(cfg: TrainConfig, shape: tuple[int, int, int, int], view_ids: tuple[int, ...],
                       state: dict[str, Any] | None, coils: int | None = None) -> Stage2Model:
    """Both encoders (from ``state``, a stage-I state dict, when given) plus fresh projectors
    (``coils``: C of a store with coils, None for a single-coil store)."""
    s1 = dataclasses.replace(cfg, stage=1, models="both")
    grid = validate_config(s1, shape)
    mae = build_stage1_model(s1, grid, view_ids, coils)

    assert mae.image is not None and mae.kspace is not None
    if state is not None:
        load_prefixed(mae.image.drop_decoder(), state, "image")
        load_prefixed(mae.kspace.drop_decoder(), state, "kspace")
    h = cfg.heads
    return Stage2Model(mae.image, mae.kspace, h.proj_dim, h.tau, h.lam)


@torch.no_grad()
def embed_split(model: Stage2Model, dataset: KSpaceDataset, device: torch.device, batch_size: int = 4,
                projected: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(N, E) image and k-space embeddings of every subject of ``dataset`` (projected, or the raw
    class tokens with ``projected=False``)."""
    was = model.training
    model.eval()
    zi, zk = [], []
    for raw in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        batch = prepare_batch(raw, device)
        if projected:
            a, b = model.embed(batch)
        else:
            a = model.image.encode_image(batch["image"])
            b = model.kspace.encode_kspace(batch["kspace"], batch["mask"])
        zi.append(a.float().cpu().numpy())
        zk.append(b.float().cpu().numpy())
    model.train(was)
    return np.concatenate(zi), np.concatenate(zk)


def chunk_setting(cfg: TrainConfig) -> int | str:
    """``optim.chunk_size`` checked: a whole number ≥ 0 (0 = no chunking) or ``"auto"`` (CUDA only).

    Raises:
        ConfigError: anything else, or ``auto`` without a CUDA device.
    """
    value = cfg.optim.chunk_size
    if isinstance(value, str) and value.strip().lower() == "auto":
        if cfg.run.device == "cpu" or not torch.cuda.is_available():
            raise ConfigError("optim.chunk_size=auto measures free GPU memory and needs a CUDA device; "
                              "give a number of subjects instead")
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"optim.chunk_size must be a whole number >= 0 (0 = off) or 'auto', not {value!r}")
    return value


def train_stage2(cfg: TrainConfig, resume: bool | str = False, dist_info: DistInfo | None = None) -> dict[str, Any]:
    """Run stage II from the experiment's stage-I checkpoint (or ``cfg.init``).

    Raises:
        ConfigError: no stage-I checkpoint, one without both MAEs, or a batch size below 2.
        StoreError: bad store, mask or split.
    """
    if cfg.data.batch_size < 2:
        raise ConfigError("stage II needs a batch size of at least 2 (the loss contrasts subjects of a batch)")
    chunk = chunk_setting(cfg)
    init = resolve_init(cfg, "stage1")
    state, init_cfg = load_init(init)
    if init_cfg.models != "both":
        raise ConfigError(f"{init} trained models={init_cfg.models!r}; stage II needs both MAEs (models=both)")
    adopt_architecture(cfg, init_cfg)
    own_dist = dist_info is None
    info = dist_info or init_distributed(cfg.run.device)
    try:
        train_ds, val_ds = build_datasets(cfg)
        if val_ds is not None and len(val_ds) < 2:
            val_ds = None  # one validation subject cannot be contrasted: no stage-II validation
        seed_everything(cfg.run.seed)
        model = build_stage2_model(cfg, train_ds.shape, train_ds.info.view_ids, state, train_ds.coils).to(info.device)
        seed_everything(cfg.run.seed + info.rank)
        if info.is_main:
            print(f"stage II from {init}: {len(train_ds)} training subjects, batch {cfg.data.batch_size}, "
                  f"{count_parameters(model):,} parameters, device {info.device} x {info.world_size}", flush=True)

        def val_metrics(m: nn.Module) -> dict[str, float]:
            if val_ds is None or len(val_ds) < 2:
                return {}
            zi, zk = embed_split(m, val_ds, info.device, cfg.data.batch_size)  # type: ignore[arg-type]
            acc = retrieval_accuracy(zi, zk)
            return {k.replace("a2b", "image2kspace").replace("b2a", "kspace2image"): v for k, v in acc.items()}

        grid_tokens = validate_config(dataclasses.replace(cfg, stage=1, models="both"), train_ds.shape).num_tokens
        return fit_model(
            cfg, model, train_ds, val_ds, info, param_groups(model, cfg.optim.lr, cfg.optim.weight_decay),
            tokens_per_sample=2 * grid_tokens, val_metrics=val_metrics, resume=resume, chunk_size=chunk,
        )
    finally:
        if own_dist:
            cleanup_distributed()
