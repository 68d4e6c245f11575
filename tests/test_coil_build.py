"""Stores with coils (issue 25, simulator side): the build writes the `coils/*` arrays of format
version 2, deterministic across workers; `--coils 1` is today's store; bad coil options exit 2
before any work; preview shows a coil store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic_subjects import write_cohort
from typer.testing import CliRunner

from cli.kspace_sim_app import app
from kspace_sim.build import BuildConfig, build_store
from kspace_sim.coil_settings import CoilSettings
from kspace_sim.coils import CoilGeometry, coil_maps_from_params
from kspace_sim.fft import ifft2c
from kspace_sim.noise import measured_snr_db, noise_seed
from kspace_sim.simulate import MaskSpec, SimulationParams
from kspace_sim.store.coil_arrays import read_subject_coils, subject_coil_kspace
from kspace_sim.store.schema import arrays_of_version

PARAMS = SimulationParams(crop=32, frames=6)
MASKS = [MaskSpec("gaussian", 4)]
EIDS = ["1000010", "1000011", "1000012"]
COILS = CoilSettings(n_coils=4, snr_db=20.0)


def _cfg(inp: Path, out: Path, workers: int = 0, coils: CoilSettings = COILS, **kw) -> BuildConfig:
    return BuildConfig(input_dir=str(inp), out=str(out), masks=MASKS, params=PARAMS, seed=5, workers=workers,
                       progress=False, labels=False, coils=coils, **kw)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("cohort"), EIDS)


@pytest.fixture(scope="module")
def coil_store(cohort, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coil") / "s.zarr"
    report = build_store(_cfg(cohort, out))
    assert report.done == 3 and not report.failed
    assert report.coils == "4 birdcage coils, SNR 20 dB"
    return out


def test_coil_store_has_the_version_2_arrays_and_attributes(coil_store):
    g = zarr.open_group(str(coil_store), mode="r")
    assert g.attrs["format_version"] == 2
    attrs = g.attrs["coils"]
    assert attrs["n_coils"] == 4 and attrs["snr_db"] == 20.0 and attrs["model"] == "birdcage"
    assert np.array_equal(np.asarray(attrs["noise_cov"]["real"]), np.eye(4))
    assert g.attrs["parameters"]["coils"]["n_coils"] == 4
    for spec in arrays_of_version(2):
        if spec.path.startswith("coils/") and spec.dtype != "float16":
            assert spec.path in g, spec.path
    assert g["coils/maps"].shape == (3, 4, 9, 32, 32) and g["coils/maps"].dtype == np.complex64
    assert g["coils/geometry"].shape == (3, 9, 7) and g["coils/noise_sigma"].shape == (3, 9)


def test_stored_coil_arrays_are_the_maps_of_the_stored_parameters(coil_store):
    g = zarr.open_group(str(coil_store), mode="r")
    ids = [str(x) for x in g["subjects/id"][:]]
    for row, sid in enumerate(ids):
        stored = read_subject_coils(g, row)
        assert stored.noise_seed == noise_seed(5, sid)
        for s in range(9):
            geom = CoilGeometry.from_array(stored.geometry[s], seed=int(stored.field_seed[s]))
            assert geom.n_coils == 4 and geom.model == "birdcage"
            assert np.array_equal(stored.maps[:, s], coil_maps_from_params(geom, (32, 32)))


def test_stored_sigma_gives_the_requested_snr_in_each_views_region(coil_store):
    g = zarr.open_group(str(coil_store), mode="r")
    k, seg, present = g["kspace"][0], g["seg"][0], g["subjects/seg_present"][0]
    sigma = g["coils/noise_sigma"][0]
    assert np.all(sigma > 0)
    image = ifft2c(k)
    for s in range(9):
        region = seg[s] > 0 if present[s] and (seg[s] > 0).any() else None
        assert abs(measured_snr_db(image[s], float(sigma[s]), region) - 20.0) < 1e-3
    # the synthesised noise has that sigma: coil k-space minus its noise-free part
    stored = read_subject_coils(g, 0)
    noisy = subject_coil_kspace(k, stored)
    clean = subject_coil_kspace(k, stored, noise=False)
    diff = noisy - clean
    for s in (0, 7):
        got = np.sqrt(np.mean(np.abs(diff[:, s]) ** 2))
        assert abs(got / sigma[s] - 1) < 0.05
    assert np.array_equal(noisy, subject_coil_kspace(k, stored))  # the stored seed: the same draw


def test_some_views_and_frames_are_their_part_of_the_whole_subject(coil_store):
    """Noise rule version 2: the coil k-space of a few views/frames, drawn alone, equals the same part of
    the whole subject's, bit for bit (noise: one sub-stream per view and frame); correlated noise too."""
    g = zarr.open_group(str(coil_store), mode="r")
    assert g.attrs["coils"]["noise_rule_version"] == 2 and g.attrs["parameters"]["coils"]["noise_rule_version"] == 2
    k, stored = g["kspace"][2], read_subject_coils(g, 2)
    whole = subject_coil_kspace(k, stored)
    views, frames = [1, 6], [0, 4, 5]
    part = subject_coil_kspace(k, stored, views=views, frames=frames)
    assert part.shape == (4, 2, 3, 32, 32)
    np.testing.assert_array_equal(part, whole[:, views][:, :, frames])
    one = subject_coil_kspace(k, stored, views=[6], frames=[5])
    np.testing.assert_array_equal(one, whole[:, [6]][:, :, [5]])
    stored.noise_cov = CoilSettings(n_coils=4, snr_db=20.0, noise_correlation=0.4).noise_cov().astype(np.complex128)
    # the white noise is bit-identical; its colouring by L is a BLAS product, equal to float32 rounding
    np.testing.assert_allclose(subject_coil_kspace(k, stored, views=views, frames=frames),
                               subject_coil_kspace(k, stored)[:, views][:, :, frames], rtol=0, atol=1e-6 * np.abs(whole).max())


def test_coil_build_is_the_same_on_two_workers(cohort, coil_store, tmp_path):
    out = tmp_path / "w2.zarr"
    assert build_store(_cfg(cohort, out, workers=2)).done == 3
    a, b = zarr.open_group(str(coil_store), mode="r"), zarr.open_group(str(out), mode="r")
    for name in ("kspace", "coils/maps", "coils/geometry", "coils/field_seed", "coils/noise_seed", "coils/noise_sigma",
                 "subjects/checksum"):
        assert np.array_equal(a[name][:], b[name][:]), name


def test_coil_build_resumes_and_refuses_other_coil_parameters(cohort, coil_store, tmp_path):
    out = tmp_path / "r.zarr"
    build_store(_cfg(cohort, out))
    g = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    g["subjects/status"][1] = 0
    g["coils/noise_sigma"][1] = np.nan
    assert build_store(_cfg(cohort, out)).processed == 1
    assert np.array_equal(g["coils/noise_sigma"][:], zarr.open_group(str(coil_store), mode="r")["coils/noise_sigma"][:])
    from kspace_sim.store.layout import StoreError

    with pytest.raises(StoreError, match="different parameters"):
        build_store(_cfg(cohort, out, coils=CoilSettings(n_coils=4, snr_db=10.0)))
    # a store begun under the unreleased noise rule version 1 (no noise_rule_version) is not resumed
    params = g.attrs["parameters"]
    del params["coils"]["noise_rule_version"]
    g.attrs["parameters"] = params
    with pytest.raises(StoreError, match="different parameters"):
        build_store(_cfg(cohort, out))


def test_float16_store_keeps_float16_maps(cohort, tmp_path):
    out = tmp_path / "f16.zarr"
    build_store(_cfg(cohort, out, coils=CoilSettings(n_coils=2, model="random_field"), storage="float16"))
    g = zarr.open_group(str(out), mode="r")
    assert g["coils/maps"].shape == (3, 2, 9, 32, 32, 2) and g["coils/maps"].dtype == np.float16
    stored = read_subject_coils(g, 0)
    geom = CoilGeometry.from_array(stored.geometry[3], seed=int(stored.field_seed[3]))
    assert geom.model == "random_field"
    assert np.abs(stored.maps[:, 3] - coil_maps_from_params(geom, (32, 32))).max() < 1e-3
    assert np.all(g["coils/noise_sigma"][:] == 0) and g.attrs["coils"]["snr_db"] is None


def test_coils_1_is_todays_store(cohort, tmp_path):
    """`--coils 1` (no SNR) writes exactly the single-coil store: version 1, no coil arrays or
    parameters, the same data as a build without the option."""
    plain, one = tmp_path / "plain.zarr", tmp_path / "one.zarr"
    build_store(BuildConfig(input_dir=str(cohort), out=str(plain), masks=MASKS, params=PARAMS, seed=5, workers=0,
                            progress=False, labels=False))
    build_store(_cfg(cohort, one, coils=CoilSettings(n_coils=1)))
    a, b = zarr.open_group(str(plain), mode="r"), zarr.open_group(str(one), mode="r")
    assert b.attrs["format_version"] == 1 and "coils" not in b and "coils" not in b.attrs.asdict()
    assert a.attrs["parameters"] == b.attrs["parameters"]
    for name in ("kspace", "seg", "masks/gaussian_r4", "subjects/checksum"):
        assert np.array_equal(a[name][:], b[name][:]), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--coils", "0"], "number of coils must be an integer >= 1"),
        (["--coils", "4", "--snr", "nan"], "SNR must be a finite number of dB"),
        (["--coils", "4", "--snr", "inf"], "SNR must be a finite number of dB"),
        (["--coils", "4", "--snr", "20", "--noise-correlation", "1.0"], "not positive definite"),
        (["--coils", "4", "--snr", "20", "--noise-correlation", "-0.5", "--noise-correlation-kind", "constant"],
         "not positive definite"),
        (["--coils", "4", "--coil-model", "helmet"], "unknown coil model"),
        (["--coils", "4", "--noise-correlation", "0.3"], "needs noise"),
    ],
)
def test_bad_coil_options_exit_2_before_any_work(cohort, tmp_path, args, message):
    out = tmp_path / "bad.zarr"
    res = CliRunner().invoke(app, ["build", "--input", str(cohort), "--out", str(out), "--mask", "gaussian",
                                   "--crop", "32", "--frames", "6", "--no-labels", "--workers", "0", *args])
    assert res.exit_code == 2, res.output
    assert message in res.output.replace("\n", " ")
    assert not out.exists()


def test_build_cli_prints_coils_and_snr(cohort, tmp_path):
    res = CliRunner().invoke(app, ["build", "--input", str(cohort), "--out", str(tmp_path / "c.zarr"), "--mask", "gaussian",
                                   "--crop", "32", "--frames", "6", "--no-labels", "--workers", "0",
                                   "--coils", "2", "--snr", "25", "--noise-correlation", "0.2"])
    assert res.exit_code == 0, res.output
    coils_row = next(line for line in res.output.splitlines() if "coils " in line and "SNR" in line)
    assert "2 birdcage coils, SNR 25 dB" in coils_row
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert g.attrs["coils"]["noise_cov"]["real"][0][1] == pytest.approx(0.2)


def test_preview_shows_the_coils(coil_store, tmp_path):
    png = tmp_path / "p.png"
    res = CliRunner().invoke(app, ["preview", str(coil_store), "--subject", EIDS[1], "--out", str(png), "--coil", "3",
                                   "--coil-view", "6"])
    assert res.exit_code == 0, res.output
    coil_png = tmp_path / "p-coils.png"
    assert png.stat().st_size > 1000 and coil_png.stat().st_size > 1000
    assert "p-coils.png" in res.output
    bad = CliRunner().invoke(app, ["preview", str(coil_store), "--subject", EIDS[1], "--out", str(tmp_path / "b.png"),
                                   "--coil", "4"])
    assert bad.exit_code == 2 and "--coil in 0..3" in bad.output
    assert not (tmp_path / "b.png").exists()


def test_add_mask_works_on_a_coil_store(cohort, tmp_path):
    """Masks are coil-independent: add-mask adds one to a store with coils and leaves the coils alone."""
    from kspace_sim.add_mask import add_mask_to_store

    out = tmp_path / "m.zarr"
    build_store(_cfg(cohort, out, coils=CoilSettings(n_coils=2, snr_db=30.0)))
    before = zarr.open_group(str(out), mode="r")["coils/maps"][:]
    add_mask_to_store(str(out), MaskSpec("uniform", 2), workers=0, progress=False)
    g = zarr.open_group(str(out), mode="r")
    assert "masks/uniform_r2" in g and g.attrs["format_version"] == 2
    assert np.array_equal(g["coils/maps"][:], before)


def test_subject_checksum_covers_the_coil_arrays(coil_store, tmp_path):
    """verify passes on a coil store, and a changed coil map or noise sigma fails its subject's checksum."""
    import shutil

    from kspace_sim.sharing.verify import verify_store

    assert verify_store(str(coil_store)).ok
    for name, change in (("coils/maps", lambda a: a * np.complex64(1.01)), ("coils/noise_sigma", lambda a: a * 2)):
        copy = tmp_path / name.replace("/", "_") / "s.zarr"
        shutil.copytree(coil_store, copy)
        g = zarr.open_group(str(copy), mode="r+")
        g[name][1] = change(g[name][1])
        rep = verify_store(str(copy))
        bad = [p for p in rep.problems if p.kind == "checksum"]
        assert len(bad) == 1 and "coils/maps" in bad[0].array, rep.problems


def test_verify_checks_the_coil_arrays_layout(coil_store, tmp_path):
    """A coil store whose coils/maps lost a coil, or whose noise_sigma has another dtype, fails verify's layout check."""
    import shutil

    from kspace_sim.sharing.verify import verify_store

    copy = tmp_path / "s.zarr"
    shutil.copytree(coil_store, copy)
    g = zarr.open_group(str(copy), mode="r+")
    n, k, s, h, w = g["coils/maps"].shape
    del g["coils/maps"]
    g.create_array("coils/maps", shape=(n, k - 1, s, h, w), dtype="complex64")
    sigma = g["coils/noise_sigma"][:]
    del g["coils/noise_sigma"]
    g.create_array("coils/noise_sigma", data=sigma.astype(np.float64))
    zarr.consolidate_metadata(str(copy))  # readers open the consolidated metadata
    layout = {p.array: p.detail for p in verify_store(str(copy)).problems if p.kind == "layout"}
    assert f"expected {(n, k, s, h, w)}" in layout["coils/maps"], layout
    assert "expected float32" in layout["coils/noise_sigma"], layout
