"""Resampling statistics over subjects: bootstrap intervals, paired bootstrap and Wilcoxon tests.

All functions resample or pair along axis 0 (subjects); they are deterministic given ``seed``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats as sps

__all__ = ["PairedResult", "bootstrap_ci", "paired_bootstrap", "wilcoxon_paired"]


@dataclass(frozen=True)
class PairedResult:
    """Comparison of method a against method b on the same subjects.

    Attributes:
        diff: a − b (statistic difference, or mean paired difference for Wilcoxon).
        lo, hi: percentile bootstrap interval of ``diff`` (NaN when not available).
        p_value: two-sided p-value in (0, 1] (NaN when undefined).
        n: number of subjects (pairs) used.
    """

    diff: float
    lo: float
    hi: float
    p_value: float
    n: int


def _safe(stat: Callable[..., float], *arrays: np.ndarray) -> float:
    """``stat(*arrays)`` as float; NaN where it is undefined (ValueError, NaN or inf)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = float(stat(*arrays))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return float("nan")
    return value if np.isfinite(value) else float("nan")


def _check_lengths(arrays: tuple[np.ndarray, ...]) -> int:
    if not arrays:
        raise ValueError("at least one array is needed")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays differ in length along axis 0: {[len(a) for a in arrays]}")
    return n


def _bootstrap_values(stat: Callable[..., float], arrays: tuple[np.ndarray, ...], n_boot: int,
                      seed: int) -> np.ndarray:
    """(n_boot,) statistic on joint resamples of the subjects (NaN where undefined)."""
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    out = np.full(n_boot, np.nan)
    if n == 0:
        return out
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        out[b] = _safe(stat, *(a[idx] for a in arrays))
    return out


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    valid = values[np.isfinite(values)]
    if len(valid) == 0 or len(valid) < 0.5 * len(values):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(valid, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def bootstrap_ci(stat: Callable[..., float], *arrays: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap interval of ``stat(*arrays)``.

    Args:
        stat: statistic of the arrays, e.g. ``np.mean`` or ``sklearn.metrics.roc_auc_score``
            (called as ``stat(*arrays)``); may return NaN or raise ValueError where undefined.
        arrays: (N, ...) arrays of the same N subjects, resampled jointly along axis 0.
        n_boot: number of bootstrap resamples.
        level: coverage of the interval, e.g. 0.95.
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``(estimate on the full data, lower, upper)``. Undefined resamples are skipped; when fewer
        than half of them are valid the interval is ``(nan, nan)``.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    _check_lengths(arrays)
    estimate = _safe(stat, *arrays)
    lo, hi = _interval(_bootstrap_values(stat, arrays, n_boot, seed), level)
    return estimate, lo, hi


def paired_bootstrap(stat: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, pred_a: np.ndarray,
                     pred_b: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> PairedResult:
    """Paired bootstrap of ``stat(y, pred_a) − stat(y, pred_b)`` (same subject resample for both).

    Args:
        stat: ``stat(y, pred) -> float`` (e.g. AUC, MAE).
        y, pred_a, pred_b: (N, ...) truth and the two methods' predictions of the same subjects.

    Returns:
        ``PairedResult``: diff on the full data, its percentile interval and a two-sided p-value
        ``min(1, 2 (k + 1) / (n_valid + 1))`` with k the number of valid bootstrap differences on
        the other side of 0 (≤ 0 when diff > 0, ≥ 0 when diff < 0); p = 1 when diff = 0.
    """
    y, pred_a, pred_b = (np.asarray(a) for a in (y, pred_a, pred_b))
    n = _check_lengths((y, pred_a, pred_b))

    def d(yy: np.ndarray, aa: np.ndarray, bb: np.ndarray) -> float:
        return _safe(stat, yy, aa) - _safe(stat, yy, bb)

    diff = d(y, pred_a, pred_b)
    boots = _bootstrap_values(d, (y, pred_a, pred_b), n_boot, seed)
    lo, hi = _interval(boots, level)
    valid = boots[np.isfinite(boots)]
    if not np.isfinite(diff) or len(valid) == 0:
        p = float("nan")
    elif diff == 0:
        p = 1.0
    else:
        k = int(np.sum(valid <= 0)) if diff > 0 else int(np.sum(valid >= 0))
        p = min(1.0, 2.0 * (k + 1) / (len(valid) + 1))
    return PairedResult(float(diff), lo, hi, p, n)


def wilcoxon_paired(err_a: np.ndarray, err_b: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                    seed: int = 0) -> PairedResult:
    """Wilcoxon signed-rank test of paired errors (e.g. absolute errors of two methods).

    Args:
        err_a, err_b: (N,) per-subject errors of methods a and b; pairs with a NaN are dropped.

    Returns:
        ``PairedResult`` with diff = mean(err_a − err_b), a bootstrap interval of that mean and the
        two-sided ``scipy.stats.wilcoxon`` p-value of the differences (p = 1 when all differences
        are zero, NaN when no pair is left).
    """
    a, b = np.asarray(err_a, dtype=float).ravel(), np.asarray(err_b, dtype=float).ravel()
    _check_lengths((a, b))
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    n = len(d)
    if n == 0:
        return PairedResult(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, (n_boot, n))].mean(axis=1) if n_boot > 0 else np.empty(0)
    lo, hi = _interval(boots, level) if n_boot > 0 else (float("nan"), float("nan"))
    if np.all(d == 0):
        p = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(sps.wilcoxon(d).pvalue)
    return PairedResult(diff, lo, hi, p, n)
