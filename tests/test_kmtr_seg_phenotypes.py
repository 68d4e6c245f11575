"""Phenotypes from predicted segmentations: short-axis areas and their training-split calibration."""

from __future__ import annotations

import numpy as np
import pytest

from kmtr.analysis.seg_phenotypes import (
    FEATURES,
    apply_calibration,
    area_agreement,
    fit_calibration,
    phenotype_features,
    sax_area_curves,
)


def _hearts(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(N, 9, T=4, 32, 32) label maps: an LV square of side r(t) in each short-axis view, a 1-pixel
    myocardial ring around it, an RV block; no labels in the long-axis views. Returns seg, spacing
    (N, 9, 2) mm, LV side at ED (N,) and at ES (N,) in pixels."""
    rng = np.random.default_rng(seed)
    seg = np.zeros((n, 9, 4, 32, 32), np.uint8)
    ed = rng.integers(8, 14, n)
    es = ed - rng.integers(2, 5, n)
    for i in range(n):
        for t, r in enumerate([ed[i], es[i] + 1, es[i], ed[i] - 1]):
            seg[i, :6, t, 4:6 + r, 4:6 + r] = 2  # myocardium ring of one pixel...
            seg[i, :6, t, 5:5 + r, 5:5 + r] = 1  # ...around the LV blood pool (r × r)
            seg[i, :6, t, 20:26, 2:2 + r] = 3
    spacing = np.broadcast_to(rng.uniform(1.5, 2.0, (n, 1, 1)), (n, 9, 2)).copy()
    return seg, spacing, ed, es


def test_sax_area_curves_are_pixel_counts_times_pixel_area():
    seg, spacing, ed, es = _hearts()
    lv = sax_area_curves(seg, spacing, range(6), 1)
    px = spacing[:, 0, 0] * spacing[:, 0, 1] / 100  # cm²
    np.testing.assert_allclose(lv[:, 0], 6 * ed**2 * px)
    np.testing.assert_allclose(lv[:, 2], 6 * es**2 * px)
    epi = sax_area_curves(seg, spacing, range(6), (1, 2))
    np.testing.assert_allclose(epi[:, 0], 6 * (ed + 2) ** 2 * px)
    assert sax_area_curves(seg, spacing, [6, 7, 8], 1).sum() == 0  # long-axis views are not counted
    f = phenotype_features(seg, spacing, range(6), lv=1, myo=2, rv=3)
    np.testing.assert_allclose(f["lv_max"], lv[:, 0])
    np.testing.assert_allclose(f["lv_min"], lv[:, 2])
    np.testing.assert_allclose(f["lv_ef"], 100 * (ed**2 - es**2) / ed**2)
    assert "rv_max" not in phenotype_features(seg, spacing, range(6), lv=1, myo=2, rv=None)


def test_calibration_recovers_linear_phenotypes_and_skips_what_it_cannot_fit():
    seg, spacing, _, _ = _hearts(20)
    f = phenotype_features(seg, spacing, range(6), lv=1, myo=2, rv=3)
    columns = ["LVEDV (mL)", "LVEF (%)", "LVM (g)", "LAV max (mL)", "RVEDV (mL)"]
    y = np.stack([0.8 * f["lv_max"] + 3.0,  # slice spacing 0.8 cm and an offset
                  f["lv_ef"] - 2.0,
                  1.05 * 0.8 * (f["epi_mean"] - f["lv_mean"]),
                  np.ones(20),
                  np.full(20, np.nan)], axis=1)
    y[0, 0] = np.nan  # a missing value is left out of that phenotype's fit only
    fits = fit_calibration(f, y, columns)
    assert set(fits) == {"LVEDV (mL)", "LVEF (%)", "LVM (g)"}  # no area model for LA; RV has no values
    no_rv = dict(f, rv_max=np.zeros(20))  # a segmenter that never predicts the RV
    assert "RVEDV (mL)" not in fit_calibration(no_rv, np.ones((20, 1)), ["RVEDV (mL)"])
    assert "RVEDV (mL)" in fit_calibration(f, np.ones((20, 1)), ["RVEDV (mL)"])
    assert fits["LVEDV (mL)"]["n"] == 19 and fits["LVEF (%)"]["n"] == 20
    np.testing.assert_allclose(fits["LVEDV (mL)"]["coef"], [0.8], rtol=1e-8)
    np.testing.assert_allclose(fits["LVEDV (mL)"]["intercept"], 3.0, atol=1e-8)
    seg2, spacing2, _, _ = _hearts(5, seed=1)  # new subjects
    f2 = phenotype_features(seg2, spacing2, range(6), lv=1, myo=2, rv=3)
    pred = apply_calibration(fits, f2)
    np.testing.assert_allclose(pred["LVEDV (mL)"], 0.8 * f2["lv_max"] + 3.0, rtol=1e-8)
    np.testing.assert_allclose(pred["LVEF (%)"], f2["lv_ef"] - 2.0, atol=1e-6)
    np.testing.assert_allclose(pred["LVM (g)"], 0.84 * (f2["epi_mean"] - f2["lv_mean"]), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("column", sorted(FEATURES))
def test_every_calibrated_column_uses_known_features(column):
    seg, spacing, _, _ = _hearts(3)
    assert set(FEATURES[column]) <= set(phenotype_features(seg, spacing, range(6), lv=1, myo=2, rv=3))


def test_area_agreement_is_the_relative_error_of_each_subjects_largest_short_axis_area():
    seg, _, ed, _ = _hearts(12)
    pred = seg.copy()
    grow = np.arange(12) % 2  # subject i's predicted LV square is grow[i] pixels wider at ED (frame 0)
    for i, g in enumerate(grow):
        pred[i, :6, 0, 5:5 + ed[i] + g, 5:5 + ed[i] + g] = 1
    pred[:, 6:] = 1  # long-axis views are not read
    rows = {r["class"]: r for r in area_agreement(pred, seg, range(6), {"LV": 1, "epi": (1, 2), "none": 7})}
    rel = 100 * ((ed + grow) ** 2 / ed**2 - 1)
    assert rows["LV"]["n"] == 12
    assert rows["LV"]["bias"] == pytest.approx(rel.mean()) and rows["LV"]["sd"] == pytest.approx(rel.std(ddof=1))
    assert rows["LV"]["r"] == pytest.approx(np.corrcoef((ed + grow) ** 2, ed**2)[0, 1])
    # LV + myocardium: the enlarged LV overwrote only ring pixels (the ring is one pixel wide: no change)
    assert rows["epi"]["bias"] == pytest.approx(0.0) and rows["epi"]["sd"] == pytest.approx(0.0)
    assert rows["epi"]["r"] == pytest.approx(1.0)
    assert rows["none"]["n"] == 0 and np.isnan(rows["none"]["sd"])  # a class absent from the truth
    perfect = area_agreement(seg, seg, range(6), {"LV": 1})[0]
    assert perfect["bias"] == 0 and perfect["sd"] == 0 and perfect["r"] == pytest.approx(1.0)
