"""Stage III: fine-tuning from undersampled k-space only, for one task, and the baselines.

A layer above :mod:`kmtr.train` and the method registry :mod:`kmtr.methods` (which builds each
method from the training machinery and :mod:`kmtr.nnunet`): it trains whichever registered method
``cfg.method`` names.

Tasks (``cfg.task``, one class each in :mod:`kmtr.tasks`):

* ``regression`` — the store's phenotypes (N, P = 18); targets standardised with training-split
  means and SDs (kept in the model), missing values (NaN) left out of the loss
  (:func:`kmtr.losses.masked_mse`); predictions are reported in original units.
* ``classification`` — one logit per selected disease (``heads.diseases``); unknown labels (−1)
  left out; class imbalance handled with a positive-class weight n_neg / n_pos from the training
  split (``heads.balance = weighted``); the decision threshold is chosen on validation at
  evaluation time.
* ``segmentation`` — (B, S, 6, T, H, W) logits, Dice + cross-entropy (MONAI ``DiceCELoss``) over
  every view and frame that has a ground truth (``subjects/seg_present``; the 3ch view has none; the
  k-space encoder's decoder decodes only those views in training, each view being decoded on its own);
  the Dice term per view over its frames, or per 2-D frame with ``heads.seg_dice_frames``; with
  ``heads.seg_tta`` predictions average the class probabilities over the 4 in-plane mirrorings.
* ``reconstruction`` — the complex image (B, S, T, H, W): a transformer decoder like the stage-I
  k-space decoder predicts every token's fully sampled k-space patch, the image is its centred
  inverse FFT; loss = MSE on real and imaginary parts of the per-subject normalised image.

Methods (``cfg.method``, registered in :mod:`kmtr.methods`), all reading the same store, splits and labels:

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
from typing import Any

from kmtr.config import TrainConfig
from kmtr.methods import (
    METHODS,
    SPECTRUM_RINGS,
    MethodSpec,
    build_task_model,
    check_method_does,
    check_reads_coils,
    method_spec,
    spectrum_rings,
)
from kmtr.models.mae import count_parameters
from kmtr.models.spectrum import spectrum_statistics
from kmtr.store import store_coils
from kmtr.tasks import TASKS, get_task
from kmtr.tasks.segmentation import NUM_CLASSES, seg_layers
from kmtr.train.datasets import build_datasets
from kmtr.train.distributed import DistInfo, cleanup_distributed, init_distributed
from kmtr.train.init import adopt_architecture, load_init, resolve_init
from kmtr.train.maes import validate_config
from kmtr.train.runner import fit_model, param_groups, seed_everything
from kmtr.train.spectrum_ridge import split_features
from kmtr.train.task_net import KSpaceTaskNet, TaskModel

__all__ = [
    "TASKS", "METHODS", "MethodSpec", "method_spec", "SPECTRUM_RINGS", "spectrum_rings", "KSpaceTaskNet", "TaskModel",
    "NUM_CLASSES", "seg_layers", "task_targets", "build_task_model", "train_stage3",
]


def task_targets(cfg: TrainConfig, train_ds: Any) -> dict[str, Any]:
    """Check the store has the task's labels and compute the training-split statistics
    (:meth:`kmtr.tasks.base.Task.targets`): ``{"out_dim", "names", …}``.

    Raises:
        ConfigError: unknown task, labels absent from the store, an unknown disease name, a selected
        disease with no positive (or no negative) case in the training split, a phenotype with no value.
    """
    return get_task(cfg.task).targets(cfg, train_ds)


def train_stage3(cfg: TrainConfig, resume: bool = False, dist_info: DistInfo | None = None) -> dict[str, Any]:
    """Fine-tune ``cfg.method`` on ``cfg.task``; checks labels and the starting checkpoint first.

    Raises:
        ConfigError: unknown task/method, labels absent, no positive case, no checkpoint to start from.
        StoreError: bad store, mask or split.
    """
    spec, task = check_method_does(cfg)
    if spec.fit is not None:  # closed-form fits, nnU-Net: the method trains itself
        if not spec.multicoil and cfg.data.data:
            check_reads_coils(cfg.method, store_coils(cfg.data.data))
        return spec.fit(cfg, resume)
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
        targets = task.targets(cfg, train_ds)
        seed_everything(cfg.run.seed)
        model = build_task_model(cfg, train_ds.shape, train_ds.info.view_ids, targets, state,
                                 train_ds.coils).to(info.device)
        seed_everything(cfg.run.seed + info.rank)
        if info.is_main:
            start = f"from {init}" if init else "from scratch"
            print(f"stage III {cfg.method} / {cfg.task} {start}: {len(train_ds)} training subjects, "
                  f"{count_parameters(model):,} parameters, batch {cfg.data.batch_size}, lr {cfg.optim.lr:g}, "
                  f"device {info.device} x {info.world_size}", flush=True)
        if getattr(model.net, "spectrum", None) is not None:
            if train_ds.coils is not None:  # coil k-space with the stored noise (spectrum_ridge.split_features)
                raw = split_features(model.net.spectrum, train_ds)
                model.net.spectrum.set_statistics(raw.mean(axis=0), raw.std(axis=0))
            else:
                model.net.spectrum.set_statistics(*spectrum_statistics(
                    model.net.spectrum, (train_ds.unaugmented(i) for i in range(len(train_ds)))))
        tokens = 0  # patch tokens per subject for the tokens/s figure (the image baselines have none)
        if spec.counts_tokens:
            tokens = validate_config(dataclasses.replace(cfg, stage=1, models="kspace"), train_ds.shape).num_tokens
        return fit_model(
            cfg, model, train_ds, val_ds, info, param_groups(model, cfg.optim.lr, cfg.optim.weight_decay),
            tokens_per_sample=tokens, resume=resume, extra_state={"targets": targets},
        )
    finally:
        if own_dist:
            cleanup_distributed()
