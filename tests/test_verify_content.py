"""``verify`` checks content, not incidental bytes: a rebuild of the same store in another folder, at
another time, from another commit, verifies against the first build's manifest (the volatile values
are reported as notes); a flipped byte in any data array, a changed shape or attribute still fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import zarr
from typer.testing import CliRunner

import kspace_sim.build as build_module
from cli.kspace_sim_app import app
from kspace_sim.build import BuildConfig, build_store
from kspace_sim.sharing.content import canonical_metadata, metadata_digest
from kspace_sim.sharing.manifest import PublishOptions, ReadOptions, publish
from kspace_sim.sharing.verify import verify
from kspace_sim.simulate import MaskSpec, SimulationParams
from synthetic_subjects import write_cohort

EIDS = [f"50000{i:02d}" for i in range(4)]


def _build(cohort: Path, out: Path, commit: str, workers: int = 0) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build_module, "git_commit", lambda: commit)
        cfg = BuildConfig(
            str(cohort),
            str(out),
            [MaskSpec("gaussian", 4)],
            SimulationParams(crop=32, frames=10),
            seed=3,
            workers=workers,
            progress=False,
        )
        build_store(cfg)


@pytest.fixture(scope="module")
def _rebuilt_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first build published, then replaced by a rebuild (another folder, commit and time)."""
    root = tmp_path_factory.mktemp("rebuilt")
    cohort = write_cohort(root / "cohort", EIDS)
    first = root / "s.zarr"
    _build(cohort, first, "a" * 40)
    publish(str(first), root / "manifests" / "s.json", PublishOptions(name="s", version="1.0.0"))
    second = root / "elsewhere" / "s.zarr"
    _build(cohort, second, "b" * 40)
    zarr.open_group(str(second), mode="r+").attrs["created"] = "2031-01-01T00:00:00+00:00"  # as if built years later
    zarr.consolidate_metadata(str(second))
    shutil.rmtree(first)
    shutil.move(str(second), str(first))
    return root


@pytest.fixture()
def rebuilt(_rebuilt_once: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the rebuilt store and the first build's manifest: (store, manifest)."""
    shutil.copytree(_rebuilt_once / "s.zarr", tmp_path / "s.zarr")
    shutil.copytree(_rebuilt_once / "manifests", tmp_path / "manifests")
    return tmp_path / "s.zarr", tmp_path / "manifests" / "s.json"


def test_rebuild_verifies_and_reports_volatile_values(rebuilt: tuple[Path, Path]) -> None:
    store, mpath = rebuilt
    rep = verify(str(mpath), ReadOptions(workers=2))
    assert rep.ok, [str(p) for p in rep.problems]
    notes = "\n".join(rep.notes)
    assert "git_commit: manifest 'aaaa" in notes and "store 'bbbb" in notes
    assert "store_created" in notes and "2031-01-01" in notes
    assert "zarr.json: only volatile metadata differs" in notes
    r = CliRunner().invoke(app, ["verify", str(mpath), "--no-progress", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "OK" in r.output and "note: git_commit" in r.output


def test_republishing_a_rebuild_is_unchanged(rebuilt: tuple[Path, Path]) -> None:
    store, mpath = rebuilt
    before = mpath.read_text()
    _, outcome = publish(str(store), mpath, PublishOptions(name="s", version="1.0.0"))
    assert outcome == "unchanged" and mpath.read_text() == before


@pytest.mark.parametrize(
    "array",
    [
        "kspace",
        "seg",
        "masks/gaussian_r4",
        "labels/phenotypes",
        "subjects/status",
        "subjects/split",
        "subjects/id",
        "subjects/checksum",
        "subjects/dt",
    ],
)
def test_a_flipped_byte_in_any_data_array_fails(rebuilt: tuple[Path, Path], array: str) -> None:
    store, mpath = rebuilt
    chunk = sorted(p for p in (store / array / "c").rglob("*") if p.is_file())[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    rep = verify(str(mpath), ReadOptions(workers=2))
    assert not rep.ok
    assert any(p.array.startswith(array) or array in p.detail for p in rep.problems), [str(p) for p in rep.problems]


def test_a_changed_attribute_or_shape_fails(rebuilt: tuple[Path, Path]) -> None:
    store, mpath = rebuilt
    meta = store / "labels" / "phenotypes" / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["columns"][10] = "LAV maximum (mL)"
    meta.write_text(json.dumps(doc))
    rep = verify(str(mpath), ReadOptions(workers=2))
    assert [(p.kind, p.array) for p in rep.problems] == [("metadata", "labels/phenotypes/zarr.json")]
    doc["attributes"]["columns"][10] = "LAV max (mL)"
    doc["shape"] = [len(EIDS), 17]
    meta.write_text(json.dumps(doc))
    zarr.consolidate_metadata(str(store))  # as a writer that changed the array would
    rep = verify(str(mpath), ReadOptions(workers=2))
    kinds = {(p.kind, p.array) for p in rep.problems}
    assert ("layout", "labels/phenotypes") in kinds and ("metadata", "labels/phenotypes/zarr.json") in kinds


def test_changed_parameters_or_seed_fail(rebuilt: tuple[Path, Path]) -> None:
    store, mpath = rebuilt
    group = zarr.open_group(str(store), mode="r+")
    group.attrs["global_seed"] = 4
    zarr.consolidate_metadata(str(store))
    rep = verify(str(mpath), ReadOptions(workers=2))
    assert any(p.kind == "provenance" and "global_seed" in p.detail for p in rep.problems)
    assert any(p.kind == "metadata" and p.array == "zarr.json" for p in rep.problems)


def test_canonical_metadata_drops_only_volatile_values() -> None:
    root = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"created": "t", "git_commit": "c", "builds": [{"seconds": 1}], "global_seed": 0,
                       "float16_image_nrmse": {"max": 1e-4, "mean_this_run": 2e-5}, "parameters": {"seconds": 2}},
        "consolidated_metadata": {"metadata": {}},
    }  # fmt: skip
    got = canonical_metadata("zarr.json", json.dumps(root).encode())
    assert got == {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {"global_seed": 0, "float16_image_nrmse": {"max": 1e-4}, "parameters": {}},
    }
    array = {"shape": [4, 18], "attributes": {"created": "t", "report": {"seconds": 3.1, "rows": 5}}}
    assert canonical_metadata("labels/diseases/zarr.json", json.dumps(array).encode())["attributes"] == {
        "created": "t",
        "report": {"rows": 5},
    }
    assert metadata_digest("zarr.json", json.dumps(root).encode()) == metadata_digest(
        "zarr.json", json.dumps({**root, "attributes": {**root["attributes"], "created": "u"}}).encode()
    )
