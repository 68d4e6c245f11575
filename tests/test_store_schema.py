"""The store's one declaration (kspace_sim/store/schema.py) agrees with what is built, documented
and read: docs/store-format.md's generated table, the trainer's JSON copy, and a created store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from kspace_sim.store import schema
from kspace_sim.store.layout import create_schema_array, create_store

ROOT = Path(__file__).resolve().parents[1]


def test_doc_table_is_generated_from_the_schema():
    doc = (ROOT / "docs" / "store-format.md").read_text()
    assert schema.DOC_BEGIN in doc and schema.DOC_END in doc
    assert schema.render_doc(doc) == doc, "regenerate: python -m kspace_sim.store.schema --write-doc docs/store-format.md"


def test_render_doc_replaces_a_stale_block_and_needs_the_markers():
    stale = f"intro\n{schema.DOC_BEGIN}\n| old table |\n{schema.DOC_END}\noutro\n"
    fresh = schema.render_doc(stale)
    assert "| old table |" not in fresh and "`labels/phenotype_qc`" in fresh
    assert fresh.startswith("intro\n") and fresh.endswith("outro\n")
    with pytest.raises(ValueError, match="markers"):
        schema.render_doc("no markers here")


@pytest.mark.parametrize("version", schema.FORMAT_VERSIONS)
def test_trainer_json_equals_the_schema(version):
    shipped = json.loads((ROOT / "kmtr" / f"store_format_v{version}.json").read_text())
    assert shipped == json.loads(json.dumps(schema.schema_dict(version))), (
        f"regenerate: python -m kspace_sim.store.schema --version {version} --write-json kmtr/store_format_v{version}.json"
    )


def test_version_2_is_version_1_plus_the_coil_arrays():
    v1, v2 = schema.schema_dict(1), schema.schema_dict(2)
    assert v1["format_version"] == 1 and v2["format_version"] == 2
    assert v2["arrays"][: len(v1["arrays"])] == v1["arrays"]
    extra = v2["arrays"][len(v1["arrays"]):]
    assert {a["path"] for a in extra} == {"coils/geometry", "coils/field_seed", "coils/noise_seed", "coils/noise_sigma", "coils/maps"}
    assert all(a["required"] for a in extra)
    assert set(v2["group_attributes"]) - set(v1["group_attributes"]) == {"coils"}
    assert schema.format_version_for(False) == 1 and schema.format_version_for(True) == 2
    assert schema.array_spec("coils/maps", "float16").shape[-1] == 2
    with pytest.raises(ValueError, match="unknown store format version"):
        schema.arrays_of_version(3)


def test_doc_names_the_attributes_the_issue_found_missing():
    doc = (ROOT / "docs" / "store-format.md").read_text()
    for name in ("`labels/phenotype_qc`", "`input`", "`subject_seed_rule`", "`_counts`", "`split`", "`view` = \"sa\""):
        assert name in doc


@pytest.mark.parametrize("n_coils", [None, 3])
@pytest.mark.parametrize("storage", ["complex64", "float16"])
def test_created_store_matches_the_schema(tmp_path, storage, n_coils):
    ids = ["b", "a", "c"]
    g = create_store(str(tmp_path / "s.zarr"), ids, frames=4, size=8, mask_names=["vista_r4"], attrs={}, storage=storage,
                     n_coils=n_coils)
    create_schema_array(g, "labels/phenotypes", {"N": 3, "P": 18})
    create_schema_array(g, "labels/phenotype_qc", {"N": 3})
    create_schema_array(g, "labels/diseases", {"N": 3, "D": 5})
    dims = {"N": 3, "S": 9, "T": 4, "H": 8, "W": 8, "C": 16, "P": 18, "D": 5, "K": n_coils or 0}
    version = schema.format_version_for(n_coils is not None)
    seen = set()
    for spec in schema.arrays_of_version(version):
        if spec.path in schema.STORAGE_VARIANT_PATHS and spec.dtype != storage:
            continue
        path = "masks/vista_r4" if spec.path.startswith("masks/") else spec.path
        arr = g[path]
        seen.add(path)
        assert arr.shape == schema.resolve_shape(spec, dims), path
        if spec.dtype == "string":
            assert np.dtype(arr.dtype).kind in "UTO", path
        else:
            assert np.dtype(arr.dtype) == np.dtype(spec.dtype), path
            fill = arr.fill_value
            if isinstance(spec.fill, float) and np.isnan(spec.fill):
                assert np.isnan(fill), path
            else:
                assert fill == spec.fill, path
        for attr in spec.attrs:
            if path.startswith("subjects/") or path in schema.STORAGE_VARIANT_PATHS:
                assert attr in arr.attrs, (path, attr)
    arrays = {name for name, obj in g.members(max_depth=None) if isinstance(obj, zarr.Array)}
    assert arrays == seen, "every array of a created store is declared in the schema"
    assert g["subjects/status"].attrs["codes"] == schema.STATUS_CODES
    assert g["subjects/split"].attrs["codes"] == schema.SPLIT_CODES
    assert g.attrs["format"] == schema.FORMAT_NAME and g.attrs["format_version"] == version
    assert [str(x) for x in g["subjects/id"][:]] == ids


@pytest.mark.slow
def test_a_built_store_has_only_declared_arrays_and_attributes(simulated_store):
    g = zarr.open_group(simulated_store.store, mode="r")
    assert set(g.attrs.asdict()) <= set(schema.GROUP_ATTRIBUTES)
    declared = {"masks/" if a.path.startswith("masks/") else a.path for a in schema.ARRAYS}
    for name, obj in g.members(max_depth=None):
        if isinstance(obj, zarr.Array):
            assert ("masks/" if name.startswith("masks/") else name) in declared, name


def test_trainer_reader_checks_stores_against_the_shipped_schema(tmp_path):
    from kmtr.store import StoreError, check_layout, read_store_info

    url = str(tmp_path / "s.zarr")
    g = create_store(url, ["a", "b"], frames=4, size=8, mask_names=["gaussian_r4"], attrs={})
    check_layout(g, url)
    assert read_store_info(g, url).masks == ("gaussian_r4",)
    del g["subjects/dt"]
    with pytest.raises(StoreError, match="required array 'subjects/dt' is missing"):
        read_store_info(g, url)
    create_schema_array(g, "subjects/dt", {"N": 2})
    g.create_array("masks/bad_r2", shape=(2, 9, 4, 8), dtype="uint8")
    with pytest.raises(StoreError, match="'masks/bad_r2' should be 4-d bool"):
        check_layout(g, url)


def test_resume_checks_the_layout_against_the_schema(tmp_path):
    """A resume with the same parameters refuses a store whose arrays are not the schema's (one line
    naming them) instead of writing into it."""
    from kspace_sim.build import BuildConfig, build_store
    from kspace_sim.simulate import MaskSpec, SimulationParams
    from kspace_sim.store.layout import StoreError, layout_problems
    from synthetic_subjects import write_cohort

    cohort = write_cohort(tmp_path / "in", ["1", "2"])
    out = tmp_path / "s.zarr"
    cfg = BuildConfig(str(cohort), str(out), [MaskSpec("gaussian", 4)], SimulationParams(crop=32, frames=10),
                      workers=0, progress=False, labels=False)
    build_store(cfg)
    g = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    assert layout_problems(g, frames=10, size=32, storage="complex64", mask_names=["gaussian_r4"]) == []
    assert build_store(cfg).skipped == 2  # a clean resume: nothing to do
    g["subjects/status"][1] = 0
    del g["subjects/dt"]
    g.create_array("subjects/dt", shape=(2,), dtype="float64")
    with pytest.raises(StoreError, match=r"subjects/dt: \(2,\) float64, expected \(2,\) float32"):
        build_store(cfg)
    del g["masks/gaussian_r4"]
    assert "masks/gaussian_r4: missing" in layout_problems(g, frames=10, size=32, storage="complex64", mask_names=["gaussian_r4"])
