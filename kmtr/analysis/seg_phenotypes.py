"""Ventricular phenotypes from a predicted segmentation, calibrated on the training split.

UK Biobank's phenotypes are themselves measured on segmentations, so a segmentation predicted from
undersampled k-space gives a second route to them besides the regression head. The store holds
the in-plane pixel spacing but not the distance between short-axis slices, and the trainer keeps
only some frames, so volumes are not integrated directly (Simpson's rule would need both).
Instead each phenotype is a linear function of a few short-axis area features, fitted by least
squares on the training split's *predicted* segmentations against their phenotypes (so the fit
also absorbs the segmenter's systematic bias), then applied to the test split.

Area features, from the short-axis views of ``seg`` (N, S, T, H, W) with ``spacing`` (N, S, 2) mm:
``A_c(t) = Σ_sax |{pixels of class c}| · Δy · Δx / 100`` in cm² (summed over short-axis slices; one
cm of slice spacing turns it into mL), per frame t.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["FEATURES", "sax_area_curves", "phenotype_features", "curve_features", "fit_calibration", "apply_calibration",
           "area_agreement"]

#: label values of the ventricular classes the areas read (the store's ``label_map``: docs/store-format.md)
LV, MYO, RV = 1, 2, 3

#: phenotype column → the area features its linear calibration uses (see :func:`phenotype_features`).
FEATURES: dict[str, tuple[str, ...]] = {
    "LVEDV (mL)": ("lv_max",),
    "LVESV (mL)": ("lv_min",),
    "LVSV (mL)": ("lv_max", "lv_min"),
    "LVEF (%)": ("lv_max", "lv_min", "lv_ef"),
    "LVM (g)": ("epi_mean", "lv_mean"),
    "RVEDV (mL)": ("rv_max",),
    "RVESV (mL)": ("rv_min",),
    "RVSV (mL)": ("rv_max", "rv_min"),
    "RVEF (%)": ("rv_max", "rv_min", "rv_ef"),
}


def sax_area_curves(seg: np.ndarray, spacing: np.ndarray, sax: Sequence[int], label: int | Sequence[int]) -> np.ndarray:
    """Area of ``label`` (one class value or several) summed over the short-axis views, per frame.

    Args:
        seg: (N, S, T, H, W) integer labels.
        spacing: (N, S, 2) pixel spacing (Δy, Δx) in mm.
        sax: indices of the short-axis views along S.
        label: class value(s) counted.

    Returns:
        (N, T) float64 areas in cm².
    """
    sax = list(sax)
    labels = np.atleast_1d(np.asarray(label))
    hit = np.isin(seg[:, sax], labels)  # (N, s, T, H, W)
    pixels = hit.sum(axis=(3, 4), dtype=np.int64)  # (N, s, T)
    px_cm2 = np.prod(np.asarray(spacing, dtype=np.float64)[:, sax], axis=-1) / 100.0  # (N, s)
    return (pixels * px_cm2[:, :, None]).sum(axis=1)


def _ef(curve: np.ndarray) -> np.ndarray:
    top = curve.max(axis=1)
    return np.where(top > 0, 100.0 * (top - curve.min(axis=1)) / np.maximum(top, 1e-12), 0.0)


def phenotype_features(seg: np.ndarray, spacing: np.ndarray, sax: Sequence[int], lv: int, myo: int,
                       rv: int | None) -> dict[str, np.ndarray]:
    """Per-subject area features (N,) each: ``lv_max``, ``lv_min``, ``lv_mean`` (cm²), ``lv_ef`` (%,
    from the area curve), ``epi_mean`` (LV + myocardium, cm²), and the ``rv_*`` ones when ``rv`` is
    given. Shapes and units as in :func:`sax_area_curves`."""
    a_rv = sax_area_curves(seg, spacing, sax, rv) if rv is not None else None
    return curve_features(sax_area_curves(seg, spacing, sax, lv), sax_area_curves(seg, spacing, sax, (lv, myo)), a_rv)


def curve_features(lv: np.ndarray, epi: np.ndarray, rv: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The features of :func:`phenotype_features` from area curves (N, T) in cm² (or any one area unit):
    ``lv`` the LV blood pool, ``epi`` the LV blood pool + myocardium, ``rv`` the RV blood pool (None: no
    ``rv_*`` features)."""
    out = {"lv_max": lv.max(axis=1), "lv_min": lv.min(axis=1), "lv_mean": lv.mean(axis=1), "lv_ef": _ef(lv),
           "epi_mean": epi.mean(axis=1)}
    if rv is not None:
        out.update({"rv_max": rv.max(axis=1), "rv_min": rv.min(axis=1), "rv_ef": _ef(rv)})
    return out


def _design(features: dict[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    return np.stack([features[n] for n in names], axis=1)


def fit_calibration(features: dict[str, np.ndarray], phenotypes: np.ndarray,
                    columns: Sequence[str]) -> dict[str, dict[str, object]]:
    """Least-squares linear maps feature → phenotype for every column of :data:`FEATURES` present.

    Args:
        features: :func:`phenotype_features` of the training split's predicted segmentations.
        phenotypes: (N, P) their phenotypes (NaN = missing, left out of that column's fit).
        columns: (P,) the phenotype column names.

    Returns:
        ``{column: {"features": names, "coef": (k,), "intercept": float, "n": int}}`` for the columns
        with at least k + 2 training values and all their features available and not constant
        (a class the segmentation never predicts gives no phenotype rather than the mean guess).
    """
    fits: dict[str, dict[str, object]] = {}
    for j, col in enumerate(columns):
        names = FEATURES.get(col)
        if names is None or any(n not in features for n in names):
            continue
        x, y = _design(features, names), np.asarray(phenotypes[:, j], dtype=np.float64)
        ok = np.isfinite(y) & np.isfinite(x).all(axis=1)
        if ok.sum() < len(names) + 2 or np.any(np.ptp(x[ok], axis=0) == 0):
            continue  # too few values, or a feature the segmentation never varies (e.g. no RV predicted)
        a = np.column_stack([x[ok], np.ones(ok.sum())])
        sol, *_ = np.linalg.lstsq(a, y[ok], rcond=None)
        fits[col] = {"features": list(names), "coef": sol[:-1], "intercept": float(sol[-1]), "n": int(ok.sum())}
    return fits


def apply_calibration(fits: dict[str, dict[str, object]], features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """(N,) predicted phenotype per fitted column, in the phenotype's units."""
    return {col: _design(features, f["features"]) @ np.asarray(f["coef"]) + float(f["intercept"])  # type: ignore[arg-type]
            for col, f in fits.items()}


def area_agreement(pred: np.ndarray, true: np.ndarray, sax: Sequence[int],
                   classes: dict[str, int | Sequence[int]]) -> list[dict[str, float | str | int]]:
    """How well a predicted segmentation reads each subject's largest short-axis area, in pixels.

    The calibration (:func:`fit_calibration`) absorbs a constant bias, so what limits the phenotypes
    is the per-subject error around it: ``sd`` below. :mod:`kmtr.analysis.phenotype_ceiling` gives the
    precision a reader needs to beat the mean guess.

    Args:
        pred, true: (N, S, T, H, W) integer labels, predicted and ground truth.
        sax: indices of the short-axis views along S.
        classes: row name → label value(s), e.g. ``{"LV blood pool": 1, "LV + myocardium": (1, 2)}``.

    Returns:
        One dict per class: ``class``, ``n`` (subjects with the class in the ground truth), ``bias`` and
        ``sd`` (mean and SD, ddof 1, of ``pred_max / true_max − 1`` in %, where ``*_max`` is the
        subject's largest area over the frames, summed over the short-axis views) and ``r`` (Pearson
        correlation of the two largest areas over the subjects).
    """
    rows: list[dict[str, float | str | int]] = []
    ones = np.ones((len(true), true.shape[1], 2))
    for name, label in classes.items():
        p = sax_area_curves(pred, ones, sax, label).max(axis=1)
        t = sax_area_curves(true, ones, sax, label).max(axis=1)
        ok = t > 0
        rel = 100.0 * (p[ok] / t[ok] - 1.0)
        sd = float(np.std(rel, ddof=1)) if ok.sum() > 1 else float("nan")
        r = float(np.corrcoef(p[ok], t[ok])[0, 1]) if ok.sum() > 1 and np.ptp(p[ok]) > 0 and np.ptp(t[ok]) > 0 \
            else float("nan")
        rows.append({"class": name, "n": int(ok.sum()), "bias": float(rel.mean()) if ok.any() else float("nan"),
                     "sd": sd, "r": r})
    return rows
