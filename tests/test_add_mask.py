import numpy as np
import pytest
import zarr
from synthetic_subjects import write_cohort
from typer.testing import CliRunner

from cli.kspace_sim_app import app
from kspace_sim.add_mask import add_mask_to_store
from kspace_sim.build import BuildConfig, build_store
from kspace_sim.simulate import MaskSpec, SimulationParams

PARAMS = SimulationParams(crop=32, frames=10)


def test_add_mask_reproduces_build_and_resumes(tmp_path):
    cohort = write_cohort(tmp_path / "in", ["1", "2", "3"])
    both = tmp_path / "both.zarr"
    build_store(BuildConfig(str(cohort), str(both), [MaskSpec("gaussian", 4), MaskSpec("uniform", 8)], PARAMS, seed=5, workers=0, progress=False))
    one = tmp_path / "one.zarr"
    build_store(BuildConfig(str(cohort), str(one), [MaskSpec("gaussian", 4)], PARAMS, seed=5, workers=0, progress=False))
    k_before = zarr.open_group(str(one), mode="r")["kspace"][:]
    rep = add_mask_to_store(str(one), MaskSpec("uniform", 8), workers=0, progress=False)
    assert rep.written == 3 and rep.achieved_acceleration == pytest.approx(8.0)
    g1, g2 = zarr.open_group(str(one), mode="r"), zarr.open_group(str(both), mode="r")
    np.testing.assert_array_equal(g1["masks/uniform_r8"][:], g2["masks/uniform_r8"][:])
    np.testing.assert_array_equal(g1["kspace"][:], k_before)
    assert "uniform_r8" in g1.attrs["masks"]
    # an interrupted add-mask: blank one row, rerun writes only that row
    zarr.open_group(str(one), mode="r+")["masks/uniform_r8"][1] = False
    rep = add_mask_to_store(str(one), MaskSpec("uniform", 8), workers=0, progress=False)
    assert rep.written == 1 and rep.skipped == 2
    np.testing.assert_array_equal(zarr.open_group(str(one), mode="r")["masks/uniform_r8"][:], g2["masks/uniform_r8"][:])


def test_a_mask_added_later_is_recorded_as_the_build_records_it(tmp_path):
    """A store built with one mask and given a second by add-mask is indistinguishable, in that mask,
    from one built with both: the same array (values and metadata) and the same ``masks`` attribute
    entry (spec, achieved R, and the ``_counts`` line counts a later build resumes from), also after
    an interrupted add-mask is resumed."""
    cohort = write_cohort(tmp_path / "in", ["1", "2", "3"])
    gauss, unif = MaskSpec("gaussian", 4), MaskSpec("uniform", 8)
    both, one = tmp_path / "both.zarr", tmp_path / "one.zarr"
    build_store(BuildConfig(str(cohort), str(both), [gauss, unif], PARAMS, seed=5, workers=0, progress=False))
    build_store(BuildConfig(str(cohort), str(one), [gauss], PARAMS, seed=5, workers=0, progress=False))
    add_mask_to_store(str(one), unif, workers=0, progress=False)

    def same_mask(name: str) -> None:
        built, added = zarr.open_group(str(both), mode="r"), zarr.open_group(str(one), mode="r")
        assert added.attrs["masks"][name] == built.attrs["masks"][name]
        assert added[f"masks/{name}"].metadata.to_dict() == built[f"masks/{name}"].metadata.to_dict()
        np.testing.assert_array_equal(added[f"masks/{name}"][:], built[f"masks/{name}"][:])

    same_mask("uniform_r8")
    same_mask("gaussian_r4")
    counts = zarr.open_group(str(one), mode="r").attrs["masks"]["uniform_r8"]["_counts"]
    n, s, t, _, w = zarr.open_group(str(one), mode="r")["kspace"].shape
    assert counts[0] == n * s * t * w and counts[0] == 8 * counts[1]  # every line, an eighth of them sampled
    zarr.open_group(str(one), mode="r+")["masks/uniform_r8"][1] = False  # interrupted: row 1 unwritten
    assert add_mask_to_store(str(one), unif, workers=0, progress=False).written == 1
    same_mask("uniform_r8")


def test_add_mask_cli_bad_input(tmp_path):
    cohort = write_cohort(tmp_path / "in", ["1"])
    out = tmp_path / "s.zarr"
    build_store(BuildConfig(str(cohort), str(out), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False))
    r = CliRunner().invoke(app, ["add-mask", str(out), "--mask", "gaussian", "--acc", "64", "--workers", "0"])
    assert r.exit_code == 2 and "exceeds" in r.output
    r = CliRunner().invoke(app, ["add-mask", str(out), "--mask", "gaussian", "--acc", "2", "--workers", "0"])
    assert r.exit_code == 0 and "2.0000" in r.output and "without ACS" in r.output


def test_vista_bank_build_and_add_mask_agree(tmp_path):
    cohort = write_cohort(tmp_path / "in", ["1", "2"])
    spec = MaskSpec("vista", 4, options={"iterations": 20}, bank_size=2)
    a = tmp_path / "a.zarr"
    build_store(BuildConfig(str(cohort), str(a), [spec], PARAMS, seed=1, workers=0, progress=False))
    b = tmp_path / "b.zarr"
    build_store(BuildConfig(str(cohort), str(b), [MaskSpec("gaussian", 4)], PARAMS, seed=1, workers=0, progress=False))
    add_mask_to_store(str(b), spec, workers=0, progress=False)
    ma = zarr.open_group(str(a), mode="r")["masks/vista_r4"][:]
    np.testing.assert_array_equal(ma, zarr.open_group(str(b), mode="r")["masks/vista_r4"][:])
    assert (ma.sum(-1) == 8).all()


def test_achieved_r_is_nan_with_no_done_subject_in_build_and_add_mask(tmp_path):
    """One rule for the achieved R (kspace_sim.subject_runner.achieved_acceleration): with nothing
    sampled (no done subject) it is undefined, NaN, in the build and in add-mask alike (add-mask
    used to record 0.0 there)."""
    import math

    from kspace_sim.subject_runner import achieved_acceleration

    assert achieved_acceleration([100, 25, 80, 10]) == (4.0, 8.0)
    assert all(math.isnan(r) for r in achieved_acceleration([0, 0, 0, 0]))
    r, r_na = achieved_acceleration([100, 20, 80, 0])  # every sampled line inside the ACS block
    assert r == 5.0 and math.isnan(r_na)
    cohort = write_cohort(tmp_path / "in", ["1"])
    (cohort / "1" / "sa.nii.gz").write_bytes(b"not a nifti")
    out = tmp_path / "s.zarr"
    rep = build_store(BuildConfig(str(cohort), str(out), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False, labels=False))
    assert rep.done == 0 and math.isnan(rep.achieved_acceleration["gaussian_r4"]["achieved_acceleration"])
    added = add_mask_to_store(str(out), MaskSpec("uniform", 8), workers=0, progress=False)
    assert added.written == 0
    assert math.isnan(added.achieved_acceleration) and math.isnan(added.achieved_acceleration_without_acs)
    stored = zarr.open_group(str(out), mode="r").attrs["masks"]["uniform_r8"]
    assert math.isnan(stored["achieved_acceleration"])


def test_the_library_default_bank_is_the_clis():
    """A library user's MaskSpec gets the CLI's default bank (16 VISTA patterns, else none): no fresh
    seconds-long VISTA per slice unless asked for with bank_size=0."""
    from kspace_sim.simulate import DEFAULT_VISTA_BANK, default_bank_size

    assert DEFAULT_VISTA_BANK == 16
    assert MaskSpec("vista", 4).bank_size == 16 and MaskSpec("vista", 4).to_dict()["bank_size"] == 16
    assert MaskSpec("gaussian", 4).bank_size == 0
    assert MaskSpec("vista", 4, bank_size=0).bank_size == 0 and MaskSpec("vista", 4, bank_size=3).bank_size == 3
    assert default_bank_size("vista", None) == 16 and default_bank_size("uniform") == 0 and default_bank_size("vista", 2) == 2


def test_add_mask_refuses_a_mask_of_the_same_name_with_other_settings(tmp_path):
    """vista_r4 with other options or another bank has the same name: its rows would mix two masks."""
    cohort = write_cohort(tmp_path / "in", ["1", "2"])
    out = tmp_path / "s.zarr"
    spec = MaskSpec("vista", 4, options={"iterations": 20}, bank_size=2)
    build_store(BuildConfig(str(cohort), str(out), [spec], PARAMS, seed=1, workers=0, progress=False))
    before = zarr.open_group(str(out), mode="r")["masks/vista_r4"][:]
    for other in (MaskSpec("vista", 4, options={"iterations": 30}, bank_size=2),
                  MaskSpec("vista", 4, options={"iterations": 20}, bank_size=3)):
        with pytest.raises(ValueError, match="already holds mask vista_r4 made with other settings"):
            add_mask_to_store(str(out), other, workers=0, progress=False)
    r = CliRunner().invoke(app, ["add-mask", str(out), "--mask", "vista", "--acc", "4", "--mask-bank", "5", "--workers", "0"])
    assert r.exit_code == 2 and "other settings" in r.output and len(r.output.strip().splitlines()) == 1
    g = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(g["masks/vista_r4"][:], before)
    assert g.attrs["masks"]["vista_r4"]["bank_size"] == 2
    # the same settings again: a resume, nothing to write
    rep = add_mask_to_store(str(out), spec, workers=0, progress=False)
    assert rep.written == 0 and rep.skipped == 2
