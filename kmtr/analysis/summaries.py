"""The short tables and figures of a run's report section that several tasks share: mean ± SD
cells, the regression summary, the segmentation Dice / HD95 tables with overlays, and the
ventricular phenotypes measured on a predicted segmentation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kmtr.analysis import figures, metrics
from kmtr.analysis.predictions import Predictions

__all__ = ["pm", "regression_summary", "segmentation_phenotypes", "segmentation_tables", "short_axis_areas"]


def pm(mean: float, sd: float, digits: int | None = None) -> str:
    """``mean ± sd``: 3 significant digits (SD 2), or ``digits`` decimals for both (e.g. PSNR in dB)."""
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3g} ± {sd:.2g}" if digits is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def regression_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The report's table of :func:`kmtr.analysis.metrics.regression_metrics` output."""
    return pd.DataFrame({
        "phenotype": df["phenotype"],
        "MAE ± SD": [pm(m, s) for m, s in zip(df["mae"], df["mae_sd"])],
        "95% CI": [f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(df["mae_lo"], df["mae_hi"])],
        "mean guess MAE ± SD": [pm(m, s) for m, s in zip(df["mean_guess_mae"], df["mean_guess_sd"])],
        "better than mean guess": np.where(df["mae"] < df["mean_guess_mae"], "yes", "no"),
        "p (Wilcoxon)": df["p_value"],
    })


def segmentation_tables(test: Predictions, class_names: list[str], out: Path, tag: str
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dice and HD95 per view and class of segmentation predictions (``metrics.segmentation_metrics``)
    and the report's short table (all views, per class, with the short-axis views' Dice beside); writes the overlay figure ``<tag>_overlay.png``."""
    view_names = test.truth["view_names"]
    view_ids = test.truth.get("view_ids")  # absent from predictions saved before it was kept
    df = metrics.segmentation_metrics(test.pred, test.truth["seg"], test.truth["seg_present"].astype(bool),
                                      list(view_names), list(class_names), spacing=test.truth["pixel_spacing"],
                                      short_axis=None if view_ids is None else np.asarray(view_ids) == 0)
    overlays(test, tuple(view_names), out / f"{tag}_overlay.png")
    summary = df[df["view"] == "all"][["class", "n", "dice", "dice_sd", "hd95", "hd95_sd"]]
    table = pd.DataFrame({
        "class": summary["class"].to_numpy(), "frames": summary["n"].to_numpy(),
        "Dice ± SD": [pm(m, s) for m, s in zip(summary["dice"], summary["dice_sd"])],
        "HD95 (mm) ± SD": [pm(m, s) for m, s in zip(summary["hd95"], summary["hd95_sd"])],
    })
    sax = df[df["view"] == "short-axis"].set_index("class")
    if len(sax):  # the ventricles' usual figure: Dice over the short-axis views' frames
        table.insert(2, "short-axis Dice", [pm(sax.at[c, "dice"], sax.at[c, "dice_sd"]) if c in sax.index else "–"
                                            for c in table["class"]])
    return df, table


def segmentation_phenotypes(cfg: Any, test: Predictions, scatter: Path, predict: Callable[[str], Predictions],
                            n_boot: int, seed: int) -> pd.DataFrame | None:
    """Ventricular phenotypes measured on the predicted segmentation of ``test`` (see
    :mod:`kmtr.analysis.seg_phenotypes`): calibrated on the training split's predictions, compared
    with the mean guess. None when the store has no phenotypes the calibration knows or no
    training subjects to calibrate on."""
    from kmtr.analysis import seg_phenotypes as sp
    from kmtr.store import StoreError, open_store, read_store_info

    info = read_store_info(open_store(cfg.data.data), cfg.data.data)
    columns = list(info.phenotype_columns)
    if "phenotypes" not in test.truth or not any(c in sp.FEATURES for c in columns):
        return None
    try:
        train = predict(cfg.data.train_split)
    except StoreError:  # no training subjects to calibrate on (e.g. an external test-only store)
        return None
    sax = [i for i, v in enumerate(info.view_ids) if v == 0]

    def features(pred: Predictions) -> dict[str, np.ndarray]:
        return sp.phenotype_features(pred.pred, pred.truth["pixel_spacing"], sax, lv=sp.LV, myo=sp.MYO, rv=sp.RV)

    y_train = train.truth["phenotypes"].astype(np.float64)
    fits = sp.fit_calibration(features(train), y_train, columns)
    if not fits:
        return None
    names = list(fits)
    predicted = sp.apply_calibration(fits, features(test))
    idx = [columns.index(c) for c in names]
    y_test = test.truth["phenotypes"][:, idx].astype(np.float64)
    pred = np.stack([predicted[c] for c in names], axis=1)
    units = [info.phenotype_units[j] if j < len(info.phenotype_units) else "" for j in idx]
    df = metrics.regression_metrics(pred, y_test, names, np.nanmean(y_train[:, idx], axis=0), units=units,
                                    n_boot=n_boot, seed=seed)
    figures.scatter_pred_true(pred, y_test, names, units, scatter)
    return df.assign(features=[" + ".join(fits[c]["features"]) for c in names])  # type: ignore[arg-type]


def short_axis_areas(test: Predictions) -> pd.DataFrame | None:
    """The report's table of :func:`kmtr.analysis.seg_phenotypes.area_agreement`: per class, each
    subject's largest short-axis area (pixels) predicted against the ground truth. None without
    short-axis views (or for predictions saved before ``view_ids`` was kept)."""
    from kmtr.analysis import seg_phenotypes as sp

    view_ids = test.truth.get("view_ids")
    sax = [] if view_ids is None else [int(i) for i in np.flatnonzero(np.asarray(view_ids) == 0)]
    if not sax:
        return None
    classes = {"LV blood pool": sp.LV, "LV blood pool + myocardium": (sp.LV, sp.MYO), "RV blood pool": sp.RV}
    rows = sp.area_agreement(test.pred, test.truth["seg"], sax, classes)
    return pd.DataFrame({
        "class": [r["class"] for r in rows], "subjects": [r["n"] for r in rows],
        "bias (%)": [f"{r['bias']:+.1f}" for r in rows],
        "per-subject error SD (%)": [f"{r['sd']:.1f}" for r in rows],
        "r": [f"{r['r']:.2f}" for r in rows],
    })


def overlays(test: Predictions, view_names: tuple[str, ...], path: Path) -> None:
    """Up to 4 examples: first test subjects, a mid short-axis slice and the 4ch view, frame 0."""
    picks = []
    present = test.truth["seg_present"].astype(bool)
    for i in range(min(2, len(test.rows))):
        for s in (2, len(view_names) - 1):
            if s < present.shape[1] and present[i, s]:
                picks.append((i, s))
    if not picks:
        return
    images = np.stack([test.truth["image_frame0"][i, s] for i, s in picks])
    true = np.stack([test.truth["seg"][i, s, 0] for i, s in picks])
    pred = np.stack([test.pred[i, s, 0] for i, s in picks])
    figures.segmentation_overlay(images, true, pred, [f"subject {i}, {view_names[s]}" for i, s in picks], path)
