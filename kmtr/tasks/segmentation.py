"""Segmentation into 6 classes per view and frame: (B, S, 6, T, H, W) logits from multi-depth
encoder features, Dice + cross-entropy (MONAI ``DiceCELoss``) over every view and frame with a
ground truth (``subjects/seg_present``; the 3ch view has none), the Dice term per view or per frame
(``heads.seg_dice_frames``, :func:`dice_samples`); Dice and HD95 per class."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kmtr.analysis.comparison import TaskComparison, mean_frames, paired_rows
from kmtr.analysis.predictions import Predictions
from kmtr.analysis.stats import wilcoxon_paired
from kmtr.analysis.summaries import regression_summary, segmentation_phenotypes, segmentation_tables, short_axis_areas
from kmtr.augment import flip_kspace, mirror_lines
from kmtr.errors import ConfigError
from kmtr.models.segmentation import SegmentationDecoder
from kmtr.tasks.base import EvalContext, Task, TruthSink

__all__ = ["MIRRORINGS", "NUM_CLASSES", "Segmentation", "compare_segmentation", "dice_samples", "mirrored_batch", "seg_layers",
           "subject_dice"]

NUM_CLASSES = 6  # 0 background, 1 LV blood pool, 2 LV myocardium, 3 RV blood pool, 4 LA, 5 RA


def seg_layers(depth: int, n: int) -> list[int]:
    """``n`` encoder depths spread evenly up to ``depth`` (1-based, last = depth), e.g. 6, 4 → [2, 3, 5, 6]."""
    n = max(1, min(n, depth))
    return sorted({max(1, round(depth * (i + 1) / n)) for i in range(n)})


class Segmentation(Task):
    name = "segmentation"
    with_seg = True
    metric = "Dice"

    def targets(self, cfg: Any, train_ds: Any) -> dict[str, Any]:
        info = train_ds.info
        if not info.has_seg:
            raise ConfigError(f"task segmentation: {info.url} has no 'seg' array (built without segmentations); "
                              f"rebuild it from subjects with seg_*.nii.gz files (`kspace-sim build --seg DIR` for "
                              f"DICOM zips)")
        return {"out_dim": NUM_CLASSES, "names": [info.label_map.get(str(i), str(i)) for i in range(NUM_CLASSES)]}

    def build_head(self, net: Any, encoder: Any, in_dim: int, out_dim: int, heads: Any) -> torch.nn.Module:
        net.layers = seg_layers(encoder.cfg.depth, heads.seg_features)
        return SegmentationDecoder(encoder.grid, encoder.cfg.width, len(net.layers), heads.seg_width, out_dim,
                                   heads.seg_temporal_kernel, heads.seg_out_stride)

    def run_head(self, net: Any, kspace: torch.Tensor, mask: torch.Tensor, views: torch.Tensor | None = None
                 ) -> torch.Tensor:
        tokens, keep = net.encoder.encoder_inputs(kspace, mask)
        _, full, feats = net.encoder.encode_features(tokens, keep, net.layers[:-1])
        return net.head([*feats, full], keep, views)

    def register_targets(self, model: torch.nn.Module, targets: dict[str, Any], heads: Any) -> None:
        from monai.losses import DiceCELoss

        model.seg_loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=heads.seg_dice_weight)
        model.seg_dice_frames = bool(heads.seg_dice_frames)
        model.seg_tta = bool(heads.seg_tta)

    def prediction_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The logits, or with ``heads.seg_tta`` the class probabilities averaged over the four
        in-plane mirrorings of the input (:func:`mirrored_batch`), each mirrored back: nnU-Net's
        test-time mirroring, done exactly in k-space. Either way :meth:`predict` takes the argmax."""
        if not model.seg_tta:
            return model.outputs(batch)
        total = None  # summed in place: no stack of the four (B, S, C, T, H, W) probability maps
        for dims in MIRRORINGS:
            probs = model.outputs(mirrored_batch(batch, dims)).softmax(dim=2).flip(dims)
            total = probs if total is None else total.add_(probs)
        return total.div_(len(MIRRORINGS))

    def training_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The k-space encoder's decoder (networks with ``selects_views``:
        :class:`kmtr.train.task_net.KSpaceTaskNet`, k-MTR and the MAE) decodes each view on its own, so in
        training and validation it decodes only the views the loss reads, those with a ground truth
        (``seg_present``; not the 3ch view), for 8/9 of the decoder's work. Other networks (the U-Nets) give
        their full output, indexed here. Either way: the labelled views' logits (n, C, T, H, W), the full
        output's ``[seg_present]``."""
        present = batch["seg_present"].bool()
        if getattr(model.net, "selects_views", False):
            return model.net(batch["kspace"], batch["mask"], views=present)
        return model.outputs(batch)[present]

    def loss(self, model: Any, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Dice + cross-entropy over the labelled views: ``out`` is their logits (n, C, T, H, W), in
        ``seg_present`` order (:meth:`training_outputs`)."""
        present = batch["seg_present"].bool()
        logits = out.float()
        target = batch["seg"][present][:, None].long()
        if logits.shape[0] == 0:
            return out.sum() * 0.0
        return model.seg_loss(*dice_samples(logits, target, model.seg_dice_frames))

    def predict(self, model: Any, out: torch.Tensor) -> torch.Tensor:
        """(B, S, T, H, W) uint8 labels: the argmax over the classes of ``out`` (B, S, C, T, H, W), taken
        with the classes made the last, contiguous axis (the same labels, first maximum on ties; torch's
        argmax over a strided middle axis is several times slower on CPU)."""
        return out.movedim(2, -1).contiguous().argmax(dim=-1).to(torch.uint8)

    def prediction_array(self, pred: torch.Tensor) -> np.ndarray:
        return pred.cpu().numpy()

    def collect_truth(self, batch: dict[str, torch.Tensor], raw: dict[str, Any], ds: Any, model: Any,
                      keep: TruthSink) -> None:
        keep("seg", batch["seg"])
        keep("seg_present", batch["seg_present"])
        keep("image_frame0", batch["image"][:, :, 0].abs())
        spacing = ds.group["subjects/pixel_spacing"]
        keep("pixel_spacing", torch.from_numpy(np.stack([np.asarray(spacing[int(r)]) for r in raw["row"]])))
        if "phenotypes" in batch:  # for the phenotypes measured on the predicted segmentation
            keep("phenotypes", batch["phenotypes"])

    def compare(self, preds: dict[str, Predictions], targets: dict[str, Any], n_boot: int, seed: int
                ) -> TaskComparison:
        return compare_segmentation(preds, targets["names"], n_boot, seed)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        table, summary = segmentation_tables(ctx.test, ctx.run.targets["names"], ctx.out, ctx.tag)
        result: dict[str, Any] = {"tables": {"segmentation": table}, "summary": summary}
        section = segmentation_phenotypes(ctx.run.cfg, ctx.test, ctx.out / f"{ctx.tag}_phenotypes_scatter.png",
                                          ctx.predict, ctx.n_boot, ctx.seed)
        if section is not None:
            result["tables"]["phenotypes"] = section
            heading = ("Phenotypes from the predicted segmentation (linear calibration on the training split's "
                       "predictions, `kmtr/analysis/seg_phenotypes.py`)")
            result["sections"] = [(heading, regression_summary(section))]
        areas = short_axis_areas(ctx.test)
        if areas is not None:
            heading = ("Short-axis areas, predicted against the ground truth (each subject's largest area over the "
                       "kept frames, summed over the short-axis views, in pixels; the calibration absorbs the bias, "
                       "the per-subject error limits the phenotypes: `python -m kmtr.analysis.phenotype_ceiling STORE` "
                       "gives the precision they need)")
            result.setdefault("sections", []).append((heading, areas))
        return result


#: the in-plane mirrorings of test-time averaging: none, H, W, both (axes of (…, H, W))
MIRRORINGS: tuple[tuple[int, ...], ...] = ((), (-2,), (-1,), (-2, -1))


def mirrored_batch(batch: dict[str, torch.Tensor], dims: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """The batch of the images mirrored along ``dims`` (-2 = H, -1 = W), exactly in k-space.

    ``kspace`` (…, H, W): :func:`kmtr.augment.flip_kspace` along each axis; ``mask`` (…, W) (the
    sampled phase-encode lines, along W): unchanged by an H mirroring, mirrored with the k-space along
    W (:func:`kmtr.augment.mirror_lines`, the same re-indexing), so the mirrored k-space is what the mirrored pattern samples of the
    mirrored object; coil ``maps`` (…, H, W), image-domain: flipped. Other entries are kept.
    """
    out = dict(batch)
    kspace = batch["kspace"]
    for d in dims:
        kspace = flip_kspace(kspace, d)
    out["kspace"] = kspace
    if -1 in dims:
        out["mask"] = mirror_lines(batch["mask"], -1)
    if "maps" in batch:
        out["maps"] = batch["maps"].flip(dims)
    return out


def dice_samples(logits: torch.Tensor, target: torch.Tensor, frames: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What the Dice term of the loss averages over: each labelled view's whole (T, H, W) volume
    (``frames`` False: logits (n, C, T, H, W) and target (n, 1, T, H, W) as given), or each 2-D frame
    (``frames`` True: (n·T, C, H, W) and (n·T, 1, H, W)), the unit the evaluation's Dice averages
    (:func:`kmtr.analysis.metrics.segmentation_metrics`). The cross-entropy term, a mean over all
    pixels, is the same either way."""
    if not frames:
        return logits, target
    return logits.transpose(1, 2).flatten(0, 1), target.transpose(1, 2).flatten(0, 1)


def subject_dice(pred: np.ndarray, true: np.ndarray, present: np.ndarray, n_classes: int = NUM_CLASSES) -> np.ndarray:
    """Per-subject Dice (N, C−1) for classes 1..C−1 over every labelled slice and frame (NaN when
    the class is absent from both); pred/true (N, S, T, H, W), present (N, S) bool."""
    out = np.full((pred.shape[0], n_classes - 1), np.nan)
    for i in range(pred.shape[0]):
        p, t = pred[i][present[i]], true[i][present[i]]
        for c in range(1, n_classes):
            a, b = p == c, t == c
            denom = a.sum() + b.sum()
            if denom:
                out[i, c - 1] = 2.0 * np.logical_and(a, b).sum() / denom
    return out


def compare_segmentation(preds: dict[str, Predictions], class_names: list[str], n_boot: int = 1000,
                         seed: int = 0) -> TaskComparison:
    """Per-subject Dice per class (all labelled views and frames)."""
    first = next(iter(preds.values()))
    present = first.truth["seg_present"].astype(bool)
    dice = {m: subject_dice(p.pred, p.truth["seg"], present, len(class_names)) for m, p in preds.items()}
    rows = list(class_names[1:])
    v, lo, hi = mean_frames(rows, dice, n_boot, seed)
    paired = paired_rows(rows, list(dice), lambda j, m: wilcoxon_paired(dice["kmtr"][:, j], dice[m][:, j],
                                                                        n_boot=n_boot, seed=seed))
    return TaskComparison("segmentation", "Dice", True, v, lo, hi, paired)
