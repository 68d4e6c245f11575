"""What the store's kept frames allow a phenotype regressor to reach, read off the ground truth.

The regression head must beat the mean guess from undersampled k-space. Before blaming the model,
ask what the store's own frames allow: UK Biobank's phenotypes are measured on segmentations, so
the store's *ground-truth* segmentation of the kept frames, read the way the segmentation route
reads a predicted one (short-axis areas, a linear calibration on the training split:
:mod:`kmtr.analysis.seg_phenotypes`), gives the best a reader of those frames can do. Three readers,
each calibrated on the training split and scored on the test split against the training mean:

- ``areas``: pixel counts × the store's pixel spacing (cm²). What the frames hold.
- ``pixels``: pixel counts alone (spacing taken as 1 mm). The trainer's inputs carry no spacing,
  so this is what the short-axis areas give a model of the k-space (or image) alone. (Not a strict
  bound: the long-axis views carry more, e.g. the ventricle's length.)
- ``pixels ±σ``: the same counts, each subject's area curve of each class scaled by ``1 + σ·z``,
  ``z ~ N(0, 1)`` per subject and class: a reader whose areas are off by ``σ`` (relative SD) per
  subject. Over ``draws`` noise draws it gives the median MAE and p-value and the fraction of
  draws with p < 0.05 (the power of the paired test on this test split at that precision).

The mean guess, MAE and p-value are those of the evaluation (:func:`kmtr.analysis.metrics.regression_metrics`:
the training mean, a paired Wilcoxon test of the absolute errors), so the rows compare directly with
``kmtr eval``'s regression table.

    python -m kmtr.analysis.phenotype_ceiling STORE [--frames 5] [--sd 0.05,0.1,0.2] [--draws 20]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kmtr.analysis import seg_phenotypes as sp
from kmtr.analysis.metrics import regression_metrics
from kmtr.store import StoreError, StoreInfo, open_store, read_store_info

__all__ = ["SplitAreas", "calibrated_scores", "perturb_curves", "phenotype_ceiling", "read_split_areas"]


@dataclass
class SplitAreas:
    """Ground-truth short-axis area curves of one split (N subjects, T' kept frames).

    Attributes:
        pixels: ``{"lv", "epi", "rv"}`` → (N, 6, T') pixel counts per short-axis view and frame
            (``epi`` = LV blood pool + myocardium).
        px_cm2: (N, 6) area of one pixel in cm² in each short-axis view (Δy·Δx / 100).
        phenotypes: (N, P) the store's phenotypes (NaN = missing).
    """

    pixels: dict[str, np.ndarray]
    px_cm2: np.ndarray
    phenotypes: np.ndarray


def read_split_areas(location: str, split: str, frames: Sequence[int]) -> SplitAreas:
    """Pixel counts of LV, LV + myocardium and RV over the short-axis views of every subject of
    ``split`` in ``frames`` (indices into T), from the store's ``seg`` (one subject in memory at a time).

    Raises:
        StoreError: the store has no segmentations or no phenotypes, or ``split`` is empty.
    """
    group = open_store(location)
    info: StoreInfo = read_store_info(group, str(location))
    if not info.has_seg or not info.has_phenotypes:
        raise StoreError(f"{location} needs both seg and labels/phenotypes for the ceiling")
    rows = info.rows(split)
    sax = [i for i, v in enumerate(info.view_ids) if v == 0]
    frames = np.asarray(frames)
    pixels = {name: np.zeros((len(rows), len(sax), len(frames)), np.int64) for name in ("lv", "epi", "rv")}
    spacing = np.asarray(group["subjects/pixel_spacing"][:], np.float64)
    px_cm2 = np.prod(spacing[rows][:, sax], axis=-1) / 100.0  # (N, 6)
    seg_array = group["seg"]
    for i, row in enumerate(rows):
        seg = np.asarray(seg_array.oindex[int(row), sax])[:, frames]  # (6, T', H, W)
        pixels["lv"][i] = (seg == sp.LV).sum(axis=(2, 3))
        pixels["epi"][i] = np.isin(seg, (sp.LV, sp.MYO)).sum(axis=(2, 3))
        pixels["rv"][i] = (seg == sp.RV).sum(axis=(2, 3))
    phenotypes = np.asarray(group["labels/phenotypes"][:], np.float64)[rows]
    return SplitAreas(pixels, px_cm2, phenotypes)


def perturb_curves(curves: dict[str, np.ndarray], rel_sd: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Each subject's curve of each class scaled by ``1 + rel_sd · z``, ``z ~ N(0, 1)`` (N,) per class:
    a per-subject relative area error of SD ``rel_sd`` (curves (N, T') unchanged in unit)."""
    return {name: c * (1.0 + rel_sd * rng.standard_normal(len(c)))[:, None] for name, c in curves.items()}


def _curves(areas: SplitAreas, with_spacing: bool) -> dict[str, np.ndarray]:
    """Area curves (N, T') summed over the short-axis views: cm² with the spacing, else pixels × 1 mm²."""
    scale = areas.px_cm2 if with_spacing else np.full_like(areas.px_cm2, 0.01)  # 1 mm² = 0.01 cm²
    return {name: (counts * scale[:, :, None]).sum(axis=1) for name, counts in areas.pixels.items()}


def calibrated_scores(train: dict[str, np.ndarray], y_train: np.ndarray, test: dict[str, np.ndarray],
                      y_test: np.ndarray, columns: Sequence[str], units: Sequence[str]) -> pd.DataFrame:
    """Fit the segmentation route's calibration (:func:`kmtr.analysis.seg_phenotypes.fit_calibration`)
    on the training curves, apply it to the test curves and score it as the evaluation does.

    Args:
        train, test: ``{"lv", "epi", "rv"}`` area curves (N, T').
        y_train, y_test: (N, P) phenotypes; ``columns``, ``units``: (P,) their names and units.

    Returns:
        :func:`kmtr.analysis.metrics.regression_metrics`' rows for the phenotypes the calibration fits.
    """
    def features(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return sp.curve_features(c["lv"], c["epi"], c["rv"])

    fits = sp.fit_calibration(features(train), y_train, columns)
    names = list(fits)
    idx = [list(columns).index(c) for c in names]
    predicted = sp.apply_calibration(fits, features(test))
    pred = np.stack([predicted[c] for c in names], axis=1)
    return regression_metrics(pred, y_test[:, idx], names, np.nanmean(y_train[:, idx], axis=0),
                              units=[units[j] for j in idx], n_boot=0)


def phenotype_ceiling(location: str, frames: int | None = 5, rel_sds: Sequence[float] = (0.05, 0.1, 0.2),
                      draws: int = 20, seed: int = 0, train_split: str = "train",
                      test_split: str = "test") -> pd.DataFrame:
    """The three readers of the module docstring on one store.

    Args:
        location: the store.
        frames: frames kept, evenly spaced as the trainer keeps them (:func:`kmtr.data.frame_indices`;
            None = all T).
        rel_sds: relative SDs of the noisy pixel readers.
        draws: noise draws per noisy reader.
        seed: seed of the noise draws.

    Returns:
        One row per (reader, phenotype): ``reader, phenotype, unit, n, mae, mean_guess_mae, p_value,
        pearson_r, p_below_0.05`` (fraction of draws; 0 or 1 for the exact readers). For the noisy
        readers ``mae``, ``p_value`` and ``pearson_r`` are medians over the draws.
    """
    from kmtr.data import frame_indices

    info = read_store_info(open_store(location), str(location))
    keep = frame_indices(info.t, frames)
    columns, units = list(info.phenotype_columns), list(info.phenotype_units)
    train = read_split_areas(location, train_split, keep)
    test = read_split_areas(location, test_split, keep)
    keys = ["phenotype", "unit", "n", "mae", "mean_guess_mae", "p_value", "pearson_r"]

    def score(tr: dict[str, np.ndarray], te: dict[str, np.ndarray]) -> pd.DataFrame:
        return calibrated_scores(tr, train.phenotypes, te, test.phenotypes, columns, units)[keys]

    tables = []
    for reader, with_spacing in (("areas", True), ("pixels", False)):
        df = score(_curves(train, with_spacing), _curves(test, with_spacing))
        tables.append(df.assign(reader=reader, **{"p_below_0.05": (df["p_value"] < 0.05).astype(float)}))
    rng = np.random.default_rng(seed)
    tr_px, te_px = _curves(train, False), _curves(test, False)
    for rel_sd in rel_sds:
        runs = [score(perturb_curves(tr_px, rel_sd, rng), perturb_curves(te_px, rel_sd, rng)) for _ in range(draws)]
        stacked = pd.concat(runs)
        med = stacked.groupby("phenotype", sort=False)[["mae", "p_value", "pearson_r"]].median()
        power = stacked.assign(hit=stacked["p_value"] < 0.05).groupby("phenotype", sort=False)["hit"].mean()
        df = runs[0].set_index("phenotype")
        df[["mae", "p_value", "pearson_r"]] = med
        tables.append(df.reset_index().assign(reader=f"pixels ±{rel_sd:.0%}", **{"p_below_0.05": power.to_numpy()}))
    out = pd.concat(tables, ignore_index=True)
    return out[["reader", *keys, "p_below_0.05"]]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--frames", type=int, default=5, help="frames kept, evenly spaced (0 = all)")
    parser.add_argument("--sd", default="0.05,0.1,0.2", help="relative SDs of the noisy readers")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phenotypes", default="", help="comma-separated name prefixes to print (default all)")
    args = parser.parse_args(argv)
    table = phenotype_ceiling(args.store, args.frames or None, [float(x) for x in args.sd.split(",") if x],
                              args.draws, args.seed)
    if args.phenotypes:
        prefixes = tuple(p.strip() for p in args.phenotypes.split(","))
        table = table[table["phenotype"].str.startswith(prefixes)]
    with pd.option_context("display.width", 160, "display.max_rows", 500):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
