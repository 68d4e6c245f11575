"""Foreign inputs: every entry of an input folder accounted for (build, labels, convert), convert on
the folder ``kspace-sim demo --format dicom`` wrote, and each view's own frame interval kept from
its own TriggerTimes (convert and the build's in-task conversion)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli.kspace_sim_app import app
from kspace_sim.build import BuildConfig, build_store
from kspace_sim.demo.dicom_export import export_subject_dicom
from kspace_sim.labels.label_table import build_label_table
from kspace_sim.simulate import MaskSpec, SimulationParams
from kspace_sim.sources.dicom_convert import SUMMARY_FILE, convert_cohort
from kspace_sim.sources.dicom_zip import load_subject_zips
from kspace_sim.sources.discover import InputError, scan_input
from kspace_sim.sources.nifti import load_subject_nifti, save_subject_nifti
from synthetic_subjects import make_subject, write_cohort

PARAMS = SimulationParams(crop=32, frames=10)
SMALL = ["--crop", "32", "--frames", "10", "--workers", "0"]
# per-view frame intervals (s): the long-axis cines' TriggerTime spacings differ from the short axis's
DTS = {"sa": 0.09, "la_2ch": 0.0815, "la_3ch": 0.0972, "la_4ch": 0.0775}


def _add_foreign_entries(root: Path) -> dict[str, str]:
    """An empty eid folder, a folder of notes, a hidden folder and a loose file; the expected reasons."""
    (root / "1999999").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("not an image")
    (root / ".cache").mkdir()
    (root / ".cache" / "sa.nii.gz").write_bytes(b"")
    (root / "cohort.txt").write_text("a loose file")
    return {
        "1999999": "no image files (empty folder)",
        "notes": "no image files (no .nii/.nii.gz file)",
        ".cache": "not a subject folder (hidden)",
        "cohort.txt": "not a subject folder (a file)",
    }


def test_scan_input_accounts_for_every_entry(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "in", ["1", "2"])
    expected = _add_foreign_entries(root)
    (root / "3").mkdir()
    (root / "3" / "seg_sa.nii.gz").write_bytes(b"")  # a subject folder missing its views: a subject that fails
    scan = scan_input(root)
    assert [s.subject_id for s in scan.sources] == ["1", "2", "3"]
    assert dict(scan.skipped) == expected
    names = {s.subject_id for s in scan.sources} | {n for n, _ in scan.skipped}
    assert names == {p.name for p in root.iterdir()}  # every entry, once


def test_build_lists_skipped_entries_and_builds_the_same_store(tmp_path: Path) -> None:
    clean = write_cohort(tmp_path / "clean", ["1", "2"])
    messy = write_cohort(tmp_path / "messy", ["1", "2"])
    expected = _add_foreign_entries(messy)
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    build_store(BuildConfig(str(clean), str(a), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False))
    rep = build_store(BuildConfig(str(messy), str(b), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False))
    assert dict(rep.skipped_entries) == expected and rep.done == 2 and rep.failed == []
    log = zarr.open_group(str(b), mode="r").attrs["builds"][-1]["skipped_entries"]
    assert {e["entry"]: e["reason"] for e in log} == expected
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for name in ("kspace", "seg", "masks/gaussian_r4", "subjects/id", "subjects/checksum", "labels/phenotypes"):
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)


def test_build_pseudonymises_skipped_entry_names(tmp_path: Path) -> None:
    from kspace_sim.privacy import pseudonymise

    root = write_cohort(tmp_path / "in", ["1"])
    (root / "1999999").mkdir()
    key = b"k" * 32
    out = tmp_path / "p.zarr"
    build_store(
        BuildConfig(
            str(root), str(out), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False, pseudonym_key=key
        )
    )
    log = zarr.open_group(str(out), mode="r").attrs["builds"][-1]["skipped_entries"]
    assert log == [{"entry": pseudonymise("1999999", key), "reason": "no image files (empty folder)"}]
    assert "1999999" not in json.dumps(dict(zarr.open_group(str(out), mode="r").attrs))


def test_cli_build_and_labels_print_skipped_entries(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "in", ["1", "2"])
    (root / "1999999").mkdir()
    r = CliRunner().invoke(
        app, ["build", "--input", str(root), "--out", str(tmp_path / "s.zarr"), "--mask", "gaussian", *SMALL]
    )
    assert r.exit_code == 0, r.output
    assert "skipped 1999999: no image files (empty folder)" in r.output
    df, rep = build_label_table(root, None, tmp_path / "l.parquet", workers=1)
    assert rep.skipped_entries == [("1999999", "no image files (empty folder)")] and len(df) == 2
    from kspace_sim.demo.participants import participants_table, sample_participant

    table = tmp_path / "participants.csv"
    participants_table([sample_participant(e, 0) for e in ("1", "2")]).to_csv(table, index=False)
    r = CliRunner().invoke(
        app,
        ["labels", "--input", str(root), "--table", str(table), "--out", str(tmp_path / "m.parquet"), "--workers", "1"],
    )
    assert r.exit_code == 0, r.output
    assert "skipped 1999999: no image files (empty folder)" in r.output


# ---- DICOM zips -------------------------------------------------------------------------------


def _zip_subject(tmp_path: Path, eid: str = "1000001") -> tuple[Path, Path]:
    """A synthetic subject in the NIfTI layout (with segmentations) whose long-axis cines have their
    own frame intervals, and its UKB zips: (nifti cohort folder, zip folder)."""
    nifti = write_cohort(tmp_path / "nifti", [eid])
    vol = load_subject_nifti(nifti / eid)
    for (
        name,
        aff,
    ) in vol.affines.items():  # long-axis slice direction = row × column cosines · thickness, as DICOM gives it
        if "la_" in name:
            aff[:3, 2] = (
                np.cross(aff[:3, 0] / np.linalg.norm(aff[:3, 0]), aff[:3, 1] / np.linalg.norm(aff[:3, 1])) * 6.0
            )
    vol.dt = DTS["sa"]
    vol.frame_intervals = dict(DTS)
    save_subject_nifti(vol, nifti / eid)
    zips = tmp_path / "zips"
    export_subject_dicom(vol, zips, eid)
    return nifti, zips


def test_zips_keep_each_views_trigger_time_spacing(tmp_path: Path) -> None:
    _, zips = _zip_subject(tmp_path)
    back = load_subject_zips(zips / "1000001_20209_2_0.zip", zips / "1000001_20208_2_0.zip", "1000001")
    assert back.dt == pytest.approx(DTS["sa"], abs=1e-9)
    for view, dt in DTS.items():
        assert back.frame_intervals[view] == pytest.approx(dt, abs=1e-9), view


def test_convert_writes_each_views_own_dt(tmp_path: Path) -> None:
    nifti, zips = _zip_subject(tmp_path)
    out = tmp_path / "out"
    summary = convert_cohort(zips, out, workers=0, seg_dir=nifti, progress=False)
    assert summary.converted == 1 and summary.failed == []
    for name in ("sa", "la_2ch", "la_3ch", "la_4ch", "seg_sa", "seg_la_2ch", "seg_la_4ch"):
        zooms = nib.load(str(out / "1000001" / f"{name}.nii.gz")).header.get_zooms()
        assert zooms[3] == pytest.approx(DTS[name.removeprefix("seg_")], rel=1e-6), name
    again = load_subject_nifti(out / "1000001")
    assert again.dt == pytest.approx(DTS["sa"], rel=1e-6)
    assert again.frame_intervals["la_4ch"] == pytest.approx(DTS["la_4ch"], rel=1e-6)


def test_build_from_zips_records_the_short_axis_dt(tmp_path: Path) -> None:
    """The build's in-task conversion: the store's dt is the short axis's, and says so."""
    nifti, zips = _zip_subject(tmp_path)
    a, b = tmp_path / "zips.zarr", tmp_path / "nifti.zarr"
    build_store(
        BuildConfig(str(zips), str(a), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False, seg_dir=str(nifti))
    )
    build_store(BuildConfig(str(nifti), str(b), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False))
    for store in (a, b):
        dt = zarr.open_group(str(store), mode="r")["subjects/dt"]
        assert dt.attrs["view"] == "sa" and dt.attrs["units"] == "s"
        assert float(dt[0]) == pytest.approx(DTS["sa"], rel=1e-6)


def test_convert_accounts_for_every_entry(tmp_path: Path) -> None:
    _, zips = _zip_subject(tmp_path)
    (zips / "1000001").mkdir()
    (zips / "manifest_notes.csv").write_text("x")
    (zips / "1000001_20209_3_0.zip").write_bytes(b"")
    summary = convert_cohort(zips, tmp_path / "out", workers=0, progress=False)
    assert summary.converted == 1
    reasons = dict(summary.skipped_entries)
    assert reasons["1000001"].startswith("not a subject folder")
    assert reasons["manifest_notes.csv"].startswith("not a subject's zip")
    assert reasons["1000001_20209_3_0.zip"] == "imaging instance 3_0, not 2_0"
    written = json.loads((tmp_path / "out" / SUMMARY_FILE).read_text())["skipped_entries"]
    assert {e["entry"] for e in written} == set(reasons)
    r = CliRunner().invoke(
        app, ["convert", "--input", str(zips), "--out", str(tmp_path / "out2"), "--workers", "0", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    assert "skipped 1000001_20209_3_0.zip: imaging instance 3_0, not 2_0" in r.output


def test_convert_and_build_on_a_demo_style_root(tmp_path: Path) -> None:
    """``DEMO/{nifti,zips}``: convert finds DEMO/zips; build names the folders to pass, in one line."""
    demo = tmp_path / "DEMO"
    _zip_subject(demo)  # DEMO/nifti/<eid>, DEMO/zips/<zips>
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["convert", "--input", str(demo), "--out", str(out), "--workers", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"converting the zips in {demo / 'zips'}" in " ".join(r.output.split())
    assert (out / "1000001" / "la_4ch.nii.gz").exists()
    r = CliRunner().invoke(
        app, ["build", "--input", str(demo), "--out", str(tmp_path / "s.zarr"), "--mask", "gaussian", *SMALL]
    )
    assert r.exit_code == 2 and not (tmp_path / "s.zarr").exists()
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and str(demo / "zips") in lines[0] and str(demo / "nifti") in lines[0]
    # several sub-folders holding zips: convert names them, in one line, and writes nothing
    (demo / "zips2").mkdir()
    for z in (demo / "zips").iterdir():
        (demo / "zips2" / z.name).write_bytes(z.read_bytes())
    r = CliRunner().invoke(app, ["convert", "--input", str(demo), "--out", str(tmp_path / "out3"), "--workers", "0"])
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "zips2" in lines[0] and not (tmp_path / "out3").exists()
    with pytest.raises(InputError, match="pass one of those folders"):
        scan_input(demo)


@pytest.mark.slow
def test_convert_on_the_folder_kspace_sim_demo_wrote(tmp_path: Path) -> None:
    """The issue's case, end to end: ``demo --format dicom --out DEMO`` then ``convert --input DEMO``."""
    demo = tmp_path / "DEMO"
    r = CliRunner().invoke(app, ["demo", "--subjects", "1", "--format", "dicom", "--out", str(demo), "--workers", "1"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app, ["convert", "--input", str(demo), "--out", str(tmp_path / "out"), "--workers", "0", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    eid = next(p.name for p in (demo / "nifti").iterdir() if p.is_dir())
    a, b = load_subject_nifti(demo / "nifti" / eid), load_subject_nifti(tmp_path / "out" / eid)
    np.testing.assert_array_equal(a.images["la_4ch"], b.images["la_4ch"])
    assert b.frame_intervals == pytest.approx(a.frame_intervals, rel=1e-6)


def test_make_subject_is_unchanged_by_frame_intervals() -> None:
    """A subject without per-view intervals writes every view with ``dt`` (as before)."""
    vol = make_subject("5")
    assert vol.frame_intervals == {} and vol.frame_interval("la_2ch") == vol.dt == vol.frame_interval("seg_la_4ch")
