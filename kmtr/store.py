"""The trainer's only door into a store (docs/store-format.md, format versions 1 and 2).

Opens a store from a local path, an fsspec URL (``s3://``, ``gs://``, ``memory://`` …) or a
Croissant JSON-LD manifest, checks its format, and summarises its shape, masks and subject
table. Version 1 is the single-coil store; version 2 adds what defines a multi-coil acquisition
(``coils/*`` arrays and the ``coils`` group attribute, docs/multicoil.md), read here into
:class:`CoilInfo` and :func:`read_coil_maps`. Nothing here imports the simulator.
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
    "FORMAT_VERSIONS",
    "SPLIT_CODES",
    "STATUS_DONE",
    "STORED_NOISE_RULE_VERSION",
    "CoilInfo",
    "StoreError",
    "StoreInfo",
    "check_layout",
    "open_store",
    "read_coil_maps",
    "read_store_info",
    "resolve_store_url",
    "store_coils",
    "store_format_schema",
]

FORMAT_NAME = "kspace-mri-store"
FORMAT_VERSION = 2  # the newest version read (stores with coils)
FORMAT_VERSIONS = (1, 2)  # 1: single-coil store, 2: + coils/* (docs/multicoil.md)
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
        StoreError: nothing there, not a kspace-mri-store, or a format version other than 1 or 2.
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
    if attrs.get("format_version") not in FORMAT_VERSIONS:
        raise StoreError(
            f"{url} has format_version {attrs.get('format_version')!r}; this kmtr reads versions "
            f"{', '.join(map(str, FORMAT_VERSIONS))}"
        )
    return group


#: The stored-noise rule this trainer reads (a store's ``coils.noise_rule_version``; docs/store-format.md):
#: one numpy sub-stream per view and frame (:func:`kmtr.coils.stored_white_noise`). A store with noise
#: and another version (1, absent: one stream per subject, never released) is refused.
STORED_NOISE_RULE_VERSION = 2


@dataclass(frozen=True)
class CoilInfo:
    """The receive chain of a multi-coil store (format version 2; docs/multicoil.md).

    Attributes:
        n_coils: C, number of receive coils.
        model: coil-sensitivity model (``'birdcage'`` or ``'random_field'``).
        snr_db: the requested SNR in dB, or None (noise-free store).
        noise_cov: (C, C) complex128 noise covariance in units of sigma² (the identity for
            independent coils).
        noise_rule: how the stored (evaluation) noise is drawn (the ``coils.noise_rule`` attribute).
        noise_seed: (N,) uint64 seed of each subject's stored noise draw (``coils/noise_seed``).
        noise_sigma: (N, S) float32 noise standard deviation of one coil's complex image per
            subject and view, k-space units (``coils/noise_sigma``; 0 = noise-free).
        maps_storage: ``'complex64'`` or ``'float16'`` ((N, C, S, H, W, 2) real/imag pairs).
        attrs: the whole ``coils`` group attribute.
    """

    n_coils: int
    model: str
    snr_db: float | None
    noise_cov: np.ndarray = field(repr=False)
    noise_rule: str = ""
    noise_seed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64), repr=False)
    noise_sigma: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32), repr=False)
    maps_storage: str = "complex64"
    attrs: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def independent(self) -> bool:
        """True when the noise covariance is the identity (independent coils of equal noise)."""
        return bool(np.array_equal(self.noise_cov, np.eye(self.n_coils)))

    def summary(self) -> str:
        """One line, e.g. ``8 coils (birdcage), SNR 20 dB, independent noise``."""
        snr = "noise-free" if self.snr_db is None else f"SNR {self.snr_db:g} dB"
        corr = self.attrs.get("noise_correlation") or {}
        noise = "independent noise" if self.independent else (
            f"correlated noise ({corr.get('kind', 'user')}, rho {corr.get('rho', '?')})")
        return f"{self.n_coils} coils ({self.model}), {snr}, {noise}"


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
        format_version: 1 (single-coil) or 2 (with coils).
        coils: the receive chain of a multi-coil store (None: single-coil).
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
    format_version: int = 1
    coils: CoilInfo | None = None

    @property
    def n_coils(self) -> int:
        """C, the number of receive coils (1 for a single-coil store)."""
        return self.coils.n_coils if self.coils is not None else 1

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


def check_layout(group: zarr.Group, url: str = "", version: int = 1) -> None:
    """Check every array format ``version`` declares (``kspace`` and ``coils/maps`` aside: their
    dtype depends on the storage, checked by :func:`read_store_info`): required ones present, and
    each present one with the declared dtype and number of axes.

    Raises:
        StoreError: one line naming the first array that is missing or has another dtype or rank.
    """
    for spec in store_format_schema(version)["arrays"]:
        path = spec["path"]
        if path == "kspace":
            continue
        if path == "coils/maps":
            if path not in group:
                raise StoreError(f"{url}: required array {path!r} is missing (docs/store-format.md)")
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
    attrs = group.attrs.asdict()
    version = int(attrs.get("format_version", 1))
    check_layout(group, url, version)
    n, s, t, h, w = karr.shape[:5]
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
        format_version=version,
        coils=_read_coil_info(group, attrs, url, (int(n), int(s), int(h), int(w))) if version >= 2 else None,
    )


def _read_coil_info(group: zarr.Group, attrs: dict[str, Any], url: str, nshw: tuple[int, int, int, int]) -> CoilInfo:
    """The ``coils`` attribute and the small ``coils/*`` arrays of a version-2 store, checked."""
    n, s, h, w = nshw
    meta = attrs.get("coils")
    if not isinstance(meta, dict) or "n_coils" not in meta:
        raise StoreError(f"{url}: format version 2 without a 'coils' group attribute naming n_coils")
    c = int(meta["n_coils"])
    maps = group["coils/maps"]
    maps_storage = str(maps.attrs.get("storage", "float16" if maps.ndim == 6 else "complex64"))
    want = (n, c, s, h, w) + ((2,) if maps_storage == "float16" else ())
    ok_dtype = (np.dtype(maps.dtype) == np.float16) if maps_storage == "float16" else \
        np.issubdtype(maps.dtype, np.complexfloating)
    if tuple(maps.shape) != want or not ok_dtype:
        raise StoreError(f"{url}: 'coils/maps' should be {want} {maps_storage}, found {maps.shape} {maps.dtype}")
    cov = meta.get("noise_cov")
    if cov is None:
        noise_cov = np.eye(c, dtype=np.complex128)
    else:
        noise_cov = np.asarray(cov["real"], np.float64) + 1j * np.asarray(cov["imag"], np.float64)
        if noise_cov.shape != (c, c):
            raise StoreError(f"{url}: coils.noise_cov is {noise_cov.shape} for {c} coils")
    sigma = np.asarray(group["coils/noise_sigma"][:], dtype=np.float32)
    seeds = np.asarray(group["coils/noise_seed"][:], dtype=np.uint64)
    if sigma.shape != (n, s) or seeds.shape != (n,):
        raise StoreError(f"{url}: coils/noise_sigma {sigma.shape} / coils/noise_seed {seeds.shape} "
                         f"do not match (N, S) = ({n}, {s})")
    rule = int(meta.get("noise_rule_version", 1))
    if rule != STORED_NOISE_RULE_VERSION and bool(np.any(sigma > 0)):
        raise StoreError(
            f"{url}: its stored noise follows noise rule version {rule} (an unreleased format-2 draw of one "
            f"stream per subject); this kmtr reads version {STORED_NOISE_RULE_VERSION}: rebuild the store"
        )
    snr = meta.get("snr_db")
    return CoilInfo(
        n_coils=c, model=str(meta.get("model", "")), snr_db=None if snr is None else float(snr),
        noise_cov=noise_cov, noise_rule=str(meta.get("noise_rule", "")), noise_seed=seeds, noise_sigma=sigma,
        maps_storage=maps_storage, attrs=dict(meta),
    )


def store_coils(location: str | Path, storage_options: dict[str, Any] | None = None) -> int | None:
    """C of the store at ``location`` when it has coils (format version 2), None for a single-coil store
    (reads the group attributes only)."""
    group = open_store(location, storage_options)
    meta = group.attrs.get("coils") if group.attrs.get("format_version") == 2 else None
    return int(meta["n_coils"]) if isinstance(meta, dict) and "n_coils" in meta else None


def read_coil_maps(group: zarr.Group, row: int, storage: str = "complex64") -> np.ndarray:
    """Coil maps of store row ``row`` → (C, S, H, W) complex64 (float16 pairs decoded ``re + 1j·im``)."""
    maps = np.asarray(group["coils/maps"][row])
    if storage == "float16":
        maps = maps.astype(np.float32).view(np.complex64)[..., 0]
    return np.ascontiguousarray(maps, dtype=np.complex64)
