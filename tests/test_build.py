"""The simulator's build: store layout, determinism across worker counts, resume, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli.kspace_sim_app import app
from kspace_sim.build import BuildConfig, build_store
from kspace_sim.fft import ifft2c
from kspace_sim.simulate import MaskSpec, SimulationParams
from kspace_sim.store.checksum import subject_checksum
from kspace_sim.sources.nifti import save_subject_nifti
from synthetic_subjects import make_subject, write_cohort

PARAMS = SimulationParams(crop=32, frames=10)
MASKS = [MaskSpec("gaussian", 4), MaskSpec("uniform", 2)]
EIDS = [f"10000{i:02d}" for i in range(5)]


def _cfg(inp: Path, out: Path, workers: int = 0, **kw) -> BuildConfig:
    return BuildConfig(input_dir=str(inp), out=str(out), masks=MASKS, params=PARAMS, seed=3, workers=workers, progress=False, **kw)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("cohort"), EIDS)


def _arrays(url: Path) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(url), mode="r")
    out = {}
    for name in ("kspace", "seg", "masks/gaussian_r4", "masks/uniform_r2", "subjects/checksum", "subjects/status",
                 "subjects/crop_box", "subjects/split", "subjects/seg_present", "subjects/intensity_range",
                 "labels/phenotypes"):
        out[name] = g[name][:]
    out["labels/phenotype_qc"] = np.asarray([str(x) for x in g["labels/phenotype_qc"][:]])
    out["ids"] = [str(x) for x in g["subjects/id"][:]]
    return out


def test_store_contents(cohort, tmp_path):
    out = tmp_path / "s.zarr"
    report = build_store(_cfg(cohort, out))
    assert report.done == 5 and not report.failed and report.processed == 5
    g = zarr.open_group(str(out), mode="r")
    assert g.attrs["format_version"] == 1 and g.attrs["global_seed"] == 3
    assert g.attrs["parameters"]["simulation"]["crop"] == 32
    assert g.attrs["view_order"][6:] == ["la_2ch", "la_3ch", "la_4ch"]
    assert g.attrs["masks"]["gaussian_r4"]["achieved_acceleration"] == pytest.approx(32 / 8)
    assert g["kspace"].shape == (5, 9, 10, 32, 32) and g["kspace"].dtype == np.complex64
    k = g["kspace"][2]
    img = np.abs(ifft2c(k))
    assert img.max() <= 1.0 + 1e-4 and img.max() > 0.9  # magnitudes are the [0, 1] views
    seg = g["seg"][2]
    assert set(np.unique(seg)) <= {0, 1, 2, 3, 4, 5} and {1, 2, 3, 4, 5} <= set(np.unique(seg))
    assert list(g["subjects/seg_present"][2]) == [True] * 6 + [True, False, True]
    assert bytes(g["subjects/checksum"][2]) == subject_checksum(k, seg)
    m = g["masks/gaussian_r4"][2]
    assert m.shape == (9, 10, 32) and (m.sum(-1) == 8).all()
    assert [str(x) for x in g["subjects/id"][:]] == EIDS
    assert len(g.attrs["builds"]) == 1


@pytest.mark.slow
def test_bit_identical_across_worker_counts(cohort, tmp_path):
    ref = _arrays_after(cohort, tmp_path / "w0.zarr", 0)
    for workers in (1, 2):
        other = _arrays_after(cohort, tmp_path / f"w{workers}.zarr", workers)
        for key in ref:
            np.testing.assert_array_equal(ref[key], other[key], err_msg=f"{key} differs with {workers} workers")


def _arrays_after(cohort: Path, out: Path, workers: int) -> dict[str, np.ndarray]:
    build_store(_cfg(cohort, out, workers=workers))
    return _arrays(out)


def test_rerun_skips_done_and_refuses_other_parameters(cohort, tmp_path):
    out = tmp_path / "s.zarr"
    build_store(_cfg(cohort, out))
    again = build_store(_cfg(cohort, out))
    assert again.processed == 0 and again.skipped == 5
    other = BuildConfig(input_dir=str(cohort), out=str(out), masks=[MaskSpec("gaussian", 8)], params=PARAMS, seed=3, workers=0, progress=False)
    with pytest.raises(Exception, match="different parameters"):
        build_store(other)


def test_resume_after_kill(cohort, tmp_path):
    """A build killed with SIGKILL mid-way resumes to the same store as an uninterrupted one."""
    ref = tmp_path / "ref.zarr"
    build_store(_cfg(cohort, ref))
    out = tmp_path / "killed.zarr"
    script = textwrap.dedent(
        f"""
        import time, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import kspace_sim.build as b
        from test_build import _cfg
        slow = b.process_subject
        def process(*a, **k):
            time.sleep(0.6)
            return slow(*a, **k)
        b.process_subject = process
        cfg = _cfg({str(cohort)!r}, {str(out)!r})
        cfg.flush_seconds = 0.0
        b.build_store(cfg)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            time.sleep(0.2)
            try:
                st = zarr.open_group(str(out), mode="r")["subjects/status"][:]
            except Exception:
                continue
            if (st == 1).sum() >= 2:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    st = zarr.open_group(str(out), mode="r")["subjects/status"][:]
    assert 2 <= (st == 1).sum() < 5, "the kill must land mid-build"
    done_before = int((st == 1).sum())
    report = build_store(_cfg(cohort, out))
    assert report.skipped == done_before and report.processed == 5 - done_before
    a, b = _arrays(ref), _arrays(out)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _bad_cohort(root: Path) -> dict[str, str]:
    """Good subjects plus one per bad-input case; returns {eid: expected reason fragment}."""
    write_cohort(root, ["2000000", "2000009"])
    expected = {}
    # missing view
    save_subject_nifti(make_subject("2000001"), root / "2000001")
    (root / "2000001" / "la_3ch.nii.gz").unlink()
    expected["2000001"] = "missing view la_3ch"
    # truncated file
    save_subject_nifti(make_subject("2000002"), root / "2000002")
    p = root / "2000002" / "sa.nii.gz"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
    expected["2000002"] = "cannot read sa.nii.gz"
    # NaNs
    vol = make_subject("2000003")
    save_subject_nifti(vol, root / "2000003")
    sa = vol.images["sa"].copy()
    sa[3, 3, 2, 1] = np.nan
    img = nib.Nifti1Image(sa, vol.affines["sa"])
    nib.save(img, str(root / "2000003" / "sa.nii.gz"))
    expected["2000003"] = "NaN"
    # fewer than 6 short-axis slices
    save_subject_nifti(make_subject("2000004", n_slices=5), root / "2000004")
    expected["2000004"] = "only 5 short-axis slices"
    # image / segmentation shape mismatch
    vol = make_subject("2000005")
    vol.segs["seg_la_2ch"] = vol.segs["seg_la_2ch"][:-2]
    save_subject_nifti(vol, root / "2000005")
    expected["2000005"] = "seg_la_2ch.nii.gz shape"
    # corrupt (not gzip at all)
    save_subject_nifti(make_subject("2000006"), root / "2000006")
    (root / "2000006" / "la_2ch.nii.gz").write_bytes(b"this is not a nifti file")
    expected["2000006"] = "cannot read la_2ch.nii.gz"
    # a different frame count: resampled (documented), not rejected
    save_subject_nifti(make_subject("2000007", n_frames=14), root / "2000007")
    return expected


def test_bad_subjects_are_recorded_and_build_goes_on(tmp_path):
    expected = _bad_cohort(tmp_path / "in")
    seen = []
    report = build_store(_cfg(tmp_path / "in", tmp_path / "s.zarr"), on_failure=lambda s, r: seen.append(s))
    failed = dict(report.failed)
    assert set(failed) == set(expected) == set(seen)
    for eid, fragment in expected.items():
        assert fragment in failed[eid], (eid, failed[eid])
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    ids = [str(x) for x in g["subjects/id"][:]]
    st = g["subjects/status"][:]
    assert st[ids.index("2000000")] == 1 and st[ids.index("2000009")] == 1
    row = ids.index("2000007")
    assert st[row] == 1 and g["subjects/source_frames"][row] == 14
    assert g.attrs["builds"][-1]["failed"][0]["reason"]


def test_rerun_retries_failed_subjects(tmp_path):
    """A subject that failed (corrupt input) is retried by the next run of the same build once its
    input is fixed; the done ones are skipped, and the result equals an uninterrupted build."""
    inp = tmp_path / "in"
    write_cohort(inp, EIDS[:3])
    sa = inp / EIDS[1] / "sa.nii.gz"
    good = sa.read_bytes()
    sa.write_bytes(good[: len(good) // 3])  # truncated
    out = tmp_path / "s.zarr"
    first = build_store(_cfg(inp, out))
    assert [sid for sid, _ in first.failed] == [EIDS[1]] and first.done == 2
    assert zarr.open_group(str(out), mode="r")["subjects/status"][:].tolist() == [1, 2, 1]
    sa.write_bytes(good)  # the input is fixed
    second = build_store(_cfg(inp, out))
    assert second.processed == 1 and second.skipped == 2 and second.done == 3 and not second.failed
    g = zarr.open_group(str(out), mode="r")
    assert g["subjects/status"][:].tolist() == [1, 1, 1] and str(g["subjects/reason"][1]) == ""
    assert [b["processed"] for b in g.attrs["builds"]] == [3, 1]
    ref = tmp_path / "ref.zarr"
    build_store(_cfg(inp, ref))
    a, b = _arrays(ref), _arrays(out)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_cli_rejects_bad_requests_before_work(tmp_path, cohort):
    runner = CliRunner()
    out = tmp_path / "x.zarr"
    r = runner.invoke(app, ["build", "--input", str(tmp_path / "nope"), "--out", str(out), "--mask", "gaussian"])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["build", "--input", str(cohort), "--out", str(out), "--acc", "0.5", "--mask", "gaussian"])
    assert r.exit_code == 2 and "R must be >= 1" in r.output
    r = runner.invoke(app, ["build", "--input", str(cohort), "--out", str(out), "--mask", "spiral"])
    assert r.exit_code == 2 and "unknown mask pattern" in r.output
    assert not out.exists()


def test_cli_build_inspect_preview(tmp_path, cohort):
    runner = CliRunner()
    out = tmp_path / "c.zarr"
    r = runner.invoke(app, ["build", "--input", str(cohort), "--out", str(out), "--mask", "equispaced", "--acc", "4", "--crop", "32", "--frames", "10", "--workers", "0"])
    assert r.exit_code == 0, r.output
    assert "achieved R = 4.0000" in r.output
    r = runner.invoke(app, ["inspect", str(out)])
    assert r.exit_code == 0 and "masks/equispaced_r4" in r.output
    png = tmp_path / "p.png"
    r = runner.invoke(app, ["preview", str(out), "--subject", EIDS[0], "--out", str(png)])
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 10_000
    r = runner.invoke(app, ["preview", str(out), "--subject", "999"])
    assert r.exit_code == 2




@pytest.mark.slow
def test_mask_bank_on_cluster_equals_serial(cohort, tmp_path):
    spec = [MaskSpec("vista", 4, options={"iterations": 20, "cache": False}, bank_size=3)]
    stores = []
    for workers in (0, 2):
        out = tmp_path / f"v{workers}.zarr"
        build_store(BuildConfig(str(cohort), str(out), spec, PARAMS, seed=3, workers=workers, progress=False))
        stores.append(zarr.open_group(str(out), mode="r")["masks/vista_r4"][:])
    np.testing.assert_array_equal(*stores)


def test_sharded_chunking_stores_the_same_data(cohort, tmp_path):
    a, b = tmp_path / "subject.zarr", tmp_path / "sharded.zarr"
    build_store(_cfg(cohort, a))
    build_store(_cfg(cohort, b, chunking="sharded"))
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert ga["kspace"].chunks == (1, 9, 10, 32, 32) and ga["kspace"].shards is None
    assert gb["kspace"].chunks == (1, 1, 10, 32, 32) and gb["kspace"].shards == (1, 9, 10, 32, 32)
    for key in ("kspace", "seg", "subjects/checksum"):
        np.testing.assert_array_equal(ga[key][:], gb[key][:])
