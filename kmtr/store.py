"""The trainer's only door into a store (docs/store-format.md, format version 1).

Opens a store from a local path, an fsspec URL (``s3://``, ``gs://``, ``memory://`` …) or a
Croissant JSON-LD manifest, checks its format, and summarises its shape, masks and subject
table. Nothing here imports the simulator.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLIT_CODES",
    "STATUS_DONE",
    "StoreError",
    "StoreInfo",
    "check_layout",
    "open_store",
    "read_store_info",
    "resolve_store_url",
    "store_format_schema",
]

FORMAT_NAME = "kspace-mri-store"
FORMAT_VERSION = 1
STATUS_DONE = 1
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}

class StoreError(Exception):
    """The store cannot be used as asked (missing, wrong format/version, missing mask, empty split)."""


def _resolve_relative(url: str, base: str) -> str:
    if "://" in url or url.startswith("/"):
        return url
    return str((Path(base).parent / url).resolve())


def resolve_store_url(location: str | Path) -> str:
    """Turn a path, fsspec URL or Croissant manifest into the store's URL.

    A manifest is a ``.json``/``.jsonld`` file; its ``distribution`` entries are searched for a
    ``contentUrl`` that names the Zarr store (an entry with ``encodingFormat`` mentioning zarr, or
    else the first ``contentUrl``). Relative ``contentUrl`` values resolve against the manifest.

    Raises:
        StoreError: a manifest without any ``contentUrl``.
    """
    loc = str(location)
    if not (loc.endswith(".json") or loc.endswith(".jsonld")):
        return loc
    import fsspec

    try:
        with fsspec.open(loc, "r") as fh:
            doc = json.load(fh)
    except FileNotFoundError as exc:
        raise StoreError(f"no manifest at {loc}") from exc
    dist = doc.get("distribution", [])
    if isinstance(dist, dict):
        dist = [dist]
    urls = [
        (d.get("encodingFormat", ""), d.get("contentUrl"))
        for d in dist
        if isinstance(d, dict) and d.get("contentUrl")
    ]
    if not urls:
        raise StoreError(f"manifest {loc} has no distribution[].contentUrl naming a store")
    zarr_urls = [u for fmt, u in urls if "zarr" in str(fmt).lower() or str(u).rstrip("/").endswith(".zarr")]
    url = (zarr_urls or [urls[0][1]])[0]
    return _resolve_relative(str(url), loc) if "://" not in loc else str(url)


def open_store(location: str | Path, storage_options: dict[str, Any] | None = None) -> zarr.Group:
    """Open a store read-only and check ``format`` and ``format_version``.

    Args:
        location: local path, fsspec URL or Croissant manifest.
        storage_options: passed to fsspec for URLs.

    Raises:
        StoreError: nothing there, not a kspace-mri-store, or a format version other than 1.
    """
    url = resolve_store_url(location)
    kwargs: dict[str, Any] = {"storage_options": storage_options} if storage_options and "://" in url else {}
    try:
        group = zarr.open_group(url, mode="r", zarr_format=3, **kwargs)
    except (FileNotFoundError, KeyError) as exc:
        raise StoreError(f"no store at {url}") from exc
    attrs = group.attrs.asdict()
    if attrs.get("format") != FORMAT_NAME:
        raise StoreError(f"{url} is not a {FORMAT_NAME} store (attrs.format = {attrs.get('format')!r})")
    if attrs.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{url} has format_version {attrs.get('format_version')!r}; this kmtr reads version {FORMAT_VERSION} only"
        )
    return group


@dataclass(frozen=True)
class StoreInfo:
    """What the trainer needs to know about a store, read once from its metadata and subject table.

    Attributes:
        url: resolved store URL.
        n, s, t, h, w: array sizes of ``kspace`` (N, S, T, H, W).
        storage: ``'complex64'`` or ``'float16'`` ((N, S, T, H, W, 2) real/imag pairs of
            ``k / subjects/kspace_scale[i]``).
        masks: names of the ``masks/*`` arrays.
        view_ids: (S,) 0 = SAX, 1 = LAX, from the ``views`` attribute.
        status: (N,) int8 subject status; split: (N,) int8 split code.
        has_seg, has_phenotypes, has_diseases: which optional arrays exist.
        fft_convention: the store's ``fft_convention`` attribute (informational).
        phenotype_columns, phenotype_units, disease_columns: column names (and units) of
            ``labels/phenotypes`` (N, P) and ``labels/diseases`` (N, D), empty when absent.
        label_map: segmentation label values → names (the ``label_map`` attribute).
        view_names: (S,) view names (``view_order``).
    """

    url: str
    n: int
    s: int
    t: int
    h: int
    w: int
    masks: tuple[str, ...]
    view_ids: tuple[int, ...]
    status: np.ndarray = field(repr=False)
    split: np.ndarray = field(repr=False)
    has_seg: bool = False
    has_phenotypes: bool = False
    has_diseases: bool = False
    fft_convention: str = ""
    storage: str = "complex64"
    phenotype_columns: tuple[str, ...] = ()
    phenotype_units: tuple[str, ...] = ()
    disease_columns: tuple[str, ...] = ()
    label_map: dict[str, str] = field(default_factory=dict)
    view_names: tuple[str, ...] = ()

    def rows(self, split: str | None) -> np.ndarray:
        """Row indices of done subjects in ``split`` ('train', 'validation', 'test' or None = all).

        Raises:
            StoreError: unknown split name, or no done subject in it.
        """
        done = self.status == STATUS_DONE
        if split is None or split == "all":
            sel = done
        else:
            if split not in SPLIT_CODES:
                raise StoreError(f"unknown split {split!r}; choose from {sorted(SPLIT_CODES)} or 'all'")
            sel = done & (self.split == SPLIT_CODES[split])
        rows = np.flatnonzero(sel)
        if rows.size == 0:
            raise StoreError(
                f"split {split!r} of {self.url} has no subject with status done "
                f"({int(done.sum())} done of {self.n} in the whole store)"
            )
        return rows

    def check_mask(self, name: str) -> None:
        """Raises StoreError when ``masks/<name>`` is not in the store."""
        if name not in self.masks:
            raise StoreError(f"mask {name!r} not in {self.url}; available: {', '.join(self.masks) or '(none)'}")


def _view_ids(attrs: dict[str, Any], s: int) -> tuple[int, ...]:
    views = attrs.get("views") or {}
    lax = set(int(i) for i in views.get("lax", []))
    if not views:  # fall back on view_order names
        order = attrs.get("view_order") or []
        lax = {i for i, name in enumerate(order) if str(name).startswith("la")}
    return tuple(1 if i in lax else 0 for i in range(s))


def store_format_schema(version: int = FORMAT_VERSION) -> dict[str, Any]:
    """The arrays of store format ``version`` as the simulator declares them: ``store_format_v<version>.json``
    beside this module, exported from ``kspace_sim.store.schema`` (a test keeps the two equal; the trainer
    reads the JSON and never imports the simulator)."""
    path = Path(__file__).with_name(f"store_format_v{version}.json")
    return json.loads(path.read_text())


def _dtype_matches(actual: Any, expected: str) -> bool:
    if expected == "string":
        return np.dtype(actual).kind in "UTO"
    return np.dtype(actual) == np.dtype(expected)


def check_layout(group: zarr.Group, url: str = "") -> None:
    """Check every array the format declares (``kspace`` aside: :func:`read_store_info` checks it with
    its storage): required ones present, and each present one with the declared dtype and number of axes.

    Raises:
        StoreError: one line naming the first array that is missing or has another dtype or rank.
    """
    for spec in store_format_schema()["arrays"]:
        path = spec["path"]
        if path == "kspace":
            continue
        if path.startswith("masks/"):
            found = [f"masks/{name}" for name, _ in group["masks"].arrays()] if "masks" in group else []
        else:
            found = [path] if path in group else []
            if not found and spec["required"]:
                raise StoreError(f"{url}: required array {path!r} is missing (docs/store-format.md)")
        for name in found:
            arr = group[name]
            if arr.ndim != len(spec["shape"]) or not _dtype_matches(arr.dtype, spec["dtype"]):
                raise StoreError(
                    f"{url}: {name!r} should be {len(spec['shape'])}-d {spec['dtype']}, found {arr.shape} {arr.dtype}"
                )


def read_store_info(group: zarr.Group, url: str = "") -> StoreInfo:
    """Summarise an opened store (reads only metadata and the small ``subjects/*`` arrays)."""
    if "kspace" not in group:
        raise StoreError(f"{url or group} has no 'kspace' array")
    karr = group["kspace"]
    storage = str(karr.attrs.get("storage", "float16" if karr.ndim == 6 else "complex64"))
    if storage == "complex64" and (karr.ndim != 5 or not np.issubdtype(karr.dtype, np.complexfloating)):
        raise StoreError(f"{url}: 'kspace' should be (N, S, T, H, W) complex64, found {karr.shape} {karr.dtype}")
    if storage == "float16":
        if karr.ndim != 6 or karr.shape[-1] != 2:
            raise StoreError(f"{url}: float16 'kspace' should be (N, S, T, H, W, 2), found {karr.shape}")
        if "subjects/kspace_scale" not in group:
            raise StoreError(f"{url}: float16 k-space storage without 'subjects/kspace_scale'")
    elif storage != "complex64":
        raise StoreError(f"{url}: unknown k-space storage {storage!r} (complex64 or float16)")
    check_layout(group, url)
    n, s, t, h, w = karr.shape[:5]
    attrs = group.attrs.asdict()
    masks: tuple[str, ...] = ()
    if "masks" in group:
        masks = tuple(sorted(name for name, _ in group["masks"].arrays()))
    status = np.asarray(group["subjects/status"][:], dtype=np.int8)
    split = np.asarray(group["subjects/split"][:], dtype=np.int8)
    has_labels = "labels" in group
    has_ph = has_labels and "phenotypes" in group["labels"]
    has_dis = has_labels and "diseases" in group["labels"]
    ph_attrs = group["labels/phenotypes"].attrs.asdict() if has_ph else {}
    dis_attrs = group["labels/diseases"].attrs.asdict() if has_dis else {}
    return StoreInfo(
        url=url,
        n=int(n), s=int(s), t=int(t), h=int(h), w=int(w),
        masks=masks,
        view_ids=_view_ids(attrs, int(s)),
        status=status,
        split=split,
        has_seg="seg" in group,
        has_phenotypes=has_ph,
        has_diseases=has_dis,
        fft_convention=str(attrs.get("fft_convention", "")),
        storage=storage,
        phenotype_columns=tuple(str(c) for c in ph_attrs.get("columns", [])),
        phenotype_units=tuple(str(c) for c in ph_attrs.get("units", [])),
        disease_columns=tuple(str(c) for c in dis_attrs.get("columns", [])),
        label_map={str(k): str(v) for k, v in (attrs.get("label_map") or {}).items()},
        view_names=tuple(str(v) for v in attrs.get("view_order", [f"slice{i}" for i in range(int(s))])),
    )
