"""The demo cohort: layout, geometry, determinism, analytic ground truth vs voxels, table, resumability."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from kspace_sim.demo import DEMO_GENERATOR_VERSION, demo_eids, demo_subject, write_demo_cohort
from kspace_sim.demo.cohort import SUBJECT_FILES
from kspace_sim.demo.params import sample_heart_parameters
from kspace_sim.demo.participants import DISEASES, ICD10_CODES, PAPER_PREVALENCE, sample_participant
from kspace_sim.demo.phantom import N_FRAMES, cycle_state, heart_ellipsoids, rv_volume_mm3
from kspace_sim.demo.truth import PHENOTYPE_COLUMNS, analytic_phenotypes
from kspace_sim.sources.nifti import load_subject_nifti

N_COHORT = 2


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("demo")
    return out, write_demo_cohort(out, N_COHORT, seed=0, workers=1)


@pytest.fixture(scope="module")
def loaded(cohort: tuple[Path, list[str]]):  # noqa: ANN201
    """The first cohort subject read back by the simulator's NIfTI reader."""
    out, eids = cohort
    return load_subject_nifti(out / eids[0])


@pytest.fixture(scope="module")
def subject() -> tuple:
    return demo_subject("1000123", seed=0)


def _voxel_ventricles(seg_sa: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """LV/RV volumes (mL) at ED and ES and LVM (g) by voxel counting, ES = argmin LV volume."""
    voxel_ml = float(np.prod(spacing)) * 1e-3
    counts = np.stack([(seg_sa == label).sum(axis=(0, 1, 2)) for label in (1, 2, 3)]) * voxel_ml  # (3, T)
    es = int(np.argmin(counts[0]))
    return {
        "LVEDV (mL)": counts[0, 0],
        "LVESV (mL)": counts[0, es],
        "LVM (g)": 1.05 * counts[1, 0],
        "RVEDV (mL)": counts[2, 0],
        "RVESV (mL)": counts[2, es],
        "es": es,
    }


def test_layout_shapes_dtypes_headers(cohort: tuple[Path, list[str]], loaded) -> None:  # noqa: ANN001
    out, eids = cohort
    assert len(eids) == N_COHORT and eids == demo_eids(N_COHORT, 0)
    for name in ("participants.csv", "ground_truth.csv", "DEMO_COHORT.txt"):
        assert (out / name).exists()
    text = (out / "DEMO_COHORT.txt").read_text()
    assert "seed: 0" in text and DEMO_GENERATOR_VERSION in text
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"
    for eid in eids:
        d = out / eid
        assert sorted(p.name for p in d.iterdir()) == sorted(SUBJECT_FILES)
        truth = json.loads((d / "ground_truth.json").read_text())
        sa = nib.load(d / "sa.nii.gz")
        x, y, z, t = sa.shape
        assert t == N_FRAMES and 10 <= z <= 12 and min(x, y) >= 140
        assert sa.get_data_dtype() == np.int16
        zooms = sa.header.get_zooms()
        assert 1.7 <= zooms[0] <= 2.0 and zooms[0] == zooms[1] and zooms[2] == pytest.approx(10.0)
        assert zooms[3] == pytest.approx(truth["dt_s"], rel=1e-6)
        assert sa.header.get_xyzt_units() == ("mm", "sec")
        assert 60.0 / (N_FRAMES * zooms[3]) == pytest.approx(truth["heart_rate_bpm"], rel=1e-5)
        data = np.asarray(sa.dataobj)
        assert data.min() >= 0 and 600 < data.max() < 32767
        for view in ("la_2ch", "la_3ch", "la_4ch"):
            img = nib.load(d / f"{view}.nii.gz")
            assert img.shape[2:] == (1, N_FRAMES) and min(img.shape[:2]) >= 140
            assert img.get_data_dtype() == np.int16
            assert img.header.get_zooms()[3] == pytest.approx(zooms[3])
        for seg_name, labels in (("seg_sa", {0, 1, 2, 3}), ("seg_la_2ch", {0, 1}), ("seg_la_4ch", {0, 1, 2})):
            seg = nib.load(d / f"{seg_name}.nii.gz")
            image = nib.load(d / f"{seg_name[4:]}.nii.gz")
            assert seg.shape == image.shape and seg.get_data_dtype() == np.uint8
            np.testing.assert_allclose(seg.affine, image.affine)
            assert set(np.unique(np.asarray(seg.dataobj)).tolist()) == labels
        assert set(truth["phenotypes"]) == set(PHENOTYPE_COLUMNS)
        assert set(truth["diseases"]) == set(DISEASES)
    # the simulator's reader accepts it
    assert loaded.images["sa"].shape[-1] == N_FRAMES and set(loaded.segs) == {"seg_sa", "seg_la_2ch", "seg_la_4ch"}


def test_in_memory_subject_matches_files_and_is_deterministic(
    cohort: tuple[Path, list[str]], loaded  # noqa: ANN001
) -> None:
    out, eids = cohort
    vol, truth = demo_subject(eids[0], seed=0)
    ref = loaded
    for name, arr in vol.images.items():
        assert arr.dtype == np.float32 and np.array_equal(arr, np.rint(arr))
        np.testing.assert_array_equal(arr, ref.images[name])
        np.testing.assert_allclose(vol.affines[name], ref.affines[name], atol=1e-4)
        np.testing.assert_allclose(vol.spacing[name], ref.spacing[name], rtol=1e-6)
    for name, seg in vol.segs.items():
        assert seg.dtype == np.uint8
        np.testing.assert_array_equal(seg, ref.segs[name])
    assert vol.dt == pytest.approx(ref.dt, rel=1e-6)
    assert truth == json.loads((out / eids[0] / "ground_truth.json").read_text())
    other = np.asarray(nib.load(out / eids[1] / "seg_sa.nii.gz").dataobj)
    assert other.shape != vol.segs["seg_sa"].shape or not np.array_equal(other, vol.segs["seg_sa"])
    params_seed1 = sample_heart_parameters(sample_participant(eids[0], 1), 1)
    assert analytic_phenotypes(params_seed1, cycle_state(params_seed1))[0] != truth["phenotypes"]


def test_affines_consistent_across_views(subject: tuple) -> None:
    vol, truth = subject
    heart = truth["heart"]
    origin, u, a = (np.asarray(heart[k]) for k in ("base_centre_world", "long_axis_world", "septal_axis_world"))
    b = np.cross(u, a)
    length = heart["lv_length_ed"]
    es = truth["es_frame"]

    def voxel(name: str, world: np.ndarray) -> np.ndarray:
        return (np.linalg.inv(vol.affines[name]) @ np.append(world, 1.0))[:3]

    for frac in (0.2, 0.5, 0.7):  # points of the LV centreline, inside the blood pool at ED and ES
        point = origin - frac * length * 0.75 * u
        for name in ("sa", "la_2ch", "la_3ch", "la_4ch"):
            ijk = voxel(name, point)
            shape = vol.images[name].shape
            assert 0 <= ijk[0] <= shape[0] - 1 and 0 <= ijk[1] <= shape[1] - 1, name
            if name != "sa":
                assert abs(ijk[2]) < 1e-6, f"{name}: the long axis must lie in the plane"
        i, j, k = np.rint(voxel("sa", point)).astype(int)
        assert vol.segs["seg_sa"][i, j, k, 0] == 1 and vol.segs["seg_sa"][i, j, k, es] == 1
        assert vol.images["sa"][i, j, k, 0] > 500  # bright blood
    # the SA slice normal is the long axis, slice 0 basal; a slice boundary lies on the base plane
    normal = vol.affines["sa"][:3, 2]
    np.testing.assert_allclose(normal / np.linalg.norm(normal), -u, atol=1e-9)
    k_base = voxel("sa", origin)[2]
    assert abs(k_base - (np.floor(k_base) + 0.5)) < 1e-6
    # atria: the LA centre is labelled in both LA views at ES, the RA centre in the 4ch view only
    la_centre = origin + np.array(heart["la_centre"]) @ np.stack([a, b, u])
    ra_centre = origin + np.array(heart["ra_centre"]) @ np.stack([a, b, u])
    cases = (("seg_la_2ch", la_centre, 1), ("seg_la_4ch", la_centre, 1), ("seg_la_4ch", ra_centre, 2))
    for name, centre, label in cases:
        ijk = voxel(name, centre - (centre - origin) @ _plane_normal(vol, name) * _plane_normal(vol, name))
        i, j = np.rint(ijk[:2]).astype(int)
        assert vol.segs[name][i, j, es] == label, name
    assert not (vol.segs["seg_la_2ch"] == 2).any()


def _plane_normal(vol, name: str) -> np.ndarray:  # noqa: ANN001
    n = vol.affines[name][:3, 2]
    return n / np.linalg.norm(n)


def test_voxel_ventricular_volumes_within_2_percent_of_analytic(subject: tuple) -> None:
    cases = [subject]
    # a hypertensive and an infarct subject (thick wall, low EF) from the seed-0 eid stream
    wanted = {"hypertension": None, "infarct": None}
    for eid in demo_eids(400, 0):
        has = sample_participant(eid, 0).has
        for d in wanted:
            if has[d] and wanted[d] is None:
                wanted[d] = eid
        if all(wanted.values()):
            break
    cases += [demo_subject(e, 0) for e in wanted.values() if e is not None]
    for vol, truth in cases:
        measured = _voxel_ventricles(vol.segs["seg_sa"], vol.spacing["sa"])
        assert measured["es"] == truth["es_frame"]
        for col in ("LVEDV (mL)", "LVESV (mL)", "LVM (g)", "RVEDV (mL)", "RVESV (mL)"):
            assert measured[col] == pytest.approx(truth["phenotypes"][col], rel=0.02), (vol.subject_id, col)


def test_atrial_sections_match_pixel_areas(subject: tuple) -> None:
    vol, truth = subject
    c = truth["curves"]
    cases = (
        ("seg_la_2ch", 1, "la_area_2ch_cm2"),
        ("seg_la_4ch", 1, "la_area_4ch_cm2"),
        ("seg_la_4ch", 2, "ra_area_4ch_cm2"),
    )
    for seg_name, label, key in cases:
        dx, dy, _ = vol.spacing[seg_name[4:]]
        pixels = (vol.segs[seg_name] == label).sum(axis=(0, 1)) * dx * dy / 100.0
        np.testing.assert_allclose(pixels, c[key], rtol=0.03)
    p = truth["phenotypes"]
    assert p["LAV max (mL)"] == pytest.approx(max(c["la_biplane_volume_ml"]))
    assert 0 < p["LAEF (%)"] < 100 and 0 < p["RAEF (%)"] < 100


def test_analytic_truth_is_self_consistent(subject: tuple) -> None:
    _, truth = subject
    p = truth["phenotypes"]
    assert p["LVSV (mL)"] == pytest.approx(p["LVEDV (mL)"] - p["LVESV (mL)"])
    assert p["LVEF (%)"] == pytest.approx(100 * p["LVSV (mL)"] / p["LVEDV (mL)"])
    assert p["LVCO (L/min)"] == pytest.approx(p["LVSV (mL)"] * truth["heart_rate_bpm"] / 1000)
    lv = np.asarray(truth["curves"]["lv_blood_volume_ml"])
    assert int(np.argmin(lv)) == truth["es_frame"] and 0.34 <= truth["es_frame"] / N_FRAMES <= 0.40
    assert np.all(np.diff(lv[: truth["es_frame"] + 1]) < 0)  # systole empties monotonically
    la = np.asarray(truth["curves"]["la_biplane_volume_ml"])
    assert abs(int(np.argmax(la)) - truth["es_frame"]) <= 2  # atria fill while the ventricles empty
    myo = np.asarray(truth["curves"]["lv_myocardium_volume_ml"])
    np.testing.assert_allclose(myo, myo[0], rtol=1e-9)  # incompressible myocardium


def test_rv_quadrature_converges() -> None:
    record = sample_participant("1000123", 0)
    params = sample_heart_parameters(record, 0)
    state = cycle_state(params)
    shapes = heart_ellipsoids(params, state, 0)
    coarse = rv_volume_mm3(shapes["rv"], shapes["lv_epi"], params.rv_septal_cut)
    fine = rv_volume_mm3(shapes["rv"], shapes["lv_epi"], params.rv_septal_cut, n=2000)
    assert coarse == pytest.approx(fine, rel=1e-4)
    phenotypes, _ = analytic_phenotypes(params, state)
    assert phenotypes["RVEDV (mL)"] == pytest.approx(coarse / 1000)


def test_eids() -> None:
    eids = demo_eids(50, seed=3)
    assert len(set(eids)) == 50 and all(re.fullmatch(r"9\d{6}", e) for e in eids)
    assert demo_eids(20, seed=3) == eids[:20]
    assert demo_eids(20, seed=4) != eids[:20]


def test_participant_table_and_prevalences(cohort: tuple[Path, list[str]]) -> None:
    out, eids = cohort
    table = pd.read_csv(out / "participants.csv")
    assert table["eid"].astype(str).tolist() == eids
    cols = list(table.columns)
    k = sum(c.startswith("41270-0.") for c in cols)
    assert k >= 1 and [f"41280-0.{i}" for i in range(k)] == [c for c in cols if c.startswith("41280-0.")]
    for c in ("53-2.0", "6150-2.0", "6150-2.1", "6150-2.2", "6150-2.3", "2966-2.0"):
        assert c in cols

    records = [sample_participant(e, 7) for e in demo_eids(2500, 7)]
    frac = {d: np.mean([r.has[d] for r in records]) for d in DISEASES}
    for d in ("CAD", "high_blood_pressure", "hypertension", "infarct", "diabetes"):
        assert frac[d] == pytest.approx(PAPER_PREVALENCE[d], abs=max(0.3 * PAPER_PREVALENCE[d], 0.01)), d
    assert all(r.has["CAD"] for r in records if r.has["infarct"])
    ht = np.array([r.has["hypertension"] for r in records])
    hbp = np.array([r.has["high_blood_pressure"] for r in records])
    assert hbp[ht].mean() > 0.75 and hbp[~ht].mean() < 0.15
    labels_any = [r.labels("any") for r in records]
    labels_prev = [r.labels("prevalent") for r in records]
    assert all(labels_any[i][d] == int(r.has[d]) for i, r in enumerate(records) for d in DISEASES)
    assert sum(a["CAD"] for a in labels_any) > sum(p["CAD"] for p in labels_prev)  # some dated after the visit

    big = __import__("kspace_sim.demo.participants", fromlist=["participants_table"]).participants_table(records[:300])
    all_codes = {c for codes in ICD10_CODES.values() for c in codes}
    codes = big.filter(like="41270-0.").stack().dropna()
    assert codes.str.fullmatch(r"[A-Z]\d{2,3}").all() and codes.isin(all_codes).any() and (~codes.isin(all_codes)).any()
    dates = big.filter(like="41280-0.").stack().dropna()
    assert dates.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    assert set(big.filter(like="6150-2.").stack().dropna().astype(int)) <= {-7, 1, 2, 3, 4}
    hbp_rows = big.filter(like="6150-2.").eq(4).any(axis=1)
    assert big.loc[~hbp_rows, "2966-2.0"].isna().all() and big.loc[hbp_rows, "2966-2.0"].notna().any()

    scaled = [sample_participant(e, 7, prevalence_scale=2.0) for e in demo_eids(1000, 7)]
    assert np.mean([r.has["CAD"] for r in scaled]) > 1.5 * PAPER_PREVALENCE["CAD"]
    override = [sample_participant(e, 7, prevalence={"stroke": 0.5}) for e in demo_eids(200, 7)]
    assert np.mean([r.has["stroke"] for r in override]) > 0.35


def test_disease_effects_on_phenotypes() -> None:
    rows = []
    for eid in demo_eids(500, 11):
        record = sample_participant(eid, 11, prevalence_scale=3.0)
        params = sample_heart_parameters(record, 11)
        state = cycle_state(params, np.array([0, params.es_frame]))
        lv = 2 / 3 * np.pi * state.lv_radius**2 * state.lv_length / 1000
        epi = 2 / 3 * np.pi * state.epi_radius**2 * state.epi_length / 1000
        lvm, lvef = 1.05 * (epi[0] - lv[0]), 100 * (1 - lv[1] / lv[0])
        rows.append({**record.has, "lvm": lvm, "lvef": lvef, "la": np.prod(params.la_semi_axes)})
    df = pd.DataFrame(rows)
    healthy = ~df[list(DISEASES)].any(axis=1)
    assert df.loc[df.hypertension, "lvm"].mean() > 1.15 * df.loc[healthy, "lvm"].mean()
    assert df.loc[df.CAD, "lvef"].mean() < df.loc[healthy, "lvef"].mean() - 4
    assert df.loc[df.infarct, "lvef"].mean() < df.loc[df.CAD & ~df.infarct, "lvef"].mean() - 5
    assert df.loc[df.stroke, "la"].mean() > df.loc[healthy, "la"].mean()


def test_resumable_and_parallel_identical(cohort: tuple[Path, list[str]], tmp_path: Path) -> None:
    out, eids = cohort
    # parallel run into a fresh folder gives byte-identical files
    par = tmp_path / "par"
    assert write_demo_cohort(par, N_COHORT, seed=0, workers=2) == eids
    for eid in eids:
        for f in SUBJECT_FILES:
            assert (par / eid / f).read_bytes() == (out / eid / f).read_bytes(), (eid, f)
    for f in ("participants.csv", "ground_truth.csv"):
        assert (par / f).read_bytes() == (out / f).read_bytes()
    # resume: a complete subject is skipped, a killed one (missing file, stray temp file) is redone
    done, partial = par / eids[0], par / eids[1]
    mtimes = {f: (done / f).stat().st_mtime_ns for f in SUBJECT_FILES}
    (partial / "seg_sa.nii.gz").unlink()
    (partial / "ground_truth.json").unlink()
    (partial / ".sa.123.tmp.nii.gz").write_bytes(b"half")
    write_demo_cohort(par, N_COHORT, seed=0, workers=1)
    assert {f: (done / f).stat().st_mtime_ns for f in SUBJECT_FILES} == mtimes
    for f in SUBJECT_FILES:
        assert (partial / f).read_bytes() == (out / eids[1] / f).read_bytes()
    assert not (partial / ".sa.123.tmp.nii.gz").exists()


def test_vectorised_quadrics_match_ellipsoids() -> None:
    from kspace_sim.demo.phantom import ELLIPSOID_NAMES, ellipsoid_quadrics

    params = sample_heart_parameters(sample_participant("1000123", 0), 0)
    state = cycle_state(params)
    quadrics = ellipsoid_quadrics(params, state)
    for t in (0, params.es_frame, N_FRAMES - 1):
        shapes = heart_ellipsoids(params, state, t)
        for s, name in enumerate(ELLIPSOID_NAMES):
            np.testing.assert_allclose(quadrics[t, s], shapes[name].quadric_coefficients(), rtol=1e-12, atol=1e-12)


def test_label_builder_reads_the_participant_table(tmp_path: Path) -> None:
    from kspace_sim.labels import diseases
    from kspace_sim.demo.participants import participants_table

    eids = demo_eids(400, 5)
    records = [sample_participant(e, 5, prevalence_scale=3.0) for e in eids]
    path = tmp_path / "participants.csv"
    participants_table(records).to_csv(path, index=False)
    for policy in ("any", "prevalent"):
        labels = diseases.disease_labels(path, eids, policy=policy).labels
        expected = np.array([[r.labels(policy)[d] for d in labels.columns] for r in records])
        np.testing.assert_array_equal(labels.to_numpy(), expected)
