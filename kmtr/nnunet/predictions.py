"""nnU-Net's predicted label maps → :class:`kmtr.analysis.predictions.Predictions`, cached as k-MTR's are.

The predictions of the test split's cases (``r<row>_v<slice>_f<frame>.nii.gz``) are put back at
(row, slice, frame) of a (N, S, T', H, W) uint8 array in the store's test-row order; slices without
a ground truth (``seg_present`` False, e.g. 3ch) are not predicted and hold 0 (the metrics skip them,
as they do for every method). The ground truth is read from the store exactly as
:func:`kmtr.eval.predict.predict_split` reads it for segmentation (``seg``, ``seg_present``,
``image_frame0``, ``pixel_spacing``, ``phenotypes``, ``view_names``), so the Dice / HD95 tables
compare every method on the same arrays. The result is written as ``<run>/predictions_test.npz`` in
the format of :func:`kmtr.eval.benchmark.cached_predictions`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kmtr.analysis.predictions import Predictions
from kmtr.data import KSpaceDataset, prepare_batch
from kmtr.nnunet.export import FILE_ENDING, parse_case_id, read_label_map

__all__ = ["PREDICTIONS", "collect_predictions", "load_predictions", "save_predictions"]

PREDICTIONS = "predictions_test.npz"


def collect_predictions(location: str, split: str, mask: str, frames: int | None, cases: list[str],
                        folder: Path) -> Predictions:
    """Assemble nnU-Net's label maps in ``folder`` for ``cases`` with the split's ground truth.

    Raises:
        FileNotFoundError: a case has no prediction in ``folder``.
    """
    ds = KSpaceDataset(location, split, mask, frames, with_seg=True, with_labels=True)
    s, t, h, w = ds.shape
    index = {int(r): i for i, r in enumerate(ds.rows)}
    frame_pos = {int(f): j for j, f in enumerate(ds.frames)}
    pred = np.zeros((len(ds), s, t, h, w), np.uint8)
    for case in cases:
        row, sl, frame = parse_case_id(case)
        path = folder / f"{case}{FILE_ENDING}"
        if not path.exists():
            raise FileNotFoundError(f"nnU-Net wrote no prediction for case {case} in {folder}")
        pred[index[row], sl, frame_pos[frame]] = read_label_map(path)
    truth: dict[str, list[np.ndarray]] = {}
    spacing = np.asarray(ds.group["subjects/pixel_spacing"][:], np.float32)
    for i in range(len(ds)):
        sample = ds[i]
        batch = prepare_batch({k: v[None] for k, v in sample.items()}, "cpu")
        row = int(sample["row"])
        values = {"seg": batch["seg"], "seg_present": batch["seg_present"],
                  "image_frame0": batch["image"][:, :, 0].abs(), "pixel_spacing": torch.from_numpy(spacing[row][None])}
        if "phenotypes" in batch:
            values["phenotypes"] = batch["phenotypes"]
        for key, value in values.items():
            truth.setdefault(key, []).append(value.numpy())
    arrays = {k: np.concatenate(v) for k, v in truth.items()}
    arrays["view_names"] = np.asarray(ds.info.view_names)
    arrays["view_ids"] = np.asarray(ds.info.view_ids)
    return Predictions("segmentation", np.asarray(ds.rows, np.int64), pred, arrays)


def save_predictions(preds: Predictions, targets: dict[str, Any], run: Path) -> Path:
    """Write ``<run>/predictions_test.npz`` atomically (the layout of ``cached_predictions``)."""
    path = run / PREDICTIONS
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, task=np.asarray(preds.task), rows=preds.rows, pred=preds.pred,
             targets=np.asarray(json.dumps(targets)), **{f"truth_{k}": v for k, v in preds.truth.items()})
    tmp.replace(path)
    return path


def load_predictions(run: Path) -> tuple[Predictions, dict[str, Any]]:
    """(test predictions, targets) of a finished nnU-Net run folder.

    Raises:
        FileNotFoundError: the run has not finished (no ``predictions_test.npz``).
    """
    path = Path(run) / PREDICTIONS
    if not path.exists():
        raise FileNotFoundError(f"{run} has no {PREDICTIONS}: the nnU-Net run has not finished")
    z = np.load(path, allow_pickle=False)
    truth = {k[6:]: z[k] for k in z.files if k.startswith("truth_")}
    return Predictions(str(z["task"]), z["rows"], z["pred"], truth), json.loads(str(z["targets"]))
