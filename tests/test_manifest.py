"""Croissant manifests: mlcroissant validation, portable paths, publishing rules; stratified splits."""

from __future__ import annotations

import json
from pathlib import Path

import mlcroissant as mlc
import numpy as np
import pytest
import zarr

from kspace_sim.build import BuildConfig, build_store
from kspace_sim.sharing.manifest import (
    ManifestError,
    PublishOptions,
    SplitOptions,
    inline_values,
    manifest_store_url,
    publish,
    resplit_store,
    sidecar_paths,
    validate_manifest,
)
from kspace_sim.sharing.splits import disease_strata, stratified_split
from kspace_sim.simulate import MaskSpec, SimulationParams
from synthetic_subjects import write_cohort

EIDS = [f"30000{i:02d}" for i in range(4)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("m")
    cohort = write_cohort(root / "cohort", EIDS)
    (cohort / "DEMO_COHORT.txt").write_text("synthetic")
    out = root / "stores" / "s.zarr"
    cfg = BuildConfig(input_dir=str(cohort), out=str(out), masks=[MaskSpec("gaussian", 4)],
                      params=SimulationParams(crop=32, frames=10), seed=1, workers=0, progress=False)
    build_store(cfg)
    return out


def test_manifest_is_valid_croissant_and_portable(store, tmp_path):
    mpath = tmp_path / "manifests" / "t.json"
    doc, outcome = publish(str(store), mpath, PublishOptions(name="t", version="1.0.0", ukb_application="12345"))
    assert outcome == "written" and validate_manifest(doc) == []
    ds = mlc.Dataset(jsonld=str(mpath))
    assert not ds.metadata.issues.errors
    text = mpath.read_text()
    assert str(tmp_path) not in text and "/tmp" not in text
    assert manifest_store_url(doc, mpath) == str(store.resolve())
    records = list(ds.records("subjects"))
    assert len(records) == 4
    assert {r["subjects/subject_id"].decode() for r in records} == set(EIDS)
    prov = inline_values(doc, "provenance")
    assert prov["synthetic"] is True and prov["global_seed"] == 1
    assert prov["parameters"]["simulation"]["crop"] == 32 and prov["git_commit"]
    assert "zarr" in prov["library_versions"]
    assert inline_values(doc, "access")["ukb_application"] == "12345"
    csv_path, sums_path = sidecar_paths(mpath)
    assert csv_path.exists() and "kspace/c/0/0/0/0/0" in sums_path.read_text()
    import kmtr.store

    assert kmtr.store.resolve_store_url(mpath) == str(store.resolve())


def test_publish_refuses_same_version_different_content(store, tmp_path):
    mpath = tmp_path / "t.json"
    publish(str(store), mpath, PublishOptions(name="t", version="1.0.0"))
    assert publish(str(store), mpath, PublishOptions(name="t", version="1.0.0"))[1] == "unchanged"
    with pytest.raises(ManifestError, match="already publishes version 1.0.0.*license"):
        publish(str(store), mpath, PublishOptions(name="t", version="1.0.0", license="CC-BY-4.0"))
    with pytest.raises(ManifestError, match="not newer"):
        publish(str(store), mpath, PublishOptions(name="t", version="0.9.0", license="CC-BY-4.0"))
    doc, outcome = publish(str(store), mpath, PublishOptions(name="t", version="1.1.0", license="CC-BY-4.0"))
    assert outcome == "new version" and json.loads(mpath.read_text())["version"] == "1.1.0"


def test_resplit_then_publish(store, tmp_path):
    counts = resplit_store(str(store), SplitOptions(seed=5, test_size=1, val_fraction=0.25))
    assert counts == {"train": 2, "validation": 1, "test": 1}
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["split"]["seed"] == 5 and (g["subjects/split"][:] == 2).sum() == 1
    doc, _ = publish(str(store), tmp_path / "s.json", PublishOptions(name="s"))
    assert inline_values(doc, "splits")["test"] == 1


def test_stratified_split_deterministic_order_independent_and_stratified():
    ids = [f"{1000000 + i}" for i in range(2000)]
    rng = np.random.default_rng(0)
    diseases = np.zeros((2000, 3), dtype=np.int8)
    diseases[:100, 0] = 1  # rare
    diseases[100:600, 1] = 1
    diseases[1500:, :] = -1
    rng.shuffle(diseases)
    strata = disease_strata(diseases, ["rare", "common", "other"])
    a = stratified_split(ids, 7, test_size=200, val_fraction=0.1, strata=strata)
    assert a.dtype == np.int8 and (a == 2).sum() == 200 and (a == 1).sum() == 200
    np.testing.assert_array_equal(a, stratified_split(ids, 7, 200, 0.1, strata))
    perm = rng.permutation(2000)
    b = stratified_split([ids[i] for i in perm], 7, 200, 0.1, [strata[i] for i in perm])
    np.testing.assert_array_equal(a[perm], b)
    assert not np.array_equal(a, stratified_split(ids, 8, 200, 0.1, strata))
    s = np.array(strata)
    assert ((s == "rare") & (a == 2)).sum() == 10  # 100 of 2000 → 10 of 200 test subjects
    assert ((s == "common") & (a == 2)).sum() == 50
    assert ((s == "unknown") & (a == 2)).sum() == 50
    with pytest.raises(ValueError, match="only"):
        stratified_split(ids[:10], 0, test_size=1000)
