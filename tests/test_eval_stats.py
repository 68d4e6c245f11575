"""kmtr.analysis.stats: bootstrap intervals, paired bootstrap and Wilcoxon tests on constructed data."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kmtr.analysis.stats import PairedResult, bootstrap_ci, paired_bootstrap, wilcoxon_paired


def _mae(y, p):
    return float(np.mean(np.abs(y - p)))


def test_bootstrap_ci_of_mean_matches_normal_theory():
    n = 400
    x = np.random.default_rng(1).standard_normal(n)
    est, lo, hi = bootstrap_ci(np.mean, x, n_boot=2000, seed=0)
    assert est == pytest.approx(x.mean())
    assert lo < 0 < hi
    assert lo < est < hi
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(n), rel=0.15)


def test_bootstrap_ci_level_and_determinism():
    x = np.random.default_rng(2).standard_normal(50)
    a = bootstrap_ci(np.mean, x, n_boot=300, seed=7)
    b = bootstrap_ci(np.mean, x, n_boot=300, seed=7)
    c = bootstrap_ci(np.mean, x, n_boot=300, seed=8)
    assert a == b
    assert a[1:] != c[1:]
    narrow = bootstrap_ci(np.mean, x, n_boot=300, level=0.5, seed=7)
    assert a[1] < narrow[1] < narrow[2] < a[2]


def test_bootstrap_resamples_arrays_jointly():
    # stat defined only when rows stay paired: y == 2 * x in every resample
    x = np.arange(30.0)
    est, lo, hi = bootstrap_ci(lambda a, b: float(np.max(np.abs(b - 2 * a))), x, 2 * x, n_boot=100)
    assert (est, lo, hi) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        bootstrap_ci(np.mean, x, x[:-1])


def test_bootstrap_skips_undefined_resamples():
    y = np.zeros(20, dtype=int)
    y[0] = 1  # ~64 % of resamples hold the single positive: AUC is defined there only
    p = np.linspace(0, 1, 20)
    est, lo, hi = bootstrap_ci(roc_auc_score, y, p, n_boot=100)
    assert est == pytest.approx(roc_auc_score(y, p))
    assert np.isfinite(lo) and np.isfinite(hi) and lo <= hi
    # one class only: every resample is undefined (roc_auc_score raises)
    est, lo, hi = bootstrap_ci(roc_auc_score, np.zeros(20, dtype=int), p, n_boot=20)
    assert np.isnan(est) and np.isnan(lo) and np.isnan(hi)
    # defined in fewer than half of the resamples (only where subject 0 is drawn twice) -> no interval
    x = np.arange(40)
    est, lo, hi = bootstrap_ci(lambda a: 1.0 if np.sum(a == 0) >= 2 else float("nan"), x, n_boot=200)
    assert np.isnan(est) and np.isnan(lo) and np.isnan(hi)
    # defined in most resamples (subject 0 drawn at most once, ~74 %) -> interval from those
    est, lo, hi = bootstrap_ci(lambda a: 1.0 if np.sum(a == 0) <= 1 else float("nan"), x, n_boot=200)
    assert (est, lo, hi) == (1.0, 1.0, 1.0)


def test_paired_bootstrap_identical_methods():
    rng = np.random.default_rng(3)
    y, p = rng.standard_normal(60), rng.standard_normal(60)
    res = paired_bootstrap(_mae, y, p, p.copy(), n_boot=200)
    assert isinstance(res, PairedResult)
    assert res.diff == 0.0 and res.lo == 0.0 and res.hi == 0.0
    assert res.p_value == 1.0
    assert res.n == 60


def test_paired_bootstrap_clearly_better_method():
    rng = np.random.default_rng(4)
    y = rng.standard_normal(80)
    e = rng.standard_normal(80)
    res = paired_bootstrap(_mae, y, y + 0.5 * e, y + e, n_boot=399, seed=1)
    assert res.diff == pytest.approx(-0.5 * np.mean(np.abs(e)))
    assert res.lo < res.diff < res.hi < 0
    # halved errors win in every resample: p = 2 (0 + 1) / (399 + 1)
    assert res.p_value == pytest.approx(0.005) and res.p_value < 0.01
    # AUC: a perfectly separating method against a random one
    lab = (np.arange(80) % 2).astype(int)
    res = paired_bootstrap(roc_auc_score, lab, lab + 0.1 * rng.random(80), rng.random(80), n_boot=150)
    assert res.diff > 0.3 and res.p_value < 0.02


def test_paired_bootstrap_deterministic():
    rng = np.random.default_rng(5)
    y, a, b = rng.standard_normal(30), rng.standard_normal(30), rng.standard_normal(30)
    assert paired_bootstrap(_mae, y, a, b, n_boot=100, seed=3) == paired_bootstrap(_mae, y, a, b, n_boot=100, seed=3)


def test_wilcoxon_paired():
    rng = np.random.default_rng(6)
    err = np.abs(rng.standard_normal(50))
    same = wilcoxon_paired(err, err.copy())
    assert same.diff == 0.0 and same.p_value == 1.0
    better = wilcoxon_paired(err / 2, err)
    assert better.diff == pytest.approx(-np.mean(err) / 2)
    assert better.p_value < 0.01
    assert better.lo < better.diff < better.hi < 0
    # NaN pairs are dropped
    a, b = err.copy(), err * 2
    a[:5] = np.nan
    b[5:8] = np.nan
    res = wilcoxon_paired(a, b)
    assert res.n == 42 and res.diff == pytest.approx(-np.mean(err[8:]))
    assert np.isnan(wilcoxon_paired(np.full(3, np.nan), np.ones(3)).p_value)
