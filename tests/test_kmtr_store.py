"""kmtr.store: format checks, split selection, path / URL / manifest resolution."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest
import torch

from kmtr.data import KSpaceDataset
from kmtr.store import StoreError, open_store, read_store_info, resolve_store_url
from kmtr_fixtures import store, write_store  # noqa: F401

torch.set_num_threads(1)


def test_store_info(store):  # noqa: F811
    info = read_store_info(open_store(store), store)
    assert (info.n, info.s, info.t, info.h, info.w) == (6, 9, 10, 32, 32)
    assert info.masks == ("gaussian_r8", "vista_r4")
    assert info.view_ids == (0,) * 6 + (1,) * 3
    np.testing.assert_array_equal(info.rows("train"), [0, 1, 2, 3])
    np.testing.assert_array_equal(info.rows("validation"), [4])
    np.testing.assert_array_equal(info.rows("all"), [0, 1, 2, 3, 4])  # row 5 failed


def test_fixture_store_passes_the_simulators_verify(store):  # noqa: F811
    """The fixture is written through the simulator's layout: its own checker accepts it (shapes,
    dtypes, attributes, the checksum of every done subject's rows)."""
    from kspace_sim.sharing.verify import verify

    result = verify(store)
    assert result.ok, [str(p) for p in result.problems]
    assert result.checked_subjects == 5


def test_bad_inputs_are_clear_errors(store, tmp_path):  # noqa: F811
    with pytest.raises(StoreError, match="format_version 3"):
        open_store(write_store(tmp_path / "v3.zarr", n=2, t=5, h=8, w=8, format_version=3))
    with pytest.raises(StoreError, match="coils/geometry"):  # version 2 without its coil arrays
        KSpaceDataset(write_store(tmp_path / "v2.zarr", n=2, t=5, h=8, w=8, format_version=2), "all", "vista_r4")
    with pytest.raises(StoreError, match="no store"):
        open_store(tmp_path / "missing.zarr")
    with pytest.raises(StoreError, match="mask 'vista_r16' not in"):
        KSpaceDataset(store, "train", "vista_r16")
    with pytest.raises(StoreError, match="split 'test'.*no subject"):
        KSpaceDataset(store, "test", "vista_r4")
    with pytest.raises(StoreError, match="unknown split"):
        KSpaceDataset(store, "holdout", "vista_r4")
    with pytest.raises(StoreError, match="cannot sub-sample"):
        KSpaceDataset(store, "train", "vista_r4", frames=11)


def test_manifest_and_fsspec_url(store, tmp_path):  # noqa: F811
    manifest = tmp_path / "dataset.json"
    manifest.write_text(json.dumps({
        "@context": {"@vocab": "https://schema.org/"}, "@type": "Dataset", "name": "fixture",
        "distribution": [
            {"@type": "cr:FileObject", "contentUrl": "README.md", "encodingFormat": "text/markdown"},
            {"@type": "cr:FileSet", "contentUrl": store, "encodingFormat": "application/x-zarr"},
        ],
    }))
    assert resolve_store_url(manifest) == store
    ds = KSpaceDataset(str(manifest), "train", "vista_r4")
    assert len(ds) == 4
    fs = fsspec.filesystem("memory")
    fs.put(store, "/kmtr_fixture.zarr", recursive=True)
    try:
        mem = KSpaceDataset("memory://kmtr_fixture.zarr", "train", "vista_r4", frames=5)
        loc = KSpaceDataset(store, "train", "vista_r4", frames=5)
        assert torch.equal(mem[1]["kspace"], loc[1]["kspace"])
    finally:
        fs.rm("/kmtr_fixture.zarr", recursive=True)


def test_float16_storage_decodes_to_complex(tmp_path):
    a = KSpaceDataset(write_store(tmp_path / "c64.zarr", n=3, t=5, h=16, w=16), "train", "vista_r4")
    b = KSpaceDataset(write_store(tmp_path / "f16.zarr", n=3, t=5, h=16, w=16, storage="float16"), "train", "vista_r4")
    assert b.info.storage == "float16" and b.shape == a.shape == (9, 5, 16, 16)
    ka, kb = a[0]["kspace"], b[0]["kspace"]
    assert kb.dtype == torch.complex64
    assert float((ka - kb).abs().norm() / ka.abs().norm()) < 1e-3
