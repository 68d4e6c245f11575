"""UK Biobank DICOM zips: export (demo) → convert → NIfTI round trip, manifest quirks, repeats, bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from typer.testing import CliRunner

from kspace_sim.demo.dicom_export import export_cohort_dicom, export_subject_dicom
from kspace_sim.sources.dicom_convert import SUMMARY_FILE, convert_cohort, outputs_exist
from kspace_sim.sources.dicom_zip import (
    discover_zip_subjects,
    load_subject_zips,
    parse_manifest,
    slice_geometry,
)
from kspace_sim.sources.nifti import load_subject_nifti, save_subject_nifti
from kspace_sim.sources.subject import LAX_VIEWS, SubjectError, SubjectVolumes

SHAPE = (24, 20)  # (X, Y): X = Columns, Y = Rows; deliberately not square
N_SLICES, N_FRAMES = 4, 6


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(rot: np.ndarray, zooms: tuple[float, float, float], origin: tuple[float, float, float]) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag(zooms)
    a[:3, 3] = origin
    return a


def make_volumes(eid: str = "1000001", seed: int = 0, with_segs: bool = False) -> SubjectVolumes:
    """Small subject with oblique, UKB-like geometry (integer intensities up to 4000)."""
    rng = np.random.default_rng(seed)
    x, y = SHAPE
    sa = rng.integers(0, 4000, size=(x, y, N_SLICES, N_FRAMES)).astype(np.float32)
    sp_sa = (1.82, 1.94, 10.0)
    images = {"sa": sa}
    affines = {"sa": _affine(_rotation(0.4, -0.3, 0.9), sp_sa, (-61.5, 102.25, 33.125))}
    spacing = {"sa": sp_sa}
    for k, view in enumerate(LAX_VIEWS):
        sp = (1.77, 1.77, 6.0)
        images[view] = rng.integers(0, 3000, size=(x, y, N_FRAMES)).astype(np.float32)
        affines[view] = _affine(_rotation(1.1 + k, 0.2 * k, -0.5), sp, (10.0 * k, -80.5, 120.75))
        spacing[view] = sp
    segs = {}
    if with_segs:
        segs = {"seg_sa": rng.integers(0, 4, size=sa.shape).astype(np.uint8),
                "seg_la_4ch": rng.integers(0, 3, size=images["la_4ch"].shape).astype(np.uint8)}
        affines.update({"seg_sa": affines["sa"], "seg_la_4ch": affines["la_4ch"]})
    return SubjectVolumes(eid, images, affines, segs, spacing, dt=0.01784)


def assert_same_subject(a: SubjectVolumes, b: SubjectVolumes, tol: float = 1e-4) -> None:
    for name in ("sa", *LAX_VIEWS):
        assert b.images[name].shape == a.images[name].shape, name
        np.testing.assert_array_equal(b.images[name], np.rint(a.images[name]), err_msg=name)
        np.testing.assert_allclose(b.affines[name], a.affines[name], atol=tol, err_msg=name)
        np.testing.assert_allclose(b.spacing[name], a.spacing[name], atol=tol, err_msg=name)
    assert abs(b.dt - a.dt) < tol


# --------------------------------------------------------------------------- zip surgery helpers

Edit = Callable[[str, bytes], list[tuple[str, bytes]]]


def rewrite_zip(src: Path, dst: Path, edit: Edit) -> Path:
    """Copy ``src`` to ``dst`` passing each member through ``edit`` (→ list of (name, bytes))."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for name in zin.namelist():
            for n, data in edit(name, zin.read(name)):
                zout.writestr(n, data)
    return dst


def _dcm(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _is_frame(data: bytes, description: str, instance: int | None = None) -> bool:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return ds.SeriesDescription == description and (instance is None or int(ds.InstanceNumber) == instance)


@pytest.fixture(scope="module")
def subject() -> SubjectVolumes:
    return make_volumes()


@pytest.fixture(scope="module")
def zips(tmp_path_factory, subject) -> tuple[Path, Path]:
    return export_subject_dicom(subject, tmp_path_factory.mktemp("zips"), "1000001")


# --------------------------------------------------------------------------- round trips


def test_round_trip_in_memory(subject, zips):
    back = load_subject_zips(*zips, subject_id="1000001")
    assert back.images["sa"].dtype == np.float32
    assert_same_subject(subject, back)


def test_round_trip_combined_sax_series_split_by_cardiac_number_of_images(tmp_path, subject):
    sa, la = export_subject_dicom(subject, tmp_path, "1000001", sax_layout="combined")
    with zipfile.ZipFile(sa) as zf:
        rows = zf.read("manifest.csv").decode().splitlines()[1:]
    assert len(rows) == N_SLICES * N_FRAMES and all(r.endswith(",CINE_segmented_SAX") for r in rows)
    assert_same_subject(subject, load_subject_zips(sa, la, "1000001"))


def test_exported_tags_are_ukb_like(zips, subject):
    with zipfile.ZipFile(zips[0]) as zf:
        manifest = zf.read("manifest.csv").decode()
        name = next(n for n in zf.namelist() if n.endswith(".dcm"))
        ds = _dcm(zf.read(name))
    assert "series discription" in manifest.splitlines()[0]
    assert len(manifest.splitlines()) == 1 + N_SLICES * N_FRAMES
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert (ds.Rows, ds.Columns) == (SHAPE[1], SHAPE[0])
    assert int(ds.CardiacNumberOfImages) == N_FRAMES
    assert float(ds.SpacingBetweenSlices) == pytest.approx(10.0)
    assert float(ds.SliceThickness) == pytest.approx(8.0)
    for kw in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient", "TriggerTime", "SeriesInstanceUID",
               "SeriesDescription", "SeriesNumber", "InstanceNumber"):
        assert kw in ds
    assert ds.SeriesDescription.startswith("CINE_segmented_SAX_b")
    # LPS: x and y of the RAS affine negated; slice k at affine @ (0, 0, k)
    lps = np.diag([-1, -1, 1]) @ subject.affines["sa"][:3, :]
    k = int(ds.SeriesDescription.rsplit("_b", 1)[1]) - 1
    np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], lps[:, 3] + k * lps[:, 2], atol=1e-6)
    np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient[:3]], lps[:, 0] / np.linalg.norm(lps[:, 0]), atol=1e-9)


def test_convert_cohort_round_trip_resume_and_cli(tmp_path):
    nifti_in, zdir, out = tmp_path / "nifti_in", tmp_path / "zips", tmp_path / "out"
    vols = {eid: make_volumes(eid, seed=i, with_segs=(i == 0)) for i, eid in enumerate(["2000001", "2000002"])}
    for eid, v in vols.items():
        save_subject_nifti(v, nifti_in / eid)
    assert export_cohort_dicom(nifti_in, zdir, workers=0) == sorted(vols)
    (out / ".tmp-2000001-deadbeef").mkdir(parents=True)  # left by a killed run
    s = convert_cohort(zdir, out, workers=0, progress=False)
    assert (s.n_subjects, s.converted, s.skipped, s.failed) == (2, 2, 0, [])
    assert not list(out.glob(".tmp-*"))
    for eid, v in vols.items():
        ref = load_subject_nifti(nifti_in / eid)
        assert_same_subject(ref, load_subject_nifti(out / eid))
    # with segmentations from the NIfTI layout
    with_seg = load_subject_zips(zdir / "2000001_20209_2_0.zip", zdir / "2000001_20208_2_0.zip", "2000001", seg_dir=nifti_in)
    np.testing.assert_array_equal(with_seg.segs["seg_sa"], vols["2000001"].segs["seg_sa"])
    assert set(with_seg.segs) == {"seg_sa", "seg_la_4ch"}
    # resume: nothing to do
    s2 = convert_cohort(zdir, out, workers=0, progress=False)
    assert (s2.converted, s2.skipped) == (0, 2)
    # the CLI, on a Dask cluster (1 worker), with --overwrite
    from cli.kspace_sim_app import app

    res = CliRunner().invoke(app, ["convert", "--input", str(zdir), "--out", str(out), "--workers", "1", "--overwrite", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "2 converted" in res.output
    assert (out / SUMMARY_FILE).exists()


def _crop(vol: SubjectVolumes, slices: slice, frames: int) -> SubjectVolumes:
    """Fewer short-axis slices and frames (affine origin moved to the first kept slice): a fast test."""
    images = {k: (a[:, :, slices, :frames] if k == "sa" else a[..., :frames]) for k, a in vol.images.items()}
    affines = {k: a.copy() for k, a in vol.affines.items() if not k.startswith("seg_")}
    affines["sa"][:3, 3] = vol.affines["sa"][:3, :3] @ [0, 0, slices.start] + vol.affines["sa"][:3, 3]
    return SubjectVolumes(vol.subject_id, images, affines, {}, dict(vol.spacing), vol.dt)


def test_round_trip_demo_subject(tmp_path):
    """demo NIfTI → DICOM zips → convert → NIfTI (the demo's geometry, cropped to 4 slices × 8 frames)."""
    from kspace_sim.demo import demo_subject

    vol, _ = demo_subject("1000123", 0)
    save_subject_nifti(_crop(vol, slice(3, 7), 8), tmp_path / "nifti" / "1000123")
    ref = load_subject_nifti(tmp_path / "nifti" / "1000123")
    export_cohort_dicom(tmp_path / "nifti", tmp_path / "zips", workers=0)
    s = convert_cohort(tmp_path / "zips", tmp_path / "out", workers=0, progress=False)
    assert s.converted == 1, s.failed
    assert_same_subject(ref, load_subject_nifti(tmp_path / "out" / "1000123"))


# --------------------------------------------------------------------------- manifest, discovery, geometry


def test_parse_manifest_quirks():
    text = (
        "\ufefffilename,patientid,studyid,aet,date,seriesid,series discription\n"
        "a.dcm,1,2,X,Aug 30, 2015 9:12:04 AM,11,CINE_segmented_SAX_b1\n"  # unquoted comma
        'b.dcm,1,2,X,"Aug 30, 2015",11,CINE_segmented_SAX_b2\n'  # quoted comma
        "c.dcm,1,2,X,2015 Aug, 30,11,CINE_segmented_LAX_4Ch\n"  # a comma the date regex does not know
        "\n"
    )
    rows = parse_manifest(text)
    assert [(r.filename, r.series_description) for r in rows] == [
        ("a.dcm", "CINE_segmented_SAX_b1"), ("b.dcm", "CINE_segmented_SAX_b2"), ("c.dcm", "CINE_segmented_LAX_4Ch")]
    with pytest.raises(SubjectError, match="series discription"):
        parse_manifest("filename,date\na.dcm,x\n")


def test_manifest_cvs_and_discovery(tmp_path, zips, subject):
    def rename(name: str, data: bytes) -> list[tuple[str, bytes]]:
        return [("manifest.cvs" if name == "manifest.csv" else name, data)]

    d = tmp_path / "in"
    d.mkdir()
    rewrite_zip(zips[0], d / "1000001_20209_2_0.zip", rename)
    (d / "1000001_20208_2_0.zip").write_bytes(zips[1].read_bytes())
    (d / "1000002_20209_2_0.zip").write_bytes(zips[0].read_bytes())  # long axis missing
    (d / "1000001_20209_3_0.zip").write_bytes(b"")  # repeat visit: other instance
    (d / "notes.txt").write_text("x")
    found = discover_zip_subjects(d)
    assert sorted(found) == ["1000001", "1000002"]
    assert found["1000002"].la_zip is None
    assert_same_subject(subject, load_subject_zips(found["1000001"].sa_zip, found["1000001"].la_zip, "1000001"))
    with pytest.raises(SubjectError, match="long-axis zip"):
        load_subject_zips(found["1000002"].sa_zip, found["1000002"].la_zip, "1000002")


def test_slice_geometry_single_slice_uses_normal_and_thickness():
    aff, sp = slice_geometry(np.array([1, 0, 0, 0, 1, 0.0]), (2.0, 1.5), np.array([[10.0, 20.0, 30.0]]), None, 6.0)
    np.testing.assert_allclose(aff, [[-1.5, 0, 0, -10], [0, -2, 0, -20], [0, 0, 6, 30], [0, 0, 0, 1]])
    assert sp == (1.5, 2.0, 6.0)


# --------------------------------------------------------------------------- repeats


def _repeat_series(description: str, series_number: int, drop_instance: int | None = None) -> Edit:
    """Add a second copy of ``description`` (new SeriesInstanceUID/SeriesNumber), intensities + 1."""

    def edit(name: str, data: bytes) -> list[tuple[str, bytes]]:
        if name == "manifest.csv":
            lines = data.decode().splitlines()
            extra = [line.replace(".dcm,", "r.dcm,", 1) for line in lines[1:] if line.endswith("," + description)]
            if drop_instance is not None:
                extra = extra[:drop_instance - 1] + extra[drop_instance:]
            return [(name, ("\n".join(lines + extra) + "\n").encode())]
        if not name.endswith(".dcm") or not _is_frame(data, description):
            return [(name, data)]
        ds = _dcm(data)
        ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[description, "repeat"])
        ds.SeriesNumber = series_number
        ds.PixelData = (np.frombuffer(ds.PixelData, "<u2") + 1).astype("<u2").tobytes()
        return [(name, data), (name.replace(".dcm", "r.dcm"), _bytes(ds))]

    return edit


def test_repeat_prefers_latest_complete_series(tmp_path, zips, subject):
    later = rewrite_zip(zips[1], tmp_path / "later.zip", _repeat_series("CINE_segmented_LAX_3Ch", 99))
    v = load_subject_zips(zips[0], later, "x")
    np.testing.assert_array_equal(v.images["la_3ch"], subject.images["la_3ch"] + 1)  # the repeat (SeriesNumber 99)
    earlier = rewrite_zip(zips[1], tmp_path / "earlier.zip", _repeat_series("CINE_segmented_LAX_3Ch", 1))
    np.testing.assert_array_equal(load_subject_zips(zips[0], earlier, "x").images["la_3ch"], subject.images["la_3ch"])
    incomplete = rewrite_zip(zips[1], tmp_path / "inc.zip", _repeat_series("CINE_segmented_LAX_3Ch", 99, drop_instance=2))
    np.testing.assert_array_equal(load_subject_zips(zips[0], incomplete, "x").images["la_3ch"], subject.images["la_3ch"])


# --------------------------------------------------------------------------- bad input


def _drop_manifest(name: str, data: bytes) -> list[tuple[str, bytes]]:
    return [] if name == "manifest.csv" else [(name, data)]


def _drop_series(description: str) -> Edit:
    def edit(name: str, data: bytes) -> list[tuple[str, bytes]]:
        if name == "manifest.csv":
            keep = [line for line in data.decode().splitlines() if not line.endswith("," + description)]
            return [(name, ("\n".join(keep) + "\n").encode())]
        return [] if name.endswith(".dcm") and _is_frame(data, description) else [(name, data)]

    return edit


def _drop_frame(description: str, instance: int) -> Edit:
    def edit(name: str, data: bytes) -> list[tuple[str, bytes]]:
        return [] if name.endswith(".dcm") and _is_frame(data, description, instance) else [(name, data)]

    return edit


def _modify(description: str, instance: int | None, change: Callable[[pydicom.Dataset], None]) -> Edit:
    def edit(name: str, data: bytes) -> list[tuple[str, bytes]]:
        if name.endswith(".dcm") and _is_frame(data, description, instance):
            ds = _dcm(data)
            change(ds)
            return [(name, _bytes(ds))]
        return [(name, data)]

    return edit


def _duplicate_trigger(ds: pydicom.Dataset) -> None:
    ds.TriggerTime = "0.0"


def _spacing(ds: pydicom.Dataset) -> None:
    ds.PixelSpacing = ["2.5", "2.5"]


def _jpeg2000(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True


def _truncate(path: Path, dst: Path) -> Path:
    data = path.read_bytes()
    dst.write_bytes(data[: len(data) // 3])
    return dst


BAD_SA = {
    "no_manifest": (_drop_manifest, "has no manifest.csv"),
    "missing_sax_slice": (_drop_series("CINE_segmented_SAX_b2"), "missing series CINE_segmented_SAX_b2"),
    "missing_frame": (_drop_frame("CINE_segmented_SAX_b3", 3), r"missing frames in slice 0: 5 frames.*absent from the zip"),
    "duplicated_frame": (_modify("CINE_segmented_SAX_b1", 2, _duplicate_trigger), "duplicated frames"),
    "pixel_spacing": (_modify("CINE_segmented_SAX_b4", None, _spacing), "inconsistent PixelSpacing between slices"),
    "compressed": (_modify("CINE_segmented_SAX_b1", 1, _jpeg2000), r"JPEG 2000 .*1\.2\.840\.10008\.1\.2\.4\.91.*(pylibjpeg|gdcm)"),
}


@pytest.mark.parametrize("case", sorted(BAD_SA))
def test_bad_short_axis_zip(tmp_path, zips, case):
    edit, message = BAD_SA[case]
    bad = rewrite_zip(zips[0], tmp_path / "1000001_20209_2_0.zip", edit)
    with pytest.raises(SubjectError, match=message):
        load_subject_zips(bad, zips[1], "1000001")


def test_missing_lax_series_and_corrupt_zip(tmp_path, zips):
    bad = rewrite_zip(zips[1], tmp_path / "la.zip", _drop_series("CINE_segmented_LAX_3Ch"))
    with pytest.raises(SubjectError, match="missing series CINE_segmented_LAX_3Ch"):
        load_subject_zips(zips[0], bad, "x")
    with pytest.raises(SubjectError, match="corrupt zip"):
        load_subject_zips(_truncate(zips[0], tmp_path / "sa.zip"), zips[1], "x")
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SubjectError, match="corrupt zip"):
        load_subject_zips(tmp_path / "junk.zip", zips[1], "x")


def test_bad_subjects_are_recorded_and_the_rest_goes_on(tmp_path, zips):
    zdir, out = tmp_path / "zips", tmp_path / "out"
    zdir.mkdir()
    for eid in ("3000001", "3000002", "3000003", "3000004"):
        (zdir / f"{eid}_20208_2_0.zip").write_bytes(zips[1].read_bytes())
    (zdir / "3000001_20209_2_0.zip").write_bytes(zips[0].read_bytes())  # good
    rewrite_zip(zips[0], zdir / "3000002_20209_2_0.zip", _drop_manifest)
    _truncate(zips[0], zdir / "3000003_20209_2_0.zip")
    rewrite_zip(zips[0], zdir / "3000004_20209_2_0.zip", BAD_SA["compressed"][0])
    (zdir / "3000005_20209_2_0.zip").write_bytes(zips[0].read_bytes())  # no long axis
    s = convert_cohort(zdir, out, workers=0, progress=False)
    assert (s.n_subjects, s.converted) == (5, 1)
    reasons = dict(s.failed)
    assert sorted(reasons) == ["3000002", "3000003", "3000004", "3000005"]
    assert "manifest" in reasons["3000002"] and "corrupt zip" in reasons["3000003"]
    assert "JPEG 2000" in reasons["3000004"] and "long-axis zip" in reasons["3000005"]
    assert outputs_exist(out / "3000001")
    assert sorted(p.name for p in out.iterdir()) == ["3000001", SUMMARY_FILE]  # nothing partial left
    assert not list(out.rglob("*.part*"))
    import json

    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["converted"] == 1 and len(summary["failed"]) == 4


def test_build_from_zips_equals_build_from_nifti(tmp_path):
    """``kspace-sim build --input ZIPDIR --seg DIR`` converts in the task and gives the same store."""
    import zarr

    from kspace_sim.build import BuildConfig, build_store
    from kspace_sim.demo import demo_subject
    from kspace_sim.simulate import MaskSpec, SimulationParams

    vol, _ = demo_subject("1000321", 0)
    vol.images = {k: a[..., :10] for k, a in vol.images.items()}
    vol.segs = {k: a[..., :10] for k, a in vol.segs.items()}
    save_subject_nifti(vol, tmp_path / "nifti" / "1000321")
    export_cohort_dicom(tmp_path / "nifti", tmp_path / "zips", workers=0)
    params, masks = SimulationParams(frames=10), [MaskSpec("gaussian", 4)]
    stores = []
    for name, inp, seg in (("n", tmp_path / "nifti", None), ("z", tmp_path / "zips", str(tmp_path / "nifti"))):
        out = tmp_path / f"{name}.zarr"
        rep = build_store(BuildConfig(str(inp), str(out), masks, params, workers=0, progress=False, seg_dir=seg, labels=True))
        assert rep.done == 1, rep.failed
        stores.append(zarr.open_group(str(out), mode="r"))
    a, b = stores
    np.testing.assert_array_equal(a["seg"][:], b["seg"][:])
    np.testing.assert_allclose(a["kspace"][:], b["kspace"][:], atol=1e-5)
    np.testing.assert_allclose(a["labels/phenotypes"][:], b["labels/phenotypes"][:], rtol=1e-4)
    assert b.attrs["input"]["format"].startswith("UKB DICOM zips")
