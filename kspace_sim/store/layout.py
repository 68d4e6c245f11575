"""The store's layout (docs/store-format.md): creating, opening and checking a Zarr v3 group.

Stores live at a local path or any fsspec URL (``s3://``, ``gs://``, ``memory://``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from kspace_sim.store.checksum import CHECKSUM_ALGORITHMS, DEFAULT_CHECKSUM
from kspace_sim.store.errors import StoreError
from kspace_sim.store.schema import (
    ARRAYS,
    FORMAT_NAME,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    SPLIT_CODES,
    STATUS_CODES,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_PENDING,
    array_spec,
    arrays_of_version,
    chunk_shape,
    format_version_for,
    resolve_shape,
)
from kspace_sim.views import VIEW_ORDER

__all__ = [
    "CHUNKINGS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "SPLIT_CODES",
    "STATUS_DONE",
    "STATUS_FAILED",
    "STATUS_PENDING",
    "STORAGES",
    "StoreError",
    "consolidate",
    "create_mask_array",
    "create_schema_array",
    "layout_problems",
    "create_store",
    "open_store",
]

COMPRESSIONS = ("none", "zstd")
STORAGES = ("complex64", "float16")
CHUNKINGS = ("subject", "sharded")


def open_store(url: str, mode: str = "r", storage_options: dict[str, Any] | None = None) -> zarr.Group:
    """Open a store's root group and check its format.

    Args:
        url: local path or fsspec URL.
        mode: ``'r'`` (read-only, consolidated metadata when present) or ``'r+'``.

    Raises:
        StoreError: not a store of this format, or a different format version.
    """
    if "://" in url:
        from kspace_sim.store.remote import check_remote

        check_remote(url, storage_options)
    kwargs: dict[str, Any] = {"storage_options": storage_options} if storage_options and "://" in url else {}
    if mode != "r":  # writers must see arrays added after the last consolidation
        kwargs["use_consolidated"] = False
    try:
        group = zarr.open_group(url, mode=mode, zarr_format=3, **kwargs)
    except FileNotFoundError as exc:
        raise StoreError(f"no store at {url}") from exc
    attrs = group.attrs.asdict()
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{url} is not a {FORMAT_NAME} (attrs.format={attrs.get('format')!r})")
    if attrs.get("format_version") not in FORMAT_VERSIONS:
        raise StoreError(
            f"{url} has format version {attrs.get('format_version')}, this simulator reads versions "
            f"{', '.join(map(str, FORMAT_VERSIONS))}"
        )
    return group


def _kspace_compressors(compression: str) -> Any:
    if compression == "none":
        return None
    if compression == "zstd":
        return ZstdCodec(level=1)
    raise ValueError(f"unknown compression {compression!r}; choose from {COMPRESSIONS}")


def create_schema_array(
    group: zarr.Group,
    path: str,
    dims: dict[str, int],
    *,
    storage: str = "complex64",
    overwrite: bool = False,
    **layout: Any,
) -> zarr.Array:
    """Create the array ``path`` as :mod:`kspace_sim.store.schema` declares it (shape from ``dims``,
    dtype, fill value, one chunk per subject or per array); ``layout`` overrides chunks/shards/compressors."""
    spec = array_spec(path, storage)
    shape = resolve_shape(spec, dims)
    kwargs: dict[str, Any] = {"chunks": chunk_shape(spec, shape), **layout}
    if spec.dtype == "string":
        return group.create_array(path, shape=shape, dtype=str, overwrite=overwrite, **kwargs)
    return group.create_array(path, shape=shape, dtype=spec.dtype, fill_value=spec.fill, overwrite=overwrite, **kwargs)


def layout_problems(group: zarr.Group, *, frames: int, size: int, storage: str, mask_names: list[str]) -> list[str]:
    """What in an existing store differs from the schema for these build parameters: a required
    array (or a named mask) missing, or one with another shape or dtype. One line each; [] = none.

    ``subjects/checksum`` may hold any known digest length (stores keep the algorithm they began with).
    """
    n = group["subjects/id"].shape[0] if "subjects/id" in group else 0
    dims = {"N": n, "S": len(VIEW_ORDER), "T": frames, "H": size, "W": size}
    if "subjects/checksum" in group and group["subjects/checksum"].shape[-1] in CHECKSUM_ALGORITHMS.values():
        dims["C"] = group["subjects/checksum"].shape[-1]
    else:
        dims["C"] = CHECKSUM_ALGORITHMS[DEFAULT_CHECKSUM]
    paths = ["kspace", *(["seg"] if "seg" in group else [])]
    version = group.attrs.get("format_version", FORMAT_VERSION)
    paths += list(dict.fromkeys(a.path for a in arrays_of_version(version if version in FORMAT_VERSIONS else FORMAT_VERSION)
                                if a.required and a.path != "kspace"))
    dims["K"] = int((group.attrs.get("coils") or {}).get("n_coils", 0))
    paths += [f"masks/{m}" for m in mask_names]
    out = []
    for path in paths:
        if path not in group:
            out.append(f"{path}: missing")
            continue
        spec, arr = array_spec(path, storage), group[path]
        want = resolve_shape(spec, dims)
        if spec.dtype == "string":
            dtype_ok = np.dtype(arr.dtype).kind in "UTO"
        else:
            dtype_ok = np.dtype(arr.dtype) == np.dtype(spec.dtype)
        if tuple(arr.shape) != want or not dtype_ok:
            out.append(f"{path}: {tuple(arr.shape)} {arr.dtype}, expected {want} {spec.dtype}")
    return out


def create_mask_array(group: zarr.Group, name: str, n: int, s: int, t: int, w: int, overwrite: bool = False) -> zarr.Array:
    """``masks/<name>`` (N, S, T, W) bool, one chunk per subject."""
    return create_schema_array(group, f"masks/{name}", {"N": n, "S": s, "T": t, "W": w}, overwrite=overwrite)


def create_store(
    url: str,
    subject_ids: list[str],
    *,
    frames: int,
    size: int,
    mask_names: list[str],
    attrs: dict[str, Any],
    compression: str = "none",
    storage: str = "complex64",
    chunking: str = "subject",
    with_seg: bool = True,
    storage_options: dict[str, Any] | None = None,
    n_coils: int | None = None,
) -> zarr.Group:
    """Create an empty store for ``subject_ids`` (rows in the given order), every subject pending,
    with the arrays and attributes of :mod:`kspace_sim.store.schema`.

    Args:
        url: local path or fsspec URL (must not exist).
        subject_ids: the N ids.
        frames, size: T and H = W.
        mask_names: ``masks/*`` arrays to create.
        attrs: group attributes (format keys are added here).
        compression: ``'none'`` or ``'zstd'`` for ``kspace`` (``seg`` and masks always zstd).
        storage: ``'complex64'``, or ``'float16'``: ``kspace`` (N, S, T, H, W, 2) float16
            (real, imaginary) divided by the per-subject ``subjects/kspace_scale``.
        chunking: ``'subject'`` (one chunk, one object, per subject and array: fastest to write
            and one request per subject remotely) or ``'sharded'`` (a chunk per view inside one shard
            per subject: single views readable alone, at ~3× the write cost in zarr 3.1).
        n_coils: K, for a store with coils (format version 2: the ``coils/*`` arrays, maps stored
            like ``kspace``, complex64 or float16 pairs); None = a single-coil store (version 1).
    """
    if chunking not in CHUNKINGS:
        raise ValueError(f"unknown chunking {chunking!r}; choose from {CHUNKINGS}")
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; choose from {STORAGES}")
    n, s, t, h, w = len(subject_ids), len(VIEW_ORDER), frames, size, size
    dims = {"N": n, "S": s, "T": t, "H": h, "W": w, "C": CHECKSUM_ALGORITHMS[DEFAULT_CHECKSUM]}
    kwargs: dict[str, Any] = {"storage_options": storage_options} if storage_options and "://" in url else {}
    group = zarr.open_group(url, mode="w-", **kwargs)
    pair = (2,) if storage == "float16" else ()
    row = (1, s, t, h, w)
    layout: dict[str, Any] = {"chunks": row} if chunking == "subject" else {"chunks": (1, 1, t, h, w), "shards": row}
    create_schema_array(
        group,
        "kspace",
        dims,
        storage=storage,
        chunks=layout["chunks"] + pair,
        shards=layout["shards"] + pair if "shards" in layout else None,
        compressors=_kspace_compressors(compression),
    )
    group["kspace"].attrs["storage"] = storage
    if with_seg:
        create_schema_array(group, "seg", dims, **layout)
    for name in mask_names:
        create_mask_array(group, name, n, s, t, w)
    for spec in ARRAYS:
        if spec.path.startswith("subjects/"):
            create_schema_array(group, spec.path, dims)
    if n_coils is not None:
        dims["K"] = int(n_coils)
        for path in dict.fromkeys(a.path for a in ARRAYS if a.path.startswith("coils/")):
            if path == "coils/maps":
                create_schema_array(group, path, dims, storage=storage, chunks=(1, n_coils, s, h, w) + pair,
                                    compressors=_kspace_compressors(compression))
                group[path].attrs["storage"] = storage
            else:
                create_schema_array(group, path, dims)
    group["subjects/id"][:] = np.asarray(subject_ids, dtype=object).astype(str)
    group["subjects/reason"][:] = np.full(n, "", dtype=object).astype(str)
    group["subjects/dt"].attrs.update(
        {
            "units": "s",
            "view": "sa",
            "description": "frame interval of the short-axis cine (its TriggerTime spacing, pixdim[4] of sa.nii.gz); "
            "the long-axis cines have their own",
        }
    )
    group["subjects/checksum"].attrs["algorithm"] = DEFAULT_CHECKSUM
    group["subjects/split"].attrs["codes"] = SPLIT_CODES
    group["subjects/status"].attrs["codes"] = STATUS_CODES
    group.attrs.update(
        {
            "format": FORMAT_NAME,
            "format_version": format_version_for(n_coils is not None),
            "view_order": list(VIEW_ORDER),
            "views": {"sax": list(range(6)), "lax": [6, 7, 8]},
            **attrs,
        }
    )
    return group


def consolidate(url: str, storage_options: dict[str, Any] | None = None) -> None:
    """Consolidate the metadata of every array into the root ``zarr.json`` (one read to open)."""
    from kspace_sim.store.remote import consolidate_any

    consolidate_any(url, storage_options)
