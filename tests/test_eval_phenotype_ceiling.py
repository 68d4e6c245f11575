"""What the store's kept frames allow a phenotype regressor (kmtr.analysis.phenotype_ceiling): the
ground-truth segmentation's short-axis areas read with and without the pixel spacing, and with a
per-subject area error, calibrated on the training split and scored against the mean guess."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from kmtr_fixtures import write_store

from kmtr.analysis.phenotype_ceiling import perturb_curves, phenotype_ceiling, read_split_areas
from kmtr.data import frame_indices
from kmtr.store import StoreError

N, T, H = 30, 10, 32
SPLIT = [0] * 20 + [1] * 2 + [2] * 8  # 20 training, 2 validation, 8 test subjects


def _heart_store(path, spacing_varies: bool = True) -> tuple[str, np.ndarray, np.ndarray]:
    """A fixture store whose short-axis views hold an LV square of side r(t) pixels, a one-pixel
    myocardial ring and an RV block, and whose LVEDV / LVM are exact linear functions of the areas in
    cm² (slice spacing 1 cm). Returns the path, the LV side at ED (N,) and the pixel spacing (N,) mm."""
    store = write_store(path, n=N, t=T, h=H, w=H, status=[1] * N, split=SPLIT)
    rng = np.random.default_rng(1)
    ed = rng.integers(8, 16, N)
    spacing = rng.uniform(1.5, 2.1, N) if spacing_varies else np.full(N, 1.8)
    g = zarr.open_group(store, mode="r+")
    seg = np.zeros((N, 9, T, H, H), np.uint8)
    for i in range(N):
        for t in range(T):
            r = ed[i] - (t % 5)  # ED at frames 0 and 5
            seg[i, :6, t, 4:6 + r, 4:6 + r] = 2
            seg[i, :6, t, 5:5 + r, 5:5 + r] = 1
            seg[i, :6, t, 24:30, 2:2 + r] = 3
    g["seg"][...] = seg
    g["subjects/pixel_spacing"][...] = np.broadcast_to(spacing[:, None, None], (N, 9, 2)).astype(np.float32)
    px_cm2 = spacing**2 / 100
    columns = list(g["labels/phenotypes"].attrs["columns"])
    y = np.full((N, len(columns)), np.nan, np.float32)
    lv_ed = 6 * ed**2 * px_cm2
    y[:, columns.index("LVEDV (mL)")] = lv_ed + 5.0
    epi_mean = np.mean([6 * (ed - t % 5 + 2) ** 2 for t in range(T)], axis=0) * px_cm2
    lv_mean = np.mean([6 * (ed - t % 5) ** 2 for t in range(T)], axis=0) * px_cm2
    y[:, columns.index("LVM (g)")] = 1.05 * (epi_mean - lv_mean)
    g["labels/phenotypes"][...] = y
    return store, ed, spacing


def test_split_areas_are_the_short_axis_pixel_counts_of_the_kept_frames(tmp_path):
    store, ed, spacing = _heart_store(tmp_path / "s.zarr")
    frames = frame_indices(T, 5)  # 0, 2, 4, 6, 8
    areas = read_split_areas(store, "test", frames)
    test = np.flatnonzero(np.asarray(SPLIT) == 2)
    r = ed[test][:, None] - (frames[None] % 5)  # (n, T') LV side in the kept frames
    np.testing.assert_array_equal(areas.pixels["lv"], np.broadcast_to((r**2)[:, None], (len(test), 6, 5)))
    np.testing.assert_array_equal(areas.pixels["epi"].sum(axis=1), 6 * (r + 2) ** 2)
    np.testing.assert_array_equal(areas.pixels["rv"].sum(axis=1), 6 * 6 * r)
    np.testing.assert_allclose(areas.px_cm2, np.broadcast_to((spacing[test] ** 2 / 100)[:, None], (len(test), 6)),
                               rtol=1e-6)
    assert areas.phenotypes.shape == (len(test), 18)


def test_the_spacing_reader_is_exact_and_readers_without_it_or_with_an_area_error_are_worse(tmp_path):
    store, _, _ = _heart_store(tmp_path / "s.zarr")
    table = phenotype_ceiling(store, frames=5, rel_sds=(0.02, 0.3), draws=12, seed=0).set_index(["reader", "phenotype"])
    for name in ("LVEDV (mL)", "LVM (g)"):
        exact = table.loc[("areas", name)]
        assert exact["mae"] < 1e-3 * exact["mean_guess_mae"]  # the phenotype is a linear function of the areas
        assert exact["p_value"] < 0.01 and exact["p_below_0.05"] == 1.0
        pixels = table.loc[("pixels", name)]
        assert 0.01 * pixels["mean_guess_mae"] < pixels["mae"] < pixels["mean_guess_mae"]  # the spacing varies
        small, large = table.loc[("pixels ±2%", name)], table.loc[("pixels ±30%", name)]
        assert pixels["mae"] < small["mae"] < large["mae"]
        assert small["p_below_0.05"] >= large["p_below_0.05"]
        for row in (small, large):  # the power agrees with the median p-value over the draws
            assert row["p_below_0.05"] >= 0.5 if row["p_value"] < 0.05 else row["p_below_0.05"] <= 0.5
    assert table.loc[("pixels ±2%", "LVEDV (mL)"), "n"] == 8


def test_without_spacing_variation_the_pixel_reader_is_exact_too(tmp_path):
    store, _, _ = _heart_store(tmp_path / "s.zarr", spacing_varies=False)
    table = phenotype_ceiling(store, frames=5, rel_sds=(), seed=0).set_index(["reader", "phenotype"])
    assert table.loc[("pixels", "LVEDV (mL)"), "mae"] < 1e-3 * table.loc[("pixels", "LVEDV (mL)"), "mean_guess_mae"]


def test_perturbation_scales_each_subjects_curve_of_each_class_by_one_factor():
    rng = np.random.default_rng(0)
    curves = {"lv": rng.uniform(1, 2, (500, 4)), "epi": rng.uniform(2, 3, (500, 4)), "rv": rng.uniform(1, 2, (500, 4))}
    out = perturb_curves(curves, 0.1, np.random.default_rng(3))
    for name, curve in curves.items():
        ratio = out[name] / curve
        np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, 4)))  # one factor per subject and class
        assert ratio[:, 0].std() == pytest.approx(0.1, rel=0.15)
    assert not np.allclose(out["lv"] / curves["lv"], out["rv"] / curves["rv"])  # independent per class


def test_a_store_without_phenotypes_is_refused_with_its_name(tmp_path):
    store = write_store(tmp_path / "nolabels.zarr", n=6, t=5, h=16, w=16, status=[1] * 6, with_labels=False)
    with pytest.raises(StoreError, match="nolabels.zarr"):
        read_split_areas(store, "train", [0, 1])
