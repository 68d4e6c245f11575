"""The predictions of one method on one split, with their ground truth (what every evaluator reads)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["PER_VIEW_KEYS", "Predictions"]

#: ``truth`` entries with one value per view (S,), not per subject: ``view_names`` and ``view_ids``
#: (0 = short axis, 1 = long axis, the store's), kept whole when subjects are selected
PER_VIEW_KEYS = ("view_names", "view_ids")


@dataclass
class Predictions:
    """Outputs and ground truth of one split, in store row order of the split.

    ``pred``: regression (N, P) original units; classification (N, D) probabilities;
    segmentation (N, S, T, H, W) uint8; reconstruction (N, S, T, H, W) float32 magnitudes of the
    per-subject normalised image. ``truth`` holds the matching arrays (``phenotypes`` (N, P),
    ``diseases`` (N, D) of the selected columns, ``seg`` + ``seg_present`` (N, S), ``image`` and
    ``zero_filled`` magnitudes; for segmentation also ``image_frame0`` (N, S, H, W) magnitudes,
    ``pixel_spacing`` (N, S, 2) mm and, when the store has them, ``phenotypes``); ``rows`` (N,)
    store rows. ``variants`` holds other forms of the same predictions, shaped as ``pred``
    (:meth:`kmtr.tasks.base.Task.prediction_variants`; reconstruction: ``data_consistent``, the
    magnitudes with the acquired k-space samples put back).
    """

    task: str
    rows: np.ndarray
    pred: np.ndarray
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    variants: dict[str, np.ndarray] = field(default_factory=dict)
