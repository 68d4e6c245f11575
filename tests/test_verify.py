"""``kspace-sim verify``: a flipped byte, a missing subject and changed parameters are named exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import zarr
from typer.testing import CliRunner

from kspace_sim.build import BuildConfig, build_store
from kspace_sim.sharing.manifest import PublishOptions, ReadOptions, publish
from kspace_sim.sharing.verify import verify
from kspace_sim.simulate import MaskSpec, SimulationParams
from synthetic_subjects import write_cohort

EIDS = [f"40000{i:02d}" for i in range(4)]
MASKS = [MaskSpec("gaussian", 4)]


def _cfg(cohort: Path, out: Path, crop: int = 32) -> BuildConfig:
    return BuildConfig(input_dir=str(cohort), out=str(out), masks=MASKS, params=SimulationParams(crop=crop, frames=10),
                       seed=2, workers=0, progress=False)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("v")
    cohort = write_cohort(root / "cohort", EIDS)
    store = root / "s.zarr"
    build_store(_cfg(cohort, store))
    mpath = root / "manifests" / "s.json"
    publish(str(store), mpath, PublishOptions(name="s", version="1.0.0"))
    return cohort, store, mpath


def _copy(published, tmp_path) -> tuple[Path, Path]:
    """A copy of the store and its manifest (the manifest's relative contentUrl still resolves)."""
    _, store, mpath = published
    shutil.copytree(store, tmp_path / "s.zarr")
    shutil.copytree(mpath.parent, tmp_path / "manifests")
    return tmp_path / "s.zarr", tmp_path / "manifests" / "s.json"


def test_clean_store_verifies(published):
    _, store, mpath = published
    rep = verify(str(mpath), ReadOptions(workers=2))
    assert rep.ok, [str(p) for p in rep.problems]
    assert rep.checked_subjects == 4 and rep.checked_files > 8
    assert verify(str(store)).ok


def test_flipped_byte_in_kspace_shard(published, tmp_path):
    store, mpath = _copy(published, tmp_path)
    shard = store / "kspace" / "c" / "2" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x10
    shard.write_bytes(bytes(data))
    rep = verify(str(mpath))
    assert not rep.ok
    named = {(p.kind, p.subject, p.array) for p in rep.problems}
    assert ("file", EIDS[2], "kspace") in named and ("checksum", EIDS[2], "kspace") in named
    assert all(p.subject == EIDS[2] for p in rep.problems)
    plain = verify(str(store))  # without the manifest, the stored checksum still catches it
    assert [(p.kind, p.subject) for p in plain.problems] == [("checksum", EIDS[2])]


def test_missing_subject_status_reset_and_row_removed(published, tmp_path):
    cohort, _, _ = published
    store, mpath = _copy(published, tmp_path)
    g = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    st = g["subjects/status"][:]
    st[1] = 0
    g["subjects/status"][...] = st
    rep = verify(str(mpath))
    assert any(p.kind == "subjects" and p.subject == EIDS[1] and p.array == "subjects/status" for p in rep.problems)
    assert rep.checked_subjects == 3
    # a store rebuilt without one subject under the manifest's store path
    shutil.rmtree(store)
    shutil.rmtree(cohort.parent / "cohort3", ignore_errors=True)
    small = shutil.copytree(cohort, cohort.parent / "cohort3")
    shutil.rmtree(small / EIDS[3])
    build_store(_cfg(small, store))
    rep = verify(str(mpath))
    msgs = [str(p) for p in rep.problems]
    assert any(p.subject == EIDS[3] and "not in the store" in p.detail for p in rep.problems), msgs


def test_changed_parameters_are_named(published, tmp_path):
    cohort, _, _ = published
    store, mpath = _copy(published, tmp_path)
    shutil.rmtree(store)
    build_store(_cfg(cohort, store, crop=16))
    rep = verify(str(mpath))
    details = [p.detail for p in rep.problems if p.kind == "provenance"]
    assert any(d.startswith("parameters.simulation.crop: manifest 32, store 16") for d in details), details


def test_layout_and_cli_exit_code(published, tmp_path):
    from cli.kspace_sim_app import app
    from cli.sharing_cmds import register

    if "verify" not in {c.name for c in app.registered_commands}:
        register(app)
    runner = CliRunner()
    _, _, mpath = published
    r = runner.invoke(app, ["verify", str(mpath), "--workers", "2", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "OK" in r.output
    store, mpath2 = _copy(published, tmp_path)
    shard = store / "seg" / "c" / "0" / "0" / "0" / "0" / "0"
    shard.write_bytes(b"garbage")
    r = runner.invoke(app, ["verify", str(mpath2), "--no-progress"])
    assert r.exit_code == 1
    assert EIDS[0] in r.output and "seg" in r.output
    r = runner.invoke(app, ["verify", str(tmp_path / "nothing.json")])
    assert r.exit_code == 2 and "no manifest" in r.output


def test_sha256_store_written_before_the_algorithm_attribute_still_resumes_and_verifies(tmp_path):
    """A store whose ``subjects/checksum`` is (N, 32) without an ``algorithm`` attribute is SHA-256:
    a resumed build keeps writing SHA-256 digests and verify checks them as such."""
    import hashlib

    import numpy as np

    from kspace_sim.store.checksum import store_checksum_algorithm, subject_checksum

    cohort = write_cohort(tmp_path / "cohort", EIDS)
    store = tmp_path / "legacy.zarr"
    build_store(_cfg(cohort, store))
    g = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    assert store_checksum_algorithm(g) == "xxh3_128" and g["subjects/checksum"].shape == (4, 16)
    k, seg = g["kspace"][1], g["seg"][1]
    assert bytes(g["subjects/checksum"][1]) == subject_checksum(k, seg)
    # turn it into a store of the earlier layout: SHA-256 digests, no attribute, rows 2-3 not done
    legacy = np.zeros((4, 32), np.uint8)
    for row in range(2):
        legacy[row] = np.frombuffer(subject_checksum(g["kspace"][row], g["seg"][row], "sha256"), np.uint8)
    del g["subjects/checksum"]
    g.create_array("subjects/checksum", shape=(4, 32), chunks=(4, 32), dtype="uint8", fill_value=0)[:] = legacy
    status = g["subjects/status"][:]
    status[2:] = 0
    g["subjects/status"][:] = status
    assert store_checksum_algorithm(g) == "sha256"
    zarr.consolidate_metadata(str(store))

    report = build_store(_cfg(cohort, store))  # resumes rows 2 and 3
    assert report.processed == 2 and report.done == 4
    g = zarr.open_group(str(store), mode="r")
    digest = hashlib.sha256(np.ascontiguousarray(g["kspace"][3]).tobytes() + g["seg"][3].tobytes()).digest()
    assert bytes(g["subjects/checksum"][3]) == digest
    assert verify(str(store)).ok


def test_cli_verify_passes_its_options_as_read_options(published, monkeypatch):
    """``kspace-sim verify``'s options (unchanged) reach the library as one ReadOptions value:
    fsspec options, hashing threads, progress bar."""
    import kspace_sim.sharing.verify as verify_module
    from cli.kspace_sim_app import app
    from cli.sharing_cmds import register

    if "verify" not in {c.name for c in app.registered_commands}:
        register(app)
    _, store, _ = published
    seen: list[ReadOptions | None] = []

    def recording(location: str, read: ReadOptions | None = None):
        seen.append(read)
        return verify(location, read)

    monkeypatch.setattr(verify_module, "verify", recording)
    args = ["verify", str(store), "--workers", "3", "--no-progress", "--storage-options", '{"anon": true}']
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert seen == [ReadOptions({"anon": True}, workers=3, progress=False)]
