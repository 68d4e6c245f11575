"""Ventricular phenotypes from a short-axis segmentation (UK Biobank labels 1 LV, 2 Myo, 3 RV).

Pure numpy on arrays: ``seg_sa`` is ``(X, Y, Z, T)`` integer labels, spacing in mm, the frame
interval in seconds. Formulas (REFERENCES.md): voxel volume ``v = dx·dy·dz·1e-3`` mL; ED = frame 0;
ES = argmin over t of the LV blood-pool volume; HR = 60 / (T·dt) bpm; LVM = 1.05 g/mL × LV
myocardium volume at ED.

Quality control, adapted from ``sa_pass_quality_control`` of the UK Biobank cardiac pipeline
(W. Bai et al., ukbb_cardiac), applied to the ED and ES volumes:

- LV blood pool and LV myocardium each have at least 10 voxels, and at least 6 slices
  carry both (at least 10 pixels each) with no gap between them. Failure → all 10 ventricular
  phenotypes missing (ES itself is defined from the LV).
- the RV blood pool has at least 10 voxels and at least 10 pixels on the mid-cavity slice (the
  slice of the LV blood-pool centroid). Failure → the 4 RV phenotypes missing.

A failed rule gives NaN and a reason, never a 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "VENTRICULAR_COLUMNS",
    "LV_BLOOD",
    "LV_MYO",
    "RV_BLOOD",
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "QC_MIN_PIXELS",
    "QC_MIN_SLICES",
    "VentricularResult",
    "label_counts",
    "ventricular_phenotypes",
]

LV_BLOOD, LV_MYO, RV_BLOOD = 1, 2, 3
MYOCARDIAL_DENSITY_G_PER_ML = 1.05
QC_MIN_PIXELS = 10
QC_MIN_SLICES = 6

VENTRICULAR_COLUMNS: tuple[str, ...] = (
    "LVEDV (mL)",
    "LVESV (mL)",
    "LVSV (mL)",
    "LVEF (%)",
    "LVCO (L/min)",
    "LVM (g)",
    "RVEDV (mL)",
    "RVESV (mL)",
    "RVSV (mL)",
    "RVEF (%)",
)
_RV = slice(6, 10)


@dataclass
class VentricularResult:
    """``values``: (10,) float64 in the order of :data:`VENTRICULAR_COLUMNS` (NaN = missing);
    ``reasons``: why values are missing; ``ed``/``es``: frame indices (ES = -1 when undefined)."""

    values: np.ndarray
    reasons: list[str]
    ed: int
    es: int


def label_counts(seg: np.ndarray, n_labels: int = 4) -> np.ndarray:
    """Voxel counts per (slice, frame, label) of a ``(X, Y, Z, T)`` label map.

    Returns:
        ``(Z, T, n_labels)`` int64: ``out[z, t, l]`` = number of voxels with label ``l``
        (label 0 is left at 0: it is never used).
    """
    out = np.zeros((seg.shape[2], seg.shape[3], n_labels), dtype=np.int64)
    for lab in range(1, n_labels):
        out[..., lab] = np.count_nonzero(seg == lab, axis=(0, 1))
    return out


def _lv_qc(counts_zl: np.ndarray, frame: str) -> str | None:
    """LV rules on one frame's ``(Z, n_labels)`` counts; the failure reason or None."""
    for lab, name in ((LV_BLOOD, "LV blood pool"), (LV_MYO, "LV myocardium")):
        if counts_zl[:, lab].sum() < QC_MIN_PIXELS:
            return f"ventricular QC: {name} has fewer than {QC_MIN_PIXELS} voxels at {frame}"
    z_ok = np.flatnonzero((counts_zl[:, LV_BLOOD] >= QC_MIN_PIXELS) & (counts_zl[:, LV_MYO] >= QC_MIN_PIXELS))
    if z_ok.size < QC_MIN_SLICES:
        return f"ventricular QC: LV found on {z_ok.size} slices at {frame}, fewer than {QC_MIN_SLICES}"
    if z_ok[-1] - z_ok[0] + 1 != z_ok.size:
        return f"ventricular QC: LV missing on slices between {z_ok[0]} and {z_ok[-1]} at {frame}"
    return None


def _rv_qc(counts_zl: np.ndarray, frame: str) -> str | None:
    """RV rules on one frame's ``(Z, n_labels)`` counts; the failure reason or None."""
    if counts_zl[:, RV_BLOOD].sum() < QC_MIN_PIXELS:
        return f"ventricular QC: RV blood pool has fewer than {QC_MIN_PIXELS} voxels at {frame}"
    lv = counts_zl[:, LV_BLOOD].astype(np.float64)
    mid = int(round(float((lv * np.arange(lv.size)).sum() / lv.sum())))
    if counts_zl[mid, RV_BLOOD] < QC_MIN_PIXELS:
        return f"ventricular QC: RV has fewer than {QC_MIN_PIXELS} pixels on the mid-cavity slice {mid} at {frame}"
    return None


def ventricular_phenotypes(
    seg_sa: np.ndarray, spacing_mm: tuple[float, float, float], dt_s: float
) -> VentricularResult:
    """The 10 ventricular phenotypes of one subject.

    Args:
        seg_sa: ``(X, Y, Z, T)`` integer labels with values in {0, 1, 2, 3} (checked by the caller).
        spacing_mm: ``(dx, dy, dz)`` voxel size in mm (dz = slice spacing).
        dt_s: frame interval in seconds (NaN or <= 0: LVCO missing with a reason).

    Returns:
        :class:`VentricularResult` with volumes in mL, EF in %, LVCO in L/min, LVM in g.
    """
    if seg_sa.ndim != 4:
        raise ValueError(f"seg_sa must be (X, Y, Z, T), got shape {seg_sa.shape}")
    dx, dy, dz = (float(s) for s in spacing_mm)
    voxel_ml = dx * dy * dz * 1e-3
    counts = label_counts(seg_sa)  # (Z, T, 4)
    per_frame = counts.sum(axis=0)  # (T, 4)
    n_frames = per_frame.shape[0]
    values = np.full(len(VENTRICULAR_COLUMNS), np.nan)
    reasons: list[str] = []
    ed = 0
    lv_ml = per_frame[:, LV_BLOOD] * voxel_ml
    if not lv_ml[ed] > 0:
        return VentricularResult(values, ["ventricular QC: no LV blood pool at ED (frame 0)"], ed, -1)
    es = int(np.argmin(lv_ml))
    lv_fail = _lv_qc(counts[:, ed], "ED") or _lv_qc(counts[:, es], f"ES (frame {es})")
    if lv_fail:
        return VentricularResult(values, [lv_fail], ed, es)

    lvedv, lvesv = lv_ml[ed], lv_ml[es]
    lvsv = lvedv - lvesv
    values[0:4] = (lvedv, lvesv, lvsv, 100.0 * lvsv / lvedv)
    if np.isfinite(dt_s) and dt_s > 0:
        heart_rate = 60.0 / (n_frames * float(dt_s))
        values[4] = lvsv * heart_rate / 1000.0
    else:
        reasons.append(f"LVCO: invalid frame interval dt = {dt_s} s")
    values[5] = per_frame[ed, LV_MYO] * voxel_ml * MYOCARDIAL_DENSITY_G_PER_ML

    rv_fail = _rv_qc(counts[:, ed], "ED") or _rv_qc(counts[:, es], f"ES (frame {es})")
    if rv_fail:
        reasons.append(rv_fail)
        return VentricularResult(values, reasons, ed, es)
    rvedv, rvesv = per_frame[ed, RV_BLOOD] * voxel_ml, per_frame[es, RV_BLOOD] * voxel_ml
    rvsv = rvedv - rvesv
    values[_RV] = (rvedv, rvesv, rvsv, 100.0 * rvsv / rvedv)
    return VentricularResult(values, reasons, ed, es)
