"""The store's layout (docs/store-format.md): creating, opening and checking a Zarr v3 group.

Stores live at a local path or any fsspec URL (``s3://``, ``gs://``, ``memory://``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from kspace_sim.store.checksum import CHECKSUM_ALGORITHMS, DEFAULT_CHECKSUM
from kspace_sim.views import VIEW_ORDER

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STATUS_PENDING",
    "STATUS_DONE",
    "STATUS_FAILED",
    "SPLIT_CODES",
    "STORAGES",
    "CHUNKINGS",
    "StoreError",
    "open_store",
    "create_store",
    "create_mask_array",
    "consolidate",
]

FORMAT_NAME = "kspace-mri-store"
FORMAT_VERSION = 1
STATUS_PENDING, STATUS_DONE, STATUS_FAILED = 0, 1, 2
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
COMPRESSIONS = ("none", "zstd")
STORAGES = ("complex64", "float16")
CHUNKINGS = ("subject", "sharded")


class StoreError(Exception):
    """A store that cannot be created, opened or resumed as asked."""


def _silence() -> None:
    warnings.filterwarnings("ignore", message=".*Consolidated metadata.*")
    warnings.filterwarnings("ignore", message=".*not part of the Zarr format 3.*")
    warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")


_silence()


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
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{url} has format version {attrs.get('format_version')}, this simulator writes {FORMAT_VERSION}"
        )
    return group


def _kspace_compressors(compression: str) -> Any:
    if compression == "none":
        return None
    if compression == "zstd":
        return ZstdCodec(level=1)
    raise ValueError(f"unknown compression {compression!r}; choose from {COMPRESSIONS}")


def create_mask_array(group: zarr.Group, name: str, n: int, s: int, t: int, w: int, overwrite: bool = False) -> zarr.Array:
    """``masks/<name>`` (N, S, T, W) bool, one chunk per subject."""
    return group.create_array(
        f"masks/{name}", shape=(n, s, t, w), chunks=(1, s, t, w), dtype=bool, fill_value=False, overwrite=overwrite
    )


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
) -> zarr.Group:
    """Create an empty store for ``subject_ids`` (rows in the given order), every subject pending.

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
    """
    if chunking not in CHUNKINGS:
        raise ValueError(f"unknown chunking {chunking!r}; choose from {CHUNKINGS}")
    if storage not in STORAGES:
        raise ValueError(f"unknown storage {storage!r}; choose from {STORAGES}")
    n, s, t, h, w = len(subject_ids), len(VIEW_ORDER), frames, size, size
    kwargs: dict[str, Any] = {"storage_options": storage_options} if storage_options and "://" in url else {}
    group = zarr.open_group(url, mode="w-", **kwargs)
    pair = (2,) if storage == "float16" else ()
    row = (1, s, t, h, w)
    layout: dict[str, Any] = {"chunks": row} if chunking == "subject" else {"chunks": (1, 1, t, h, w), "shards": row}
    group.create_array(
        "kspace",
        shape=(n, s, t, h, w, *pair),
        chunks=layout["chunks"] + pair,
        shards=layout["shards"] + pair if "shards" in layout else None,
        dtype="complex64" if storage == "complex64" else "float16",
        fill_value=0j if storage == "complex64" else 0.0,
        compressors=_kspace_compressors(compression),
    )
    group["kspace"].attrs["storage"] = storage
    if with_seg:
        group.create_array("seg", shape=(n, s, t, h, w), dtype="uint8", fill_value=0, **layout)
    for name in mask_names:
        create_mask_array(group, name, n, s, t, w)
    ids = group.create_array("subjects/id", shape=(n,), chunks=(max(n, 1),), dtype=str)
    ids[:] = np.asarray(subject_ids, dtype=object).astype(str)
    small = {
        "status": ((n,), "int8", 0),
        "checksum": ((n, CHECKSUM_ALGORITHMS[DEFAULT_CHECKSUM]), "uint8", 0),
        "split": ((n,), "int8", 0),
        "seg_present": ((n, s), "bool", False),
        "pixel_spacing": ((n, s, 2), "float32", float("nan")),
        "crop_box": ((n, s, 4), "int32", 0),
        "sax_slices": ((n, 6), "int16", -1),
        "intensity_range": ((n, s, 2), "float32", float("nan")),
        "dt": ((n,), "float32", float("nan")),
        "source_frames": ((n,), "int16", 0),
        "kspace_scale": ((n,), "float32", 1.0),
    }
    for key, (shape, dtype, fill) in small.items():
        group.create_array(f"subjects/{key}", shape=shape, chunks=tuple(max(d, 1) for d in shape), dtype=dtype, fill_value=fill)
    reason = group.create_array("subjects/reason", shape=(n,), chunks=(max(n, 1),), dtype=str)
    reason[:] = np.full(n, "", dtype=object).astype(str)
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
    group["subjects/status"].attrs["codes"] = {"pending": 0, "done": 1, "failed": 2}
    group.attrs.update(
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
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
