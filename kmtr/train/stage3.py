"""Stage III: fine-tuning from undersampled k-space only, for one task, and the baselines.

Tasks (``cfg.task``):

* ``regression`` — the store's phenotypes (N, P = 18); targets standardised with training-split
  means and SDs (kept in the model), missing values (NaN) left out of the loss
  (:func:`kmtr.losses.masked_mse`); predictions are reported in original units.
* ``classification`` — one logit per selected disease (``heads.diseases``); unknown labels (−1)
  left out; class imbalance handled with a positive-class weight n_neg / n_pos from the training
  split (``heads.balance = weighted``); the decision threshold is chosen on validation at
  evaluation time.
* ``segmentation`` — (B, S, 6, T, H, W) logits, Dice + cross-entropy (MONAI ``DiceCELoss``) over
  every view and frame that has a ground truth (``subjects/seg_present``; the 3ch view has none).
* ``reconstruction`` — the complex image (B, S, T, H, W) from the k-space representation by a
  transformer decoder (no inverse FFT in the model); loss = MSE on real and imaginary parts of the
  per-subject normalised image.

Methods (``cfg.method``), all reading the same store, splits and labels:

* ``kmtr`` — the stage-II k-space encoder + a task head (the paper's model): the regression and
  classification heads read the stage-II-aligned class token (``heads.pool = cls``; ``mean`` and
  ``attention`` are options);
* ``mae`` — the stage-I k-space encoder + the same head (no contrastive alignment);
* ``spectrum_ridge`` — no encoder: scikit-learn ridge / logistic regression on the radial power
  spectrum of the undersampled k-space (:mod:`kmtr.train.spectrum_ridge`);
* ``kmtr_spectrum`` — k-MTR whose heads also read that spectrum (not the paper's method; never a
  default);
* ``resnet50`` / ``resnet50_u`` / ``resnet50_k`` — ResNet-50 on fully sampled images,
  zero-filled undersampled images, zero-filled k-space (regression, classification);
* ``unet`` / ``unet_u`` — U-Net on fully sampled / zero-filled undersampled images (segmentation);
* ``nnunet`` / ``nnunet_u`` — nnU-Net (the ``nnunet`` extra) on fully sampled / zero-filled
  undersampled magnitude images, run by nnU-Net itself (:mod:`kmtr.nnunet`; no torch model here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from kmtr.config import TrainConfig
from kmtr.data import KSpaceDataset
from kmtr.losses import masked_bce, masked_mse
from kmtr.models.heads import AttentionPool, MLPHead, MultiHead
from kmtr.models.mae import KSpaceMAE, TokenDecoder, count_parameters
from kmtr.models.segmentation import SegmentationDecoder
from kmtr.models.spectrum import KSpaceSpectrum, spectrum_statistics
from kmtr.models.tokenizer import unpatchify
from kmtr.train.distributed import DistInfo, cleanup_distributed, init_distributed
from kmtr.train.init import adopt_architecture, encoder_prefix, load_init, load_prefixed, resolve_init
from kmtr.train.runner import ConfigError, fit_model, param_groups, seed_everything
from kmtr.train.stage1 import build_datasets, build_stage1_model, validate_config

__all__ = [
    "TASKS", "METHODS", "MethodSpec", "method_spec", "SPECTRUM_RINGS", "spectrum_rings", "KSpaceTaskNet", "TaskModel",
    "task_targets", "build_task_model", "train_stage3",
]

TASKS = ("regression", "classification", "segmentation", "reconstruction")
class MethodSpec(NamedTuple):
    """One stage-III method: what it reads, which tasks it does, where it starts, and what it is
    (the description :func:`kmtr.eval.benchmark.method_table` prints beside every comparison)."""

    input: str  # image | image_under | kspace_under
    tasks: tuple[str, ...]
    init_from: str  # the stage whose checkpoint it starts from, or "" (from scratch)
    label: str = ""  # name in tables
    pretraining: str = "none"
    features: str = ""  # what the head reads
    recipe: str = ""  # how it is fitted


_FROM_SCRATCH = "trained from scratch, AdamW + warm-up + cosine"
#: method → :class:`MethodSpec` (a plain ``(input, tasks, init_from)`` tuple also works: see :func:`method_spec`)
METHODS: dict[str, MethodSpec] = {
    "kmtr": MethodSpec(
        "kspace_under", TASKS, "stage2", "k-MTR", "stage I k-space MAE + stage II contrastive alignment with images",
        "encoder's class token (heads.pool = cls) / encoder features (segmentation, reconstruction)",
        "fine-tuned end to end, AdamW + warm-up + cosine"),
    "mae": MethodSpec(
        "kspace_under", TASKS, "stage1", "MAE w/o stage II", "stage I k-space MAE only (no alignment)",
        "as k-MTR", "as k-MTR"),
    "resnet50": MethodSpec(
        "image", ("regression", "classification"), "", "ResNet-50 (full images)", "none (from scratch)",
        "3-D ResNet-50 over (T, H, W) on fully sampled magnitude images (one channel per view)",
        _FROM_SCRATCH),
    "resnet50_u": MethodSpec(
        "image_under", ("regression", "classification"), "", "ResNet-50^u", "none (from scratch)",
        "3-D ResNet-50 on zero-filled undersampled magnitude images (one channel per view)",
        _FROM_SCRATCH),
    "resnet50_k": MethodSpec(
        "kspace_under", ("regression", "classification"), "", "ResNet-50^k", "none (from scratch)",
        "3-D ResNet-50 on zero-filled undersampled k-space (real, imaginary per view)",
        _FROM_SCRATCH),
    "unet": MethodSpec(
        "image", ("segmentation",), "", "U-Net (full images)", "none (from scratch)",
        "MONAI 2-D U-Net per view and frame on fully sampled magnitude images",
        _FROM_SCRATCH),
    "unet_u": MethodSpec(
        "image_under", ("segmentation",), "", "U-Net^u", "none (from scratch)",
        "MONAI 2-D U-Net per view and frame on zero-filled undersampled magnitude images",
        _FROM_SCRATCH),
    "nnunet": MethodSpec(
        "image", ("segmentation",), "", "nnU-Net (full images)", "none (from scratch)",
        "nnU-Net v2's self-configured 2-D U-Net per view and frame on fully sampled magnitude images",
        "nnU-Net's own planning, preprocessing, training (heads.nnunet_trainer) and inference (kmtr/nnunet)"),
    "nnunet_u": MethodSpec(
        "image_under", ("segmentation",), "", "nnU-Net^u", "none (from scratch)",
        "nnU-Net v2's self-configured 2-D U-Net per view and frame on zero-filled undersampled magnitude images",
        "nnU-Net's own planning, preprocessing, training (heads.nnunet_trainer) and inference (kmtr/nnunet)"),
    "spectrum_ridge": MethodSpec(
        "kspace_under", ("regression", "classification"), "", "spectrum ridge", "none (no encoder)",
        "hand-crafted radial power spectrum of the undersampled k-space (kmtr/models/spectrum.py)",
        "scikit-learn ridge (regression) / logistic regression (classification), regularisation chosen on "
        "the validation split"),
    "kmtr_spectrum": MethodSpec(
        "kspace_under", ("regression", "classification"), "stage2", "k-MTR + spectrum",
        "as k-MTR", "k-MTR's class token concatenated with the standardised radial power spectrum (not the paper)",
        "as k-MTR"),
}
#: rings of the radial spectrum read by the spectrum methods when ``heads.spectrum_rings`` is 0
SPECTRUM_RINGS = 16


def method_spec(name: str) -> MethodSpec:
    """The registry entry of ``name`` as a :class:`MethodSpec`.

    Raises:
        ConfigError: unknown method.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    entry = METHODS[name]
    return entry if isinstance(entry, MethodSpec) else MethodSpec(*entry)


def spectrum_rings(cfg: TrainConfig) -> int:
    """Rings of the radial spectrum this run's method reads (0 = none: k-MTR, the MAE and the image
    baselines never read it, whatever ``heads.spectrum_rings`` says)."""
    if cfg.method not in ("spectrum_ridge", "kmtr_spectrum"):
        return 0
    rings = cfg.heads.spectrum_rings or SPECTRUM_RINGS
    if rings < 2:
        raise ConfigError(f"heads.spectrum_rings must be 0 (the default, {SPECTRUM_RINGS}) or at least 2, not {rings}")
    return rings


NUM_CLASSES = 6


def seg_layers(depth: int, n: int) -> list[int]:
    """``n`` encoder depths spread evenly up to ``depth`` (1-based, last = depth), e.g. 6, 4 → [2, 3, 5, 6]."""
    n = max(1, min(n, depth))
    return sorted({max(1, round(depth * (i + 1) / n)) for i in range(n)})


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

    def __init__(self, encoder: KSpaceMAE, task: str, out_dim: int, cfg: TrainConfig, rings: int = 0) -> None:
        super().__init__()
        self.encoder, self.task = encoder.drop_decoder(), task
        width, grid = encoder.cfg.width, encoder.grid
        h = cfg.heads
        if h.pool not in ("mean", "cls", "attention"):
            raise ConfigError(f"heads.pool must be mean, cls or attention, not {h.pool!r}")
        self.pool = h.pool
        pooled_task = task in ("regression", "classification")
        self.pool_norm = nn.LayerNorm(width) if pooled_task and h.pool == "mean" else None
        self.attn_pool = AttentionPool(width, encoder.cfg.heads) if pooled_task and h.pool == "attention" else None
        self.spectrum = (KSpaceSpectrum((grid.s, grid.t, grid.h, grid.w), rings)
                         if pooled_task and rings else None)
        in_dim = width + (self.spectrum.n_features if self.spectrum is not None else 0)
        if task == "regression":
            self.head: nn.Module = MLPHead(in_dim, h.head_hidden, out_dim)
        elif task == "classification":
            self.head = MultiHead(in_dim, h.head_hidden, out_dim)
        elif task == "segmentation":
            self.layers = seg_layers(encoder.cfg.depth, h.seg_features)
            self.head = SegmentationDecoder(grid, width, len(self.layers), h.seg_width, out_dim, h.seg_temporal_kernel)
        elif task == "reconstruction":
            view_ids = tuple(int(v) for v in encoder.pos.view_ids.tolist())
            self.head = TokenDecoder(grid, view_ids, encoder.cfg, grid.patch_dim)
        else:
            raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        tokens, keep = enc.encoder_inputs(kspace, mask)
        if self.task in ("regression", "classification"):
            features = self.pooled(*enc.encode(tokens, keep))
            if self.spectrum is not None:
                features = torch.cat([features, self.spectrum(kspace, mask).to(features.dtype)], dim=1)
            return self.head(features)
        if self.task == "segmentation":
            _, full, feats = enc.encode_features(tokens, keep, self.layers[:-1])
            return self.head([*feats, full], keep)
        latent, _ = enc.encode(tokens, keep)
        values = self.head(latent, keep)
        return torch.view_as_complex(unpatchify(values.float(), enc.grid).contiguous())


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
    :meth:`predict` → the task's outputs in reporting form.
    """

    def __init__(self, net: nn.Module, task: str, targets: dict[str, Any], dice_weight: float = 1.0) -> None:
        super().__init__()
        self.net, self.task = net, task
        if task == "regression":
            self.register_buffer("target_mean", torch.as_tensor(targets["mean"], dtype=torch.float32))
            self.register_buffer("target_std", torch.as_tensor(targets["std"], dtype=torch.float32))
        if task == "classification":
            self.register_buffer("columns", torch.as_tensor(targets["columns"], dtype=torch.long))
            pw = targets.get("pos_weight")
            self.register_buffer("pos_weight", torch.as_tensor(pw, dtype=torch.float32) if pw is not None else None)
        if task == "segmentation":
            from monai.losses import DiceCELoss

            self.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=dice_weight)

    def outputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["kspace"], batch["mask"])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.outputs(batch)
        if self.task == "regression":
            z = (batch["phenotypes"].float() - self.target_mean) / self.target_std
            return {"loss": masked_mse(out, z)}
        if self.task == "classification":
            labels = batch["diseases"][:, self.columns]
            return {"loss": masked_bce(out, labels, self.pos_weight)}
        if self.task == "segmentation":
            present = batch["seg_present"].bool()
            logits = out[present].float()  # (n, C, T, H, W)
            target = batch["seg"][present][:, None].long()
            if logits.shape[0] == 0:
                return {"loss": out.sum() * 0.0}
            return {"loss": self.seg_loss(logits, target)}
        err = torch.view_as_real(out - batch["image"].to(out.dtype))
        return {"loss": err.pow(2).mean()}

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Regression: (B, P) in original units; classification: (B, D) probabilities;
        segmentation: (B, S, T, H, W) uint8 labels; reconstruction: (B, S, T, H, W) complex image."""
        out = self.outputs(batch)
        if self.task == "regression":
            return out.float() * self.target_std + self.target_mean
        if self.task == "classification":
            return torch.sigmoid(out.float())
        if self.task == "segmentation":
            return out.argmax(dim=2).to(torch.uint8)
        return out


def task_targets(cfg: TrainConfig, train_ds: KSpaceDataset) -> dict[str, Any]:
    """Check the store has the task's labels and compute the training-split statistics.

    Returns ``{"out_dim", "names", …}``: regression ``mean``/``std`` (P,), classification the
    selected ``columns`` and ``pos_weight``.

    Raises:
        ConfigError: labels absent from the store, an unknown disease name, a selected disease with
        no positive (or no negative) case in the training split, a phenotype with no value at all.
    """
    info, task = train_ds.info, cfg.task
    if task == "regression":
        if not info.has_phenotypes:
            raise ConfigError(f"task regression: {info.url} has no labels/phenotypes; build the store with labels "
                              f"(`kspace-sim build --labels` from subjects with seg_sa / seg_la_* segmentations)")
        y = train_ds.split_labels("phenotypes").astype(np.float64)
        n = np.isfinite(y).sum(axis=0)
        empty = [info.phenotype_columns[j] if j < len(info.phenotype_columns) else str(j) for j in np.flatnonzero(n == 0)]
        if empty:
            raise ConfigError(f"task regression: no training subject has a value for {', '.join(empty)}")
        mean = np.nanmean(y, axis=0)
        std = np.nanstd(y, axis=0)
        std = np.where(std > 0, std, 1.0)
        return {"out_dim": y.shape[1], "names": list(info.phenotype_columns), "units": list(info.phenotype_units),
                "mean": mean.tolist(), "std": std.tolist()}
    if task == "classification":
        if not info.has_diseases:
            raise ConfigError(f"task classification: {info.url} has no labels/diseases; build the store with a "
                              f"participant table (`kspace-sim build --labels --table ukbNNNN.csv`)")
        cols = list(info.disease_columns)
        wanted = cols if cfg.heads.diseases.strip() == "all" else [c.strip() for c in cfg.heads.diseases.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in cols]
        if unknown:
            raise ConfigError(f"task classification: no disease column {unknown} in the store (it has {cols})")
        idx = [cols.index(c) for c in wanted]
        y = train_ds.split_labels("diseases")[:, idx].astype(np.int64)
        pos, neg = (y == 1).sum(axis=0), (y == 0).sum(axis=0)
        bad = [f"{c} ({p} positive, {q} negative)" for c, p, q in zip(wanted, pos, neg) if p == 0 or q == 0]
        if bad:
            raise ConfigError(f"task classification: the training split has no positive or no negative case for "
                              f"{'; '.join(bad)}; choose other diseases with --diseases")
        pw = (neg / pos).tolist() if cfg.heads.balance == "weighted" else None
        if cfg.heads.balance not in ("weighted", "none"):
            raise ConfigError(f"heads.balance must be weighted or none, not {cfg.heads.balance!r}")
        return {"out_dim": len(idx), "names": wanted, "columns": idx, "pos_weight": pw,
                "train_positives": pos.tolist(), "train_negatives": neg.tolist()}
    if task == "segmentation":
        if not info.has_seg:
            raise ConfigError(f"task segmentation: {info.url} has no 'seg' array (built without segmentations); "
                              f"rebuild it from subjects with seg_*.nii.gz files (`kspace-sim build --seg DIR` for "
                              f"DICOM zips)")
        return {"out_dim": NUM_CLASSES, "names": [info.label_map.get(str(i), str(i)) for i in range(NUM_CLASSES)]}
    if task == "reconstruction":
        return {"out_dim": 0, "names": []}
    raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def build_task_model(
    cfg: TrainConfig, shape: tuple[int, int, int, int], view_ids: tuple[int, ...], targets: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> TaskModel:
    """The method's network for the task (encoder weights from ``state`` for kmtr / mae)."""
    spec = method_spec(cfg.method)
    kind, tasks = spec.input, spec.tasks
    if cfg.task not in tasks:
        raise ConfigError(f"method {cfg.method} does not do {cfg.task} (it does {', '.join(tasks)})")
    h = cfg.heads
    out_dim = targets["out_dim"]
    if cfg.method == "spectrum_ridge":
        from kmtr.train.spectrum_ridge import SpectrumLinear

        net: nn.Module = SpectrumLinear(shape, spectrum_rings(cfg), out_dim)
    elif cfg.method in ("kmtr", "mae", "kmtr_spectrum"):
        s1 = dataclasses.replace(cfg, stage=1, models="kspace")
        mae = build_stage1_model(s1, validate_config(s1, shape), view_ids).kspace
        assert mae is not None
        mae.drop_decoder()
        if state is not None:
            load_prefixed(mae, state, encoder_prefix(state))
        net = KSpaceTaskNet(mae, cfg.task, out_dim, cfg, spectrum_rings(cfg))
    elif cfg.method.startswith("resnet50"):
        from kmtr.models.baselines import ResNetBaseline

        net = ResNetBaseline(kind, shape[0], out_dim, width=h.resnet_width, signed_log_c=cfg.arch.signed_log_c,
                             magnitude=h.image_magnitude)
    elif cfg.method in ("unet", "unet_u"):
        from kmtr.models.baselines import UNetBaseline

        net = UNetBaseline(kind, NUM_CLASSES, channels=tuple(h.unet_channels), magnitude=h.image_magnitude)
    else:  # nnunet / nnunet_u: nnU-Net trains and predicts itself (kmtr.nnunet)
        raise ConfigError(f"method {cfg.method} has no kmtr model; it is trained and evaluated by kmtr.nnunet")
    return TaskModel(net, cfg.task, targets, h.seg_dice_weight)


def train_stage3(cfg: TrainConfig, resume: bool = False, dist_info: DistInfo | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.method`` on ``cfg.task``; checks labels and the starting checkpoint first.

    Raises:
        ConfigError: unknown task/method, labels absent, no positive case, no checkpoint to start from.
        StoreError: bad store, mask or split.
    """
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task {cfg.task!r}; choose from {', '.join(TASKS)}")
    spec = method_spec(cfg.method)
    if cfg.task not in spec.tasks:
        raise ConfigError(f"method {cfg.method} does not do {cfg.task} (it does {', '.join(spec.tasks)})")
    if cfg.method == "spectrum_ridge":
        from kmtr.train.spectrum_ridge import fit_spectrum_ridge

        return fit_spectrum_ridge(cfg, resume)
    if cfg.method in ("nnunet", "nnunet_u"):
        from kmtr.nnunet.run import train_nnunet

        return train_nnunet(cfg, resume)
    previous = spec.init_from
    state = None
    init = None
    if previous and cfg.init != "scratch":
        init = resolve_init(cfg, previous)
        state, init_cfg = load_init(init)
        adopt_architecture(cfg, init_cfg)
    own_dist = dist_info is None
    info = dist_info or init_distributed(cfg.run.device)
    try:
        train_ds, val_ds = build_datasets(cfg)
        targets = task_targets(cfg, train_ds)
        seed_everything(cfg.run.seed)
        model = build_task_model(cfg, train_ds.shape, train_ds.info.view_ids, targets, state).to(info.device)
        seed_everything(cfg.run.seed + info.rank)
        if info.is_main:
            start = f"from {init}" if init else "from scratch"
            print(f"stage III {cfg.method} / {cfg.task} {start}: {len(train_ds)} training subjects, "
                  f"{count_parameters(model):,} parameters, batch {cfg.data.batch_size}, lr {cfg.optim.lr:g}, "
                  f"device {info.device} x {info.world_size}", flush=True)
        if getattr(model.net, "spectrum", None) is not None:
            model.net.spectrum.set_statistics(*spectrum_statistics(
                model.net.spectrum, (train_ds.unaugmented(i) for i in range(len(train_ds)))))
        tokens = 0  # patch tokens per subject for the tokens/s figure (the image baselines have none)
        if cfg.method in ("kmtr", "mae", "kmtr_spectrum"):
            tokens = validate_config(dataclasses.replace(cfg, stage=1, models="kspace"), train_ds.shape).num_tokens
        return fit_model(
            cfg, model, train_ds, val_ds, info, param_groups(model, cfg.optim.lr, cfg.optim.weight_decay),
            tokens_per_sample=tokens, resume=resume, extra_state={"targets": targets},
        )
    finally:
        if own_dist:
            cleanup_distributed()
