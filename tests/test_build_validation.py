"""Every parameter combination of a build or an add-mask is refused before anything is written:
exit 2, one line, no store created or touched (and the library gives a Python user the same check)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.kspace_sim_app import app
from kspace_sim.add_mask import add_mask_to_store, validate_mask_spec
from kspace_sim.build import BuildConfig, build_store, validate_build
from kspace_sim.simulate import MaskSpec, SimulationParams
from synthetic_subjects import write_cohort

PARAMS = SimulationParams(crop=32, frames=10)
SMALL = ["--crop", "32", "--frames", "10", "--workers", "0"]


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _one_line_error(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        ([MaskSpec("vista", 1.0, bank_size=16)], "VISTA needs R > 1"),
        ([MaskSpec("poisson", 1.0)], "poisson needs 1 < R"),
        ([MaskSpec("gaussian", 4, options={"acs_lines": 20})], "acs_lines=20 must be in"),
        ([MaskSpec("vista", 4, options={"alpha": 1.5})], "alpha must be in"),
        ([MaskSpec("gaussian", 4, options={"no_such_option": 1})], "no_such_option"),
        ([MaskSpec("gaussian", 4), MaskSpec("gaussian", 4)], "requested twice"),
        ([], "at least one mask"),
    ],
)
def test_validate_build_refuses_impossible_masks(tmp_path: Path, masks: list[MaskSpec], match: str) -> None:
    cfg = BuildConfig(str(tmp_path), str(tmp_path / "s.zarr"), masks, PARAMS, workers=0, progress=False)
    with pytest.raises(ValueError, match=match):
        validate_build(cfg)


@pytest.mark.parametrize(
    ("change", "match"),
    [({"storage": "float8"}, "storage must be one of"), ({"compression": "lz4"}, "compression must be one of"),
     ({"chunking": "slice"}, "chunking must be one of"), ({"policy": "sometimes"}, "policy must be one of"),
     ({"val_fraction": 1.5}, "val_fraction")],
)  # fmt: skip
def test_build_store_refuses_bad_options_before_writing(tmp_path: Path, change: dict, match: str) -> None:
    cohort = write_cohort(tmp_path / "in", ["1", "2"])
    out = tmp_path / "s.zarr"
    cfg = BuildConfig(str(cohort), str(out), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False, **change)
    with pytest.raises(ValueError, match=match):
        build_store(cfg)
    assert not out.exists()


def test_build_store_refuses_impossible_split_before_writing(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "in", ["1", "2", "3"])
    out = tmp_path / "s.zarr"
    with pytest.raises(ValueError, match="test_size = 5 subjects, but there are only 3"):
        build_store(
            BuildConfig(
                str(cohort), str(out), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False, test_size=5
            )
        )
    assert not out.exists()


def test_cli_build_vista_r1_then_r4_on_the_same_out(tmp_path: Path) -> None:
    """The issue's case: ``build --acc 1`` (default VISTA) used to create the store and fail, and
    the rerun with ``--acc 4`` was refused as 'built with different parameters'."""
    cohort = write_cohort(tmp_path / "in", ["1", "2"])
    out = tmp_path / "s.zarr"
    r = CliRunner().invoke(
        app, ["build", "--input", str(cohort), "--out", str(out), "--acc", "1", *SMALL, "--mask-bank", "2"]
    )
    assert r.exit_code == 2
    assert "VISTA needs R > 1" in _one_line_error(r.output)
    assert not out.exists()
    r = CliRunner().invoke(
        app, ["build", "--input", str(cohort), "--out", str(out), "--acc", "2", "--acc", "2", *SMALL]
    )
    assert r.exit_code == 2 and "requested twice" in _one_line_error(r.output) and not out.exists()
    r = CliRunner().invoke(
        app, ["build", "--input", str(cohort), "--out", str(out), "--acc", "4", "--mask", "gaussian", *SMALL]
    )
    assert r.exit_code == 0, r.output


def test_cli_build_demo_not_generated_for_bad_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --input the demo cohort is generated only after the parameters passed."""
    monkeypatch.setenv("KSPACE_SIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, ["build", "--acc", "1", "--demo-subjects", "2", "--workers", "0"])
    assert r.exit_code == 2 and "VISTA needs R > 1" in _one_line_error(r.output)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "stores").exists()


def test_add_mask_failure_leaves_the_store_untouched(tmp_path: Path) -> None:
    cohort = write_cohort(tmp_path / "in", ["1", "2"])
    out = tmp_path / "s.zarr"
    build_store(BuildConfig(str(cohort), str(out), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False))
    before = _tree_digest(out)
    for args, match in (
        (["--mask", "vista", "--acc", "1"], "VISTA needs R > 1"),
        (["--mask", "poisson", "--acc", "1"], "poisson needs 1 < R"),
        (["--mask", "vista", "--acc", "4", "--mask-bank", "-1"], "bank size must be >= 0"),
    ):
        r = CliRunner().invoke(app, ["add-mask", str(out), *args, "--workers", "0"])
        assert r.exit_code == 2 and match in _one_line_error(r.output), r.output
        assert _tree_digest(out) == before
        assert not (out / "masks" / "vista_r1").exists()
    with pytest.raises(ValueError, match="VISTA needs R > 1"):
        validate_mask_spec(MaskSpec("vista", 1.0), 10, 32)


def test_add_mask_error_after_creation_removes_the_new_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while the rows are written (here: a failing mask row) removes the mask this call
    created; the store's files are as before."""
    import kspace_sim.add_mask as add_mask_module

    cohort = write_cohort(tmp_path / "in", ["1", "2"])
    out = tmp_path / "s.zarr"
    build_store(BuildConfig(str(cohort), str(out), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False))
    before = _tree_digest(out)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(add_mask_module, "_mask_row", broken)
    with pytest.raises(OSError, match="disk full"):
        add_mask_to_store(str(out), MaskSpec("uniform", 8), workers=0, progress=False)
    assert not (out / "masks" / "uniform_r8").exists()
    assert _tree_digest(out) == before
