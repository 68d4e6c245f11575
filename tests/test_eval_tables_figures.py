"""kmtr.analysis.tables (best / dagger marking) and kmtr.analysis.figures (each writes a PNG)."""

import numpy as np
import pandas as pd
import pytest

from kmtr.analysis import figures
from kmtr.analysis.tables import comparison_table

# ---------------------------------------------------------------------------------------------- tables


def _values():
    return pd.DataFrame({"image": [20.0, 0.80, 5.0], "k-space": [18.0, 0.85, np.nan], "mean guess": [25.0, 0.5, 4.0]},
                        index=pd.Index(["LVEDV (mL)", "AUC HCM", "LVEF (%)"], name="target"))


def test_best_per_row_with_mixed_directions_and_nan():
    t = comparison_table(_values(), higher_is_better={"AUC HCM": True, "LVEDV (mL)": False, "LVEF (%)": False})
    best = t.best()
    assert best.loc["LVEDV (mL)"].tolist() == [False, True, False]  # lowest MAE
    assert best.loc["AUC HCM"].tolist() == [False, True, False]  # highest AUC
    assert best.loc["LVEF (%)"].tolist() == [False, False, True]  # NaN never best
    md = t.markdown().splitlines()
    assert md[0] == "| target | image | k-space | mean guess |"
    assert md[2] == "| LVEDV (mL) | 20 | **18** | 25 |"
    assert md[3] == "| AUC HCM | 0.8 | **0.85** | 0.5 |"
    assert md[4] == "| LVEF (%) | 5 | – | **4** |"


def test_single_direction_and_series_direction():
    v = _values()
    assert comparison_table(v, higher_is_better=True).best().loc["LVEDV (mL)"].tolist() == [False, False, True]
    assert comparison_table(v, higher_is_better=False).best().loc["AUC HCM"].tolist() == [False, False, True]
    s = pd.Series({"AUC HCM": True}, dtype=bool)  # rows missing from the mapping default to higher-is-better
    assert comparison_table(v, higher_is_better=s).best().loc["LVEDV (mL)"].tolist() == [False, False, True]


def test_ties_all_bold_and_all_nan_row():
    v = pd.DataFrame({"a": [1.0, np.nan], "b": [1.0, np.nan], "c": [2.0, np.nan]}, index=["x", "y"])
    t = comparison_table(v, higher_is_better=False)
    assert t.best().loc["x"].tolist() == [True, True, False]
    assert not t.best().loc["y"].any()
    assert t.markdown().splitlines()[2:] == ["| x | **1** | **1** | 2 |", "| y | – | – | – |"]


def test_intervals_dagger_frame_and_csv(tmp_path):
    v = _values()
    lo, hi = v - 1, v + 1
    t = comparison_table(v, lo, hi, higher_is_better={"AUC HCM": True, "LVEDV (mL)": False, "LVEF (%)": False},
                         fmt="{:.2f}", reference="mean guess")
    worse = t.worse_than_reference()
    assert worse.loc["LVEF (%)"].tolist() == [True, False, False]  # 5 > 4 (lower is better)
    assert not worse.loc["LVEDV (mL)"].any() and not worse.loc["AUC HCM"].any()
    md = t.markdown().splitlines()
    assert md[4] == "| LVEF (%) | 5.00 [4.00, 6.00]† | – | **4.00 [3.00, 5.00]** |"
    assert md[2] == "| LVEDV (mL) | 20.00 [19.00, 21.00] | **18.00 [17.00, 19.00]** | 25.00 [24.00, 26.00] |"
    # AUC row, higher is better: a method below the mean guess gets a dagger
    v2 = v.copy()
    v2.loc["AUC HCM", "image"] = 0.4
    assert comparison_table(v2, higher_is_better={"AUC HCM": True}, reference="mean guess") \
        .worse_than_reference().loc["AUC HCM", "image"]
    f = t.frame()
    assert list(f.columns) == ["row", "method", "value", "lo", "hi", "higher_is_better", "best",
                               "worse_than_reference"]
    assert len(f) == 9 and f["best"].sum() == 3 and f["worse_than_reference"].sum() == 1
    assert f.set_index(["row", "method"]).loc[("LVEDV (mL)", "k-space"), "lo"] == 17.0
    path = t.to_csv(tmp_path / "t.csv")
    assert pd.read_csv(path).shape == (9, 8)
    with pytest.raises(ValueError):
        comparison_table(v, reference="nope")
    with pytest.raises(ValueError):
        comparison_table(v, lo=lo.iloc[:2], hi=hi.iloc[:2])


# --------------------------------------------------------------------------------------------- figures


def _png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scatter_and_roc(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.normal(size=(12, 3))
    true[0, 1] = np.nan
    pred = true + 0.1 * rng.normal(size=true.shape)
    _png(figures.scatter_pred_true(pred, true, ["LVEDV (mL)", "LVEF (%)", "LVM"], ["mL", "%", "g"],
                                   tmp_path / "s.png"))
    label = np.stack([np.r_[np.zeros(6), np.ones(6)], np.zeros(12), np.r_[-np.ones(4), np.arange(8) % 2]], 1)
    prob = rng.random((12, 3))
    _png(figures.roc_curves(prob, label.astype(int), ["A", "single class", "C"], tmp_path / "r.png"))


def test_segmentation_overlay_and_reconstruction_grid(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.random((2, 16, 16))
    lab = np.zeros((2, 16, 16), int)
    lab[:, 4:12, 4:12] = 1
    lab[:, 6:10, 6:10] = 5
    _png(figures.segmentation_overlay(images, lab, np.roll(lab, 1, axis=-1), ["a", "b"], tmp_path / "o.png"))
    _png(figures.reconstruction_grid(images, images * 0.5, images + 0.01, ["a", "b"], tmp_path / "g.png"))


def test_tsne_plot_small(tmp_path):
    rng = np.random.default_rng(2)
    za = rng.normal(size=(6, 8))
    zb = za + 0.1 * rng.normal(size=(6, 8))
    values = np.array([50.0, 60.0, np.nan, 55.0, 70.0, 65.0])
    _png(figures.tsne_plot(za, zb, values, "LVEF (%)", tmp_path / "t.png", lines=True))
    assert figures._quintiles(np.array([1.0, 2, 3, 4, 5, np.nan])).tolist() == [0, 1, 2, 3, 4, -1]


def test_metric_vs_acceleration(tmp_path):
    res = pd.DataFrame({"method": ["image"] * 3 + ["k-space"] * 3, "acc": [4, 8, 16] * 2,
                        "value": [5.0, 6.0, 8.0, 5.5, 5.8, 6.1], "lo": [4.5, 5.5, 7.0, 5.0, 5.2, np.nan],
                        "hi": [5.5, 6.5, 9.0, 6.0, 6.4, np.nan]})
    _png(figures.metric_vs_acceleration(res, tmp_path / "m.png", mean_guess=7.0, ylabel="MAE LVEF (%)"))
    _png(figures.metric_vs_acceleration(res.drop(columns=["lo", "hi"]), tmp_path / "m2.png", mean_guess=5.7,
                                        higher_is_better=True))


def test_headline_disease_skips_diseases_without_both_classes_in_the_test_split():
    from kmtr.eval.benchmark import TaskComparison, _headline

    values = pd.DataFrame({"k-MTR": [np.nan, 0.6, 0.7], "mean guess": [np.nan, 0.5, 0.5]},
                          index=["CAD", "high_blood_pressure", "hypertension"])
    comp = TaskComparison("classification", "AUC", True, values, values, values, pd.DataFrame())
    assert _headline("classification", comp, "LVEF (%)", None) == "high_blood_pressure"
    assert _headline("classification", comp, "LVEF (%)", "hypertension") == "hypertension"
    assert _headline("classification", comp, "LVEF (%)", "CAD") == "CAD"  # asked for by name
    none = TaskComparison("classification", "AUC", True, values.iloc[:1], values.iloc[:1], values.iloc[:1], pd.DataFrame())
    assert _headline("classification", none, "LVEF (%)", None) == "CAD"
