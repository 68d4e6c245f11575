"""kmtr.analysis.metrics on constructed data with known answers."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from kmtr.analysis import metrics
from kmtr.analysis.metrics import (
    choose_threshold,
    classification_metrics,
    reconstruction_metrics,
    regression_metrics,
    segmentation_metrics,
    summarise,
)

# ------------------------------------------------------------------------------------------ regression


def test_regression_perfect_prediction():
    rng = np.random.default_rng(0)
    true = rng.normal([150, 60], [30, 8], size=(40, 2))
    df = regression_metrics(true.copy(), true, ["LVEDV (mL)", "LVEF (%)"], true.mean(0) + 1, units=["mL", "%"],
                            n_boot=100)
    assert list(df.columns) == ["phenotype", "unit", "n", "mae", "mae_sd", "mae_lo", "mae_hi", "mean_guess_mae",
                                "mean_guess_sd", "mean_guess_lo", "mean_guess_hi", "p_value", "pearson_r"]
    assert df["mae"].tolist() == [0.0, 0.0]
    assert df["mae_sd"].tolist() == [0.0, 0.0]
    assert (df["mae_lo"] == 0).all() and (df["mae_hi"] == 0).all()
    assert df["pearson_r"].to_numpy() == pytest.approx([1.0, 1.0])
    assert (df["mean_guess_mae"] > 1).all() and (df["p_value"] < 1e-6).all()
    assert df["unit"].tolist() == ["mL", "%"] and df["n"].tolist() == [40, 40]


def test_regression_known_mae_and_missing_values():
    true = np.array([[10.0, 1.0], [20.0, np.nan], [30.0, 3.0], [40.0, 5.0]])
    pred = true + np.array([[1.0, 0.5], [-1.0, 100.0], [2.0, -0.5], [-2.0, 0.5]])
    df = regression_metrics(pred, true, ["a", "b"], np.array([25.0, 3.0]), n_boot=200)
    a, b = df.iloc[0], df.iloc[1]
    assert a["n"] == 4 and b["n"] == 3  # NaN truth excluded for b only
    assert a["mae"] == pytest.approx(1.5)
    assert a["mae_sd"] == pytest.approx(np.std([1, 1, 2, 2], ddof=1))
    assert a["mae_lo"] >= 1.0 and a["mae_hi"] <= 2.0 and a["mae_lo"] <= 1.5 <= a["mae_hi"]
    assert a["mean_guess_mae"] == pytest.approx(10.0)  # |25 − 10|, |25 − 20|, |25 − 30|, |25 − 40|
    assert b["mae"] == pytest.approx(0.5)  # the 100-off prediction of the missing subject is ignored
    assert b["mean_guess_mae"] == pytest.approx(4 / 3)
    assert a["unit"] == ""


def test_regression_model_no_better_than_mean_guess():
    rng = np.random.default_rng(1)
    true = rng.standard_normal((60, 1))
    df = regression_metrics(np.zeros((60, 1)), true, ["x"], np.zeros(1), n_boot=50)
    assert df["mae"][0] == pytest.approx(df["mean_guess_mae"][0])
    assert df["p_value"][0] == 1.0
    assert np.isnan(df["pearson_r"][0])  # constant prediction


# -------------------------------------------------------------------------------------- classification


def test_choose_threshold_unique_best_f1():
    prob = np.array([0.05, 0.1, 0.2, 0.3, 0.55, 0.6, 0.7, 0.8, 0.9])
    label = np.array([0, 0, 0, 0, 1, 0, 1, 1, 1])
    # best F1: positives where prob >= 0.55 (tp 4, fp 1: F1 0.889); >= 0.7 gives 0.857
    t = choose_threshold(prob, label)
    assert t == pytest.approx((0.55 + 0.3) / 2)
    # Youden: >= 0.55 -> TPR 1, FPR 0.2; >= 0.7 -> TPR 0.75, FPR 0 -> best is >= 0.55 (0.8)
    assert choose_threshold(prob, label, "youden") == pytest.approx((0.55 + 0.3) / 2)


def test_choose_threshold_youden_differs_from_f1():
    # 2 positives (0.9, 0.5), 3 negatives at 0.6, 10 at 0.1
    prob = np.array([0.9, 0.5, 0.6, 0.6, 0.6] + [0.1] * 10)
    label = np.array([1, 1, 0, 0, 0] + [0] * 10)
    # >= 0.9: F1 2/3, J 0.5; >= 0.5: F1 4/7, J 1 − 3/13 = 0.77; >= 0.6: F1 2/5, J 0.27
    assert choose_threshold(prob, label, "f1") == pytest.approx(0.75)  # midpoint of 0.9 and 0.6
    assert choose_threshold(prob, label, "youden") == pytest.approx(0.3)  # midpoint of 0.5 and 0.1


def test_choose_threshold_ignores_unknown_and_degenerate():
    prob = np.array([0.1, 0.2, 0.8, 0.9, 0.95])
    label = np.array([0, 0, 1, 1, -1])
    assert choose_threshold(prob, label) == pytest.approx(0.5)  # midpoint of 0.2 and 0.8
    label_unknown_low = np.array([0, -1, 1, 1, -1])
    assert choose_threshold(prob, label_unknown_low) == pytest.approx(0.45)  # midpoint of 0.1 and 0.8
    assert choose_threshold(prob, np.array([0, 0, 0, 0, -1])) == 0.5
    assert choose_threshold(prob, np.array([1, 1, 1, -1, -1])) == 0.5
    with pytest.raises(ValueError):
        choose_threshold(prob, label, "accuracy")


def test_fast_auc_and_ap_equal_sklearn():
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n)
        p = np.round(rng.random(n), 1)  # many ties
        if 0 < y.sum() < n:
            assert metrics._auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
            assert metrics._ap(y, p) == pytest.approx(average_precision_score(y, p), abs=1e-12)


def test_classification_known_answers():
    y_sep = np.array([0, 0, 0, 1, 1, 1, -1, 0])
    p_sep = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 0.0, 0.15])
    y_known = np.array([0, 0, 1, 1, -1, -1, -1, -1])
    p_known = np.array([0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.5, 0.5])
    y_one = np.array([0, 0, 0, 0, 0, 0, -1, 0])
    p_one = np.linspace(0, 1, 8)
    prob = np.stack([p_sep, p_known, p_one], 1)
    label = np.stack([y_sep, y_known, y_one], 1)
    df = classification_metrics(prob, label, [0.5, 0.5, 0.5], ["sep", "known", "one"], n_boot=100)
    assert list(df.columns) == ["disease", "n", "n_pos", "threshold", "auc", "auc_lo", "auc_hi", "f1_at_threshold",
                                "recall_at_threshold", "precision_at_threshold", "f1_at_0.5", "recall_at_0.5",
                                "precision_at_0.5", "ap", "ap_lo", "ap_hi"]
    sep, known, one = (df.iloc[i] for i in range(3))
    assert (sep["n"], sep["n_pos"]) == (7, 3)
    assert sep["auc"] == 1.0 and sep["ap"] == 1.0 and sep["auc_lo"] == 1.0
    assert sep["f1_at_threshold"] == 1.0 and sep["recall_at_threshold"] == 1.0 and sep["precision_at_threshold"] == 1.0
    assert known["n"] == 4 and known["auc"] == pytest.approx(0.75)
    assert known["recall_at_threshold"] == 0.5 and known["precision_at_threshold"] == 1.0
    assert known["f1_at_threshold"] == pytest.approx(2 / 3)
    assert np.isnan(one["auc"]) and np.isnan(one["ap"]) and np.isnan(one["auc_lo"])
    assert one["f1_at_threshold"] == 0.0 and one["precision_at_threshold"] == 0.0  # zero_division=0


def test_classification_reports_both_the_validation_threshold_and_0_5():
    """F1, recall and precision at the validation-chosen threshold and at 0.5 side by side (issue 21)."""
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.8])
    df = classification_metrics(p[:, None], y[:, None], [0.32], ["d"], n_boot=10)
    row = df.iloc[0]
    assert row["threshold"] == 0.32
    assert (row["recall_at_threshold"], row["precision_at_threshold"], row["f1_at_threshold"]) == (1.0, 1.0, 1.0)
    assert row["recall_at_0.5"] == pytest.approx(1 / 3) and row["precision_at_0.5"] == 1.0
    assert row["f1_at_0.5"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------- segmentation


def _square(shape, r0, c0, size, label=1):
    out = np.zeros(shape, dtype=np.uint8)
    out[r0:r0 + size, c0:c0 + size] = label
    return out


def test_segmentation_known_dice_and_hd_against_monai():
    from monai.metrics import compute_hausdorff_distance

    h = w = 32
    true = np.zeros((1, 2, 2, h, w), np.uint8)
    pred = np.zeros_like(true)
    true[0, :, :] = _square((h, w), 8, 8, 10)
    pred[0, :, :] = _square((h, w), 8, 13, 10)  # shifted 5 columns: overlap 10 x 5 -> Dice 0.5
    true[0, :, :, 22:28, 2:8] = 2
    pred[0, :, :, 22:28, 2:8] = 2  # class 2 perfect
    spacing = np.array([[[1.0, 1.0], [2.0, 2.0]]])  # slice 1 at 2 mm
    df = segmentation_metrics(pred, true, np.ones((1, 2), bool), ["sax", "lax"], ["bg", "LV", "MYO"],
                              spacing=spacing)
    r = df.set_index(["view", "class"])
    assert r.loc[("sax", "LV"), "dice"] == pytest.approx(0.5) and r.loc[("sax", "LV"), "n"] == 2
    assert r.loc[("sax", "MYO"), "dice"] == pytest.approx(1.0) and r.loc[("sax", "MYO"), "hd95"] == 0.0
    oh = lambda x: torch.from_numpy(np.stack([x == c for c in range(3)])[None].astype(np.float32))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = float(compute_hausdorff_distance(oh(pred[0, 0, 0]), oh(true[0, 0, 0]), percentile=95)[0, 0])
    assert ref > 0
    assert r.loc[("sax", "LV"), "hd95"] == pytest.approx(ref, rel=1e-5)
    assert r.loc[("lax", "LV"), "hd95"] == pytest.approx(2 * ref, rel=1e-5)  # mm with 2 mm pixels
    assert r.loc[("all", "LV"), "n"] == 4
    assert r.loc[("all", "LV"), "hd95"] == pytest.approx(1.5 * ref, rel=1e-5)
    assert r.loc[("all", "LV"), "dice_sd"] == pytest.approx(0.0)


def test_segmentation_random_shapes_match_monai_hausdorff():
    from monai.metrics import compute_hausdorff_distance

    rng = np.random.default_rng(3)
    h = w = 24
    true = (rng.random((6, h, w)) < 0.3).astype(np.int64) * rng.integers(1, 3, (6, h, w))
    pred = np.where(rng.random((6, h, w)) < 0.8, true, rng.integers(0, 3, (6, h, w)))
    sp = rng.uniform(0.5, 2.0, (6, 2))
    dice, hd, gt_any = metrics._frame_metrics(torch.from_numpy(pred), torch.from_numpy(true), 3, sp)
    oh = lambda x: torch.from_numpy(np.stack([x == c for c in range(3)], 1).astype(np.float32))  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = compute_hausdorff_distance(oh(pred), oh(true), percentile=95, spacing=[list(s) for s in sp]).numpy()
    assert gt_any.all()
    np.testing.assert_allclose(hd, ref, rtol=1e-5)


def test_segmentation_empty_prediction_absent_slices_and_perfect():
    h = w = 16
    true = np.zeros((2, 3, 2, h, w), np.uint8)
    true[..., 4:10, 4:10] = 1
    pred = true.copy()
    pred[1, 0, 1] = 0  # one frame with an empty prediction: Dice 0, HD95 not defined
    present = np.array([[True, True, False], [True, True, False]])
    pred[:, 2] = 1  # garbage on slices without ground truth: must be ignored
    true[:, 2] = 0
    df = segmentation_metrics(pred, true, present, ["sax1", "sax2", "3ch"], ["bg", "LV", "RV"])
    r = df.set_index(["view", "class"])
    assert "3ch" not in set(df["view"])
    assert ("sax1", "RV") not in r.index  # class absent from the ground truth: no frames
    assert r.loc[("sax2", "LV"), "dice"] == 1.0 and r.loc[("sax2", "LV"), "hd95"] == 0.0
    s1 = r.loc[("sax1", "LV")]
    assert s1["n"] == 4 and s1["dice"] == pytest.approx(0.75) and s1["n_missed"] == 1
    assert s1["hd95"] == 0.0  # mean over the 3 frames with a prediction
    a = r.loc[("all", "LV")]
    assert a["n"] == 8 and a["dice"] == pytest.approx(7 / 8)
    assert r.loc[("all", "RV"), "n"] == 0 and np.isnan(r.loc[("all", "RV"), "dice"])
    with pytest.raises(ValueError):
        segmentation_metrics(pred + 5, true, present, ["a", "b", "c"], ["bg", "LV", "RV"])


def test_segmentation_chunking_is_invisible():
    rng = np.random.default_rng(4)
    true = np.zeros((3, 2, 3, 20, 20), np.uint8)
    true[..., 5:15, 5:15] = 1
    true[..., 8:12, 8:12] = 2
    pred = np.where(rng.random(true.shape) < 0.9, true, 0).astype(np.uint8)
    present = np.ones((3, 2), bool)
    a = segmentation_metrics(pred, true, present, ["v0", "v1"], ["bg", "A", "B"], chunk_frames=1)
    b = segmentation_metrics(pred, true, present, ["v0", "v1"], ["bg", "A", "B"], chunk_frames=1000)
    np.testing.assert_allclose(a[["dice", "hd95"]].to_numpy(), b[["dice", "hd95"]].to_numpy())


# -------------------------------------------------------------------------------------- reconstruction


def test_reconstruction_known_psnr_and_perfect():
    rng = np.random.default_rng(5)
    target = rng.random((2, 2, 3, 24, 24)).astype(np.float32)
    target[:, 0, 0, 0, 0] = 1.0  # data range 1 per subject
    pred = target + 0.1
    df = reconstruction_metrics(pred, target)
    assert df["subject"].tolist() == [0, 1]
    assert df["psnr"].to_numpy() == pytest.approx([20.0, 20.0], abs=1e-3)  # 10 log10(1 / 0.01)
    assert (df["ssim"] < 1).all() and (df["ssim"] > 0).all()
    perfect = reconstruction_metrics(target, target)
    assert np.isinf(perfect["psnr"]).all() and perfect["ssim"].to_numpy() == pytest.approx([1.0, 1.0])
    # the data range is the subject's target maximum: scaling both images leaves PSNR unchanged
    scaled = reconstruction_metrics(10 * pred, 10 * target)
    assert scaled["psnr"].to_numpy() == pytest.approx(df["psnr"].to_numpy(), abs=1e-3)
    assert scaled["ssim"].to_numpy() == pytest.approx(df["ssim"].to_numpy(), abs=1e-4)


def test_summarise():
    df = reconstruction_metrics(np.ones((3, 1, 1, 12, 12)), np.ones((3, 1, 1, 12, 12)))
    df["psnr"] = [10.0, 20.0, np.inf]
    s = summarise(df, ["psnr", "ssim"]).set_index("metric")
    assert s.loc["psnr", "mean"] == 15.0 and s.loc["psnr", "n"] == 2
    assert s.loc["psnr", "sd"] == pytest.approx(np.std([10, 20], ddof=1))
    assert s.loc["ssim", "text"].startswith("1 ± 0")
    assert list(summarise(df).set_index("metric").index) == ["psnr", "ssim"]


def test_segmentation_short_axis_row_is_over_the_short_axis_views_only():
    """The issue-23 figure: Dice over the short-axis slices' frames (the store's view ids, not the
    names), long-axis views left out."""
    h = w = 16
    true = np.zeros((1, 3, 2, h, w), np.uint8)
    true[..., 4:12, 4:12] = 1
    pred = true.copy()
    pred[0, 1, :, 4:12, 4:8] = 0  # slice 1: half the square -> Dice 2/3
    pred[0, 2] = 0  # the long-axis view: nothing predicted -> Dice 0
    df = segmentation_metrics(pred, true, np.ones((1, 3), bool), ["basal", "mid", "4ch"], ["bg", "LV"],
                              short_axis=[True, True, False])
    r = df.set_index(["view", "class"])
    assert r.loc[("short-axis", "LV"), "n"] == 4
    assert r.loc[("short-axis", "LV"), "dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert r.loc[("all", "LV"), "dice"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    without = segmentation_metrics(pred, true, np.ones((1, 3), bool), ["sax0", "sax1", "la_4ch"], ["bg", "LV"])
    assert "short-axis" not in set(without["view"])  # no view ids given: no row, whatever the names
    only_lax = segmentation_metrics(pred[:, 2:], true[:, 2:], np.ones((1, 1), bool), ["la_4ch"], ["bg", "LV"],
                                    short_axis=[False])
    assert "short-axis" not in set(only_lax["view"])
