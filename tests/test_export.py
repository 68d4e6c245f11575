"""kspace-sim export: ISMRMRD and CMRxRecon files read back with the official readers, headers,
resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

h5py = pytest.importorskip("h5py")
ismrmrd = pytest.importorskip("ismrmrd")

from cli.kspace_sim_app import app
from kspace_sim.build import BuildConfig, build_store
from kspace_sim.export import ExportConfig, ExportError, export_store
from kspace_sim.export.ismrmrd_export import (
    ViewGeometry,
    acquisition_headers,
    acquisition_order,
    acquisition_samples,
    read_ismrmrd_view,
)
from kspace_sim.export.runner import RECORDS_DIR
from kspace_sim.masks import acs_lines_mask
from kspace_sim.simulate import MaskSpec, SimulationParams
from synthetic_subjects import write_cohort

PARAMS = SimulationParams(crop=32, frames=10)
MASKS = [MaskSpec("gaussian", 4), MaskSpec("uniform", 2)]
EIDS = [f"10000{i:02d}" for i in range(3)]
runner = CliRunner()


def _build(cohort: Path, out: Path, **kw) -> Path:
    build_store(BuildConfig(input_dir=str(cohort), out=str(out), masks=MASKS, params=PARAMS, seed=3, workers=0,
                            progress=False, labels=False, test_size=1, **kw))
    return out


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("cohort"), EIDS)


@pytest.fixture(scope="module")
def store(cohort, tmp_path_factory) -> Path:
    return _build(cohort, tmp_path_factory.mktemp("store") / "s.zarr")


@pytest.fixture(scope="module")
def store_f16(cohort, tmp_path_factory) -> Path:
    return _build(cohort, tmp_path_factory.mktemp("store") / "f16.zarr", storage="float16")


def _export(store: Path, out: Path, fmt: str, **kw):
    return export_store(ExportConfig(store=str(store), out=str(out), fmt=fmt, workers=0, progress=False, **kw))


def _manifest(out: Path) -> dict:
    return json.loads((out / "export_manifest.json").read_text())


def test_ismrmrd_round_trip_and_header(store, tmp_path):
    out = tmp_path / "mrd"
    rep = _export(store, out, "ismrmrd", mask="gaussian_r4")
    assert rep.exported == 3 and rep.files == 3 * 9
    g = zarr.open_group(str(store), mode="r")
    acs = acs_lines_mask("gaussian", 32, 4.0)
    assert acs.sum() > 0
    for row, sub in enumerate(_manifest(out)["subjects"]):
        assert sub["subject_id"] == EIDS[row] and sub["key"] == f"P{row + 1:03d}"
        kspace, mask = g["kspace"][row], g["masks/gaussian_r4"][row]
        ks, ms = [], []
        for s, view in enumerate(g.attrs["view_order"]):
            k, m, hdr = read_ismrmrd_view(out / sub["key"] / f"{view}.h5")  # through ismrmrd.File
            ks.append(k[0])
            ms.append(m)
            enc = hdr.encoding[0]
            assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y, enc.encodedSpace.matrixSize.z) == (32, 32, 1)
            ps = g["subjects/pixel_spacing"][row, s]
            assert enc.encodedSpace.fieldOfView_mm.x == pytest.approx(32 * ps[0], rel=1e-6)
            assert enc.encodedSpace.fieldOfView_mm.y == pytest.approx(32 * ps[1], rel=1e-6)
            lim = enc.encodingLimits
            ky = lim.kspace_encoding_step_1
            assert (ky.minimum, ky.maximum, ky.center) == (0, 31, 16)
            assert (lim.phase.minimum, lim.phase.maximum) == (0, 9)
            assert enc.trajectory.value == "cartesian"
            assert enc.parallelImaging.accelerationFactor.kspace_encoding_step_1 == 4
            assert hdr.acquisitionSystemInformation.receiverChannels == 1
            assert hdr.subjectInformation.patientID == EIDS[row]
            users = {p.name: p.value for p in hdr.userParameters.userParameterString}
            assert users["view"] == view and users["mask"] == "gaussian_r4"
        assert np.array_equal(np.stack(ms), mask)
        assert np.array_equal(np.stack(ks), kspace * mask[:, :, None, :])  # bit for bit


def test_ismrmrd_flags_with_the_official_reader(store, tmp_path):
    out = tmp_path / "mrd"
    _export(store, out, "ismrmrd", mask="gaussian_r4", subjects=[EIDS[0]])
    acs = acs_lines_mask("gaussian", 32, 4.0)
    with ismrmrd.File(str(out / "P001" / "sax2.h5"), "r") as f:
        acqs = list(f["dataset"].acquisitions)
    phases = np.array([a.idx.phase for a in acqs])
    lines = np.array([a.idx.kspace_encode_step_1 for a in acqs])
    assert (np.diff(phases) >= 0).all() and len(acqs) == 10 * 8
    for i, a in enumerate(acqs):
        first = i == 0 or phases[i - 1] != phases[i]
        last = i == len(acqs) - 1 or phases[i + 1] != phases[i]
        assert a.is_flag_set(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1) == first == a.is_flag_set(ismrmrd.ACQ_FIRST_IN_PHASE)
        assert a.is_flag_set(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1) == last == a.is_flag_set(ismrmrd.ACQ_LAST_IN_PHASE)
        assert a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) == bool(acs[lines[i]])
        assert a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) == bool(acs[lines[i]])
        assert a.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT) == (i == len(acqs) - 1)
        assert a.number_of_samples == 32 and a.active_channels == 1 and a.center_sample == 16
    assert acqs[0].is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE) and acqs[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)


def _two_coil_view(t: int = 3, h: int = 8, w: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = (rng.standard_normal((2, t, h, w)) + 1j * rng.standard_normal((2, t, h, w))).astype(np.complex64)  # 2 coils
    mask = rng.random((t, w)) < 0.5
    mask[:, 0] = True
    acs = np.zeros(w, bool)
    acs[2:4] = True
    return k, mask, acs


def test_vectorised_rows_equal_the_packages_acquisitions():
    """The headers and samples we build at once are byte-equal to ismrmrd.Acquisition objects."""
    from ismrmrd.file import Acquisitions

    k, mask, acs = _two_coil_view()
    tt, yy = acquisition_order(mask)
    heads, samples = acquisition_headers(tt, yy, acs, 2, 8), acquisition_samples(k, tt, yy)
    assert samples.shape == (tt.size, 2, 8)
    for i, (t, ky) in enumerate(zip(tt, yy)):
        a = ismrmrd.Acquisition.from_array(np.ascontiguousarray(k[:, t, :, ky]), center_sample=4, scan_counter=i)
        a.idx.kspace_encode_step_1, a.idx.phase = int(ky), int(t)
        a.read_dir[:], a.phase_dir[:], a.slice_dir[:] = (1, 0, 0), (0, 1, 0), (0, 0, 1)
        a.channel_mask[0] = 3
        a.flags = int(heads["flags"][i])  # flag logic is checked in the test above
        head, traj, data = Acquisitions.to_numpy(a)
        assert heads[i].tobytes() == head.tobytes()
        assert np.array_equal(samples[i].view(np.float32).ravel(), data) and traj.size == 0


@pytest.mark.parametrize("all_lines", [True, False])
def test_view_file_equals_h5py_object_rows(tmp_path, all_lines):
    """write_ismrmrd_view hands HDF5 pointers into one samples array; the file is byte-equal to the
    one h5py writes from an object array of the package's acquisition_dtype (its usual path), and
    ismrmrd.File reads it back; also for a view without acquisitions."""
    from ismrmrd.hdf5 import acquisition_dtype

    from kspace_sim.export.ismrmrd_export import write_ismrmrd_view

    k, mask, acs = _two_coil_view(t=4, h=16, w=12, seed=1)
    if not all_lines:
        mask[:] = False
    write_ismrmrd_view(tmp_path / "ours.h5", "<ismrmrdHeader/>", k, mask, acs)
    tt, yy = acquisition_order(mask)
    rows = np.zeros(tt.size, acquisition_dtype)
    rows["head"] = acquisition_headers(tt, yy, acs, 2, 16)
    samples = acquisition_samples(k, tt, yy)
    rows["data"] = list(samples.view(np.float32).reshape(tt.size, -1)) if tt.size else []
    rows["traj"] = [np.zeros(0, np.float32)] * tt.size
    with h5py.File(tmp_path / "ref.h5", "w", libver="earliest") as f:
        grp = f.create_group("dataset", track_order=False)
        xml = grp.create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes), track_times=False)
        xml[0] = "<ismrmrdHeader/>"
        grp.create_dataset("data", data=rows, maxshape=(None,), chunks=True, track_times=False)
    assert (tmp_path / "ours.h5").read_bytes() == (tmp_path / "ref.h5").read_bytes()
    with ismrmrd.File(str(tmp_path / "ours.h5"), "r") as f:
        acqs = f["dataset"].acquisitions[:] if f["dataset"].has_acquisitions() else []
    assert len(acqs) == tt.size
    for a, t, ky in zip(acqs, tt, yy):
        assert (a.idx.phase, a.idx.kspace_encode_step_1) == (t, ky) and np.array_equal(a.data, k[:, t, :, ky])


def _geometry(**kw) -> ViewGeometry:
    g = {"view": "la_2ch", "view_index": 6, "kind": "lax", "pixel_spacing_mm": (1.8269230769230769, 1.8269230769230769), "frames": 50,
             "readout": 128, "lines": 128, "channels": 1, "acs": acs_lines_mask("gaussian", 128, 4.0), "dt_s": 0.0301, "subject_id": "1000001",
             "row": 0, "mask_name": "gaussian_r4", "mask": {"pattern": "gaussian", "acceleration": 4.0, "achieved_acceleration": 3.7,
                                                   "options": {"seed": 3}}, "provenance": {"simulator_version": "0.9", "fft_convention": "ortho"}}
    g.update(kw)
    return ViewGeometry(**g)


def test_header_template_equals_a_full_render():
    """One template per view renders every subject's header byte-equal to xsdata's full render
    (ismrmrd.xsd.ToXML), with ids needing escapes or not ASCII, an empty id, non-finite and
    extreme doubles; the template is reused across subjects of a view and not across views."""
    from ismrmrd.xsd import ToXML

    from kspace_sim.export import ismrmrd_export as ie

    ie._TEMPLATES.clear()
    subjects = [
        {"subject_id": "1000001", "row": 0, "pixel_spacing_mm": (1.8269230769230769, 1.8269230769230769), "dt_s": 0.0301},
        {"subject_id": "a&b<c>\"'é\u00e9", "row": 12345, "pixel_spacing_mm": (1e-7, 3.5e12), "dt_s": 1 / 3},
        {"subject_id": "1000003", "row": 2, "pixel_spacing_mm": (2.0, 1.5), "dt_s": float("nan")},
        {"subject_id": "", "row": 3, "pixel_spacing_mm": (0.1 + 0.2, 1.0), "dt_s": float("inf")},
        {"subject_id": "1000004", "row": 4, "pixel_spacing_mm": (1.25, 1.25), "dt_s": 0.03},
    ]
    for kw in subjects:
        for view in ({}, {"view": "sax0", "view_index": 0, "kind": "sax"}):
            g = _geometry(**kw, **view)
            assert ie.view_header_xml(g) == ToXML(ie.ismrmrd_header(g)), (kw, view)
    # subjects 1, 2 and 5 share each view's template; the NaN, empty-id/inf subjects have their own
    assert len(ie._TEMPLATES) == 2 * 3
    g = _geometry()
    assert ie.HeaderTemplate(g).render(_geometry(mask_name="other_r8")) != ToXML(ie.ismrmrd_header(_geometry(mask_name="other_r8")))
    assert ie.HeaderTemplate.key_of(g) != ie.HeaderTemplate.key_of(_geometry(mask_name="other_r8"))
    assert ie.HeaderTemplate.key_of(g) == ie.HeaderTemplate.key_of(_geometry(subject_id="7", row=9, dt_s=0.5))


def _read_mat_as_challenge(path: Path, name: str) -> np.ndarray:
    """As the CMRxRecon loaders read a file: h5py, compound {real, imag}, reversed axes."""
    with h5py.File(path, "r") as f:
        raw = f[name][()]
        assert f[name].attrs["MATLAB_class"] in (b"single", b"logical")
    if raw.dtype.names:
        raw = raw["real"] + 1j * raw["imag"]
    return np.transpose(raw, list(range(raw.ndim))[::-1])


def test_cmrxrecon_round_trip(store, tmp_path):
    out = tmp_path / "cmrx"
    rep = _export(store, out, "cmrxrecon", mask="gaussian_r4")
    assert rep.exported == 3 and rep.files == 3 * 6
    g = zarr.open_group(str(store), mode="r")
    views = g.attrs["views"]
    man = _manifest(out)
    recorded = g.attrs["masks"]["gaussian_r4"]
    assert man["mask"]["acceleration"]["achieved_acceleration_without_acs"] == pytest.approx(recorded["achieved_acceleration_without_acs"])
    assert man["mask"]["acceleration"]["achieved_acceleration_with_acs"] == pytest.approx(recorded["achieved_acceleration"])
    assert man["mask"]["acceleration"]["acs_lines"] == 3
    assert man["layout"]["cine_lax_slices"] == ["la_2ch", "la_3ch", "la_4ch"]
    sets = {"train": "TrainingSet", "validation": "ValidationSet", "test": "TestSet"}
    from scipy.io.matlab import matfile_version

    for row, sub in enumerate(man["subjects"]):
        base = out / "MultiCoil" / "Cine" / sets[sub["split"]]
        assert sub["split"] == ["train", "validation", "test"][int(g["subjects/split"][row])]
        kspace, mask = g["kspace"][row], g["masks/gaussian_r4"][row]
        for stem, group in (("cine_sax", "sax"), ("cine_lax", "lax")):
            full_path = base / "FullSample" / sub["key"] / f"{stem}.mat"
            assert matfile_version(str(full_path)) == (2, 0)  # a v7.3 MAT-file header
            full = _read_mat_as_challenge(full_path, "kspace_full")  # (kx, ky, coils, slices, frames)
            kus = _read_mat_as_challenge(base / "UnderSample_Task2" / sub["key"] / f"{stem}_kus_gaussian_r4.mat", "kus")
            m = _read_mat_as_challenge(base / "Mask_Task2" / sub["key"] / f"{stem}_mask_gaussian_r4.mat", "mask")
            z = len(views[group])
            assert full.shape == (32, 32, 1, z, 10) and kus.shape == full.shape and m.shape == (32, 32, z, 10)
            assert full.dtype == np.complex64
            rows = views[group]
            assert np.array_equal(full[:, :, 0].transpose(2, 3, 0, 1), kspace[rows])  # (S, T, H, W), bit for bit
            assert np.array_equal(m[0].transpose(1, 2, 0).astype(bool), mask[rows])
            assert (m == m[:1]).all()
            assert np.array_equal(kus, full * m[:, :, None])


def test_float16_store_exports_its_decoded_kspace(store_f16, tmp_path):
    from kspace_sim.store.kspace_codec import decode_float16

    store = store_f16
    out = tmp_path / "cmrx"
    _export(store, out, "cmrxrecon", subjects=[EIDS[1]])
    g = zarr.open_group(str(store), mode="r")
    k = decode_float16(g["kspace"][1], float(g["subjects/kspace_scale"][1]))
    sub = _manifest(out)["subjects"][0]
    split = {"train": "TrainingSet", "validation": "ValidationSet", "test": "TestSet"}[sub["split"]]
    full = _read_mat_as_challenge(out / "MultiCoil/Cine" / split / "FullSample/P002/cine_sax.mat", "kspace_full")
    assert np.array_equal(full[:, :, 0].transpose(2, 3, 0, 1), k[:6])


def test_interrupted_export_resumes(store, tmp_path):
    out = tmp_path / "cmrx"
    _export(store, out, "cmrxrecon")
    sums = (out / "XXH128SUMS").read_text()
    man = _manifest(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.mat")}
    # subject 1: its completion record is gone (killed before the client recorded it)
    (out / RECORDS_DIR / "P001.json").unlink()
    # subject 2: one file corrupted in place (same size)
    victim = out / next(iter(man["subjects"][1]["files"]))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    rep = _export(store, out, "cmrxrecon")
    assert (rep.exported, rep.skipped) == (2, 1)
    new_sums = (out / "XXH128SUMS").read_text()
    # redone files are bit-identical (the message lists the lines that differ)
    assert new_sums == sums, [(a, b) for a, b in zip(sums.splitlines(), new_sums.splitlines()) if a != b]
    for p, t in mtimes.items():
        redone = "P001" in p.parts or "P002" in p.parts
        assert (p.stat().st_mtime_ns != t) == redone, p
    assert not list(out.rglob(".*.tmp-*"))
    rep = _export(store, out, "cmrxrecon")
    assert (rep.exported, rep.skipped) == (0, 3)


def test_split_and_subject_selection(store, tmp_path):
    g = zarr.open_group(str(store), mode="r")
    test_rows = np.flatnonzero(g["subjects/split"][:] == 2)
    rep = _export(store, tmp_path / "t", "ismrmrd", split="test")
    assert rep.exported == len(test_rows) == 1
    assert [s["row"] for s in _manifest(tmp_path / "t")["subjects"]] == list(test_rows)
    with pytest.raises(ExportError, match="not in the store"):
        _export(store, tmp_path / "u", "ismrmrd", subjects=["999"])


@pytest.mark.slow
def test_dask_workers_give_the_same_files(store, tmp_path):
    _export(store, tmp_path / "serial", "ismrmrd")
    export_store(ExportConfig(store=str(store), out=str(tmp_path / "dask"), fmt="ismrmrd", workers=2, progress=False))
    assert (tmp_path / "serial" / "XXH128SUMS").read_text() == (tmp_path / "dask" / "XXH128SUMS").read_text()


def _cli(*args: str):
    return runner.invoke(app, ["export", *args])


def test_bad_input_one_line_exit_2(store, store_f16, tmp_path):
    out = tmp_path / "x"
    for args, needle in (
        (["--format", "nifti"], "unknown format"),
        (["--format", "ismrmrd", "--mask", "vista_r8"], "no mask 'vista_r8'"),
        (["--format", "ismrmrd", "--split", "holdout"], "unknown split"),
    ):
        res = _cli(str(store), "--out", str(out), "--workers", "0", *args)
        assert res.exit_code == 2, res.output
        assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
        assert not out.exists()  # refused before any work
    other = store_f16
    done = tmp_path / "done"
    assert _cli(str(store), "--format", "cmrxrecon", "--out", str(done), "--workers", "0", "--subjects", EIDS[0]).exit_code == 0
    res = _cli(str(other), "--format", "cmrxrecon", "--out", str(done), "--workers", "0")
    assert res.exit_code == 2 and "another store" in res.output and len(res.output.strip().splitlines()) == 1
    res = _cli(str(store), "--format", "ismrmrd", "--out", str(done), "--workers", "0")
    assert res.exit_code == 2 and "cmrxrecon export" in res.output
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("mine")
    res = _cli(str(store), "--format", "ismrmrd", "--out", str(unrelated), "--workers", "0")
    assert res.exit_code == 2 and "not an export folder" in res.output


def test_header_xml_equals_the_packages_serialiser(store, tmp_path):
    from ismrmrd.xsd import ToXML

    from kspace_sim.export.ismrmrd_export import header_xml

    _export(store, tmp_path / "m", "ismrmrd", subjects=[EIDS[0]])
    with ismrmrd.File(str(tmp_path / "m" / "P001" / "la_4ch.h5"), "r") as f:
        header = f["dataset"].header
    assert header_xml(header) == ToXML(header)


def test_a_failing_subject_is_reported_and_retried(store, tmp_path):
    import shutil

    broken = tmp_path / "broken.zarr"
    shutil.copytree(store, broken)
    chunk = broken / "kspace" / "c" / "1" / "0" / "0" / "0" / "0"  # row 1's only chunk (one chunk per subject)
    chunk.write_bytes(chunk.read_bytes()[:100])  # subject 2's k-space chunk truncated
    out = tmp_path / "cmrx"
    seen = []
    rep = export_store(ExportConfig(store=str(broken), out=str(out), fmt="cmrxrecon", workers=0, progress=False),
                       on_failure=lambda sid, reason: seen.append((sid, reason)))
    assert [sid for sid, _ in rep.failed] == [EIDS[1]] == [sid for sid, _ in seen] and seen[0][1]
    assert rep.exported == 2 and not (out / RECORDS_DIR / "P002.json").exists()
    assert [s["key"] for s in _manifest(out)["subjects"]] == ["P001", "P003"]
    res = _cli(str(broken), "--format", "cmrxrecon", "--out", str(out), "--workers", "0")
    assert res.exit_code == 1 and EIDS[1] in res.output


def test_checksums_xxh3_by_default_sha256_on_request(store, tmp_path):
    import hashlib

    import xxhash

    out = tmp_path / "fast"
    _export(store, out, "ismrmrd", subjects=[EIDS[2]])
    man = _manifest(out)
    assert man["checksums"]["algorithm"] == "xxh3_128" and not (out / "SHA256SUMS").exists()
    lines = (out / "XXH128SUMS").read_text().splitlines()
    assert len(lines) == 9
    for line in lines:
        digest, rel = line.split(None, 1)
        assert xxhash.xxh3_128((out / rel).read_bytes()).hexdigest() == digest == man["subjects"][0]["files"][rel]
    with pytest.raises(ExportError, match="xxh3_128 checksums"):
        _export(store, out, "ismrmrd", subjects=[EIDS[2]], checksum="sha256")

    slow = tmp_path / "sha"
    _export(store, slow, "cmrxrecon", subjects=[EIDS[0]], checksum="sha256")
    man = _manifest(slow)
    assert man["checksums"]["algorithm"] == "sha256" and not (slow / "XXH128SUMS").exists()
    for line in (slow / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split(None, 1)
        assert hashlib.sha256((slow / rel).read_bytes()).hexdigest() == digest == man["subjects"][0]["files"][rel]
    # resuming without --checksum keeps the folder's sha256 (no refusal, nothing redone)
    rep = _export(store, slow, "cmrxrecon", subjects=[EIDS[0], EIDS[1]])
    assert (rep.exported, rep.skipped) == (1, 1) and _manifest(slow)["checksums"]["algorithm"] == "sha256"
    assert len((slow / "SHA256SUMS").read_text().splitlines()) == 12
    res = _cli(str(store), "--format", "cmrxrecon", "--out", str(slow), "--workers", "0", "--checksum", "xxh3_128")
    assert res.exit_code == 2 and "sha256 checksums" in res.output and len(res.output.strip().splitlines()) == 1


def test_file_digests_through_a_memory_map(tmp_path):
    import hashlib

    import xxhash

    from kspace_sim.export.subject_task import file_digests

    for name, data in (("empty", b""), ("some", np.random.default_rng(0).bytes(100_003))):
        (tmp_path / name).write_bytes(data)
        assert file_digests(tmp_path / name) == {"bytes": len(data), "xxh3_128": xxhash.xxh3_128(data).hexdigest(),
                                                "sha256": hashlib.sha256(data).hexdigest()}
        assert file_digests(tmp_path / name, sha256=False) == {"bytes": len(data), "xxh3_128": xxhash.xxh3_128(data).hexdigest()}


def test_a_failing_write_fails_its_subject_only(store, tmp_path, monkeypatch):
    """Files are written in a background thread: a write that fails there (here: a block of ``kus``
    while ``kspace_full`` is written) fails its subject (reported, no record, no temporary file
    left), and the next subject is written."""
    from kspace_sim.export import subject_task

    real = subject_task._AppendedData.write

    def flaky(self, data):
        if "P002" in str(self.path) and "_kus_" in self.path.name:
            raise OSError("disk full (simulated)")
        real(self, data)

    monkeypatch.setattr(subject_task._AppendedData, "write", flaky)
    out = tmp_path / "cmrx"
    rep = _export(store, out, "cmrxrecon")
    assert [sid for sid, _ in rep.failed] == [EIDS[1]] and "disk full" in rep.failed[0][1]
    assert rep.exported == 2 and not (out / RECORDS_DIR / "P002.json").exists()
    assert not list(out.rglob(".*.tmp-*"))
    monkeypatch.setattr(subject_task._AppendedData, "write", real)
    rep = _export(store, out, "cmrxrecon")
    assert (rep.exported, rep.skipped) == (1, 2)


def test_a_record_is_written_only_after_its_files(store, tmp_path, monkeypatch):
    """Files are written on a writer thread; each subject's completion record is written only once
    all its files are in place, in row order."""
    from kspace_sim.export import runner

    real = runner._write_json_atomic
    written = []

    def checked(path, doc):
        if path.parent.name == "records":
            for rel, d in doc["files"].items():
                assert (path.parents[2] / rel).stat().st_size == d["bytes"], rel
            written.append(doc["row"])
        real(path, doc)

    monkeypatch.setattr(runner, "_write_json_atomic", checked)
    rep = _export(store, tmp_path / "mrd", "ismrmrd")
    assert rep.exported == 3 and written == [0, 1, 2]


def test_an_interrupt_in_process_leaves_only_complete_subjects(store, tmp_path, monkeypatch):
    """In this process two subjects are in flight at once (threads): an interruption while the
    second is exported stops the export, records only the subjects whose files are all in place,
    leaves no temporary file, and a rerun exports the rest."""
    from kspace_sim.export import runner

    real = runner.export_subject

    def interrupted(job):
        if job.row == 1:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(runner, "export_subject", interrupted)
    out = tmp_path / "cmrx"
    with pytest.raises(KeyboardInterrupt):
        _export(store, out, "cmrxrecon")
    recorded = sorted(p.stem for p in (out / RECORDS_DIR).glob("*.json"))
    assert recorded == ["P001"]  # subject 0; subject 2 may have been written, not recorded
    assert not list(out.rglob(".*.tmp-*"))
    monkeypatch.setattr(runner, "export_subject", real)
    rep = _export(store, out, "cmrxrecon")
    assert (rep.exported, rep.skipped) == (2, 1) and not rep.failed


# ------------------------------------------------------------------------------ stores with coils
@pytest.fixture(scope="module")
def store_coils(cohort, tmp_path_factory) -> Path:
    from kspace_sim.coil_settings import CoilSettings

    return _build(cohort, tmp_path_factory.mktemp("store") / "coils.zarr",
                  coils=CoilSettings(n_coils=3, snr_db=20.0, noise_correlation=0.3))


def _coil_kspace(store: Path, row: int) -> np.ndarray:
    """The subject's coil k-space (C, S, T, H, W) by the store's rule (numpy coil_kspace)."""
    from kspace_sim.store.coil_arrays import read_subject_coils, subject_coil_kspace

    g = zarr.open_group(str(store), mode="r")
    return subject_coil_kspace(g["kspace"][row], read_subject_coils(g, row))


def test_ismrmrd_coils_are_channels_read_back_with_the_package(store_coils, tmp_path):
    out = tmp_path / "mrd"
    _export(store_coils, out, "ismrmrd", mask="gaussian_r4", subjects=[EIDS[0], EIDS[2]])
    g = zarr.open_group(str(store_coils), mode="r")
    man = _manifest(out)
    assert man["coils"]["n_coils"] == 3 and man["coils"]["snr_db"] == 20.0
    for sub in man["subjects"]:
        row = EIDS.index(sub["subject_id"])
        kc, mask = _coil_kspace(store_coils, row), g["masks/gaussian_r4"][row]
        assert kc.shape[0] == 3 and np.abs(kc[1] - kc[0]).max() > 0
        for s, view in enumerate(g.attrs["view_order"]):
            k, m, hdr = read_ismrmrd_view(out / sub["key"] / f"{view}.h5")  # through ismrmrd.File
            assert hdr.acquisitionSystemInformation.receiverChannels == 3
            users = {q.name: q.value for q in hdr.userParameters.userParameterString}
            assert users["coils"].startswith("3 birdcage coils") and "SNR 20 dB" in users["coils"]
            assert np.array_equal(m, mask[s])
            assert np.array_equal(k, kc[:, s] * mask[s][None, :, None, :])  # bit for bit, noise included
    with ismrmrd.File(str(out / "P001" / "sax0.h5"), "r") as f:
        assert f["dataset"].acquisitions[0].active_channels == 3


def test_cmrxrecon_coils_axis(store_coils, tmp_path):
    out = tmp_path / "cmrx"
    _export(store_coils, out, "cmrxrecon", mask="gaussian_r4", subjects=[EIDS[1]])
    g = zarr.open_group(str(store_coils), mode="r")
    sub = _manifest(out)["subjects"][0]
    split = {"train": "TrainingSet", "validation": "ValidationSet", "test": "TestSet"}[sub["split"]]
    kc, mask = _coil_kspace(store_coils, 1), g["masks/gaussian_r4"][1]
    for stem, group in (("cine_sax", "sax"), ("cine_lax", "lax")):
        rows = g.attrs["views"][group]
        full = _read_mat_as_challenge(out / "MultiCoil/Cine" / split / "FullSample" / sub["key"] / f"{stem}.mat", "kspace_full")
        assert full.shape == (32, 32, 3, len(rows), 10)  # (kx, ky, coils, slices, frames)
        assert np.array_equal(full.transpose(2, 3, 4, 0, 1), kc[:, rows])
        kus = _read_mat_as_challenge(out / "MultiCoil/Cine" / split / "UnderSample_Task2" / sub["key"] / f"{stem}_kus_gaussian_r4.mat", "kus")
        assert np.array_equal(kus.transpose(2, 3, 4, 0, 1), kc[:, rows] * mask[rows][None, :, :, None, :])
