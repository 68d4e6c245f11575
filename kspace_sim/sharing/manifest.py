"""Croissant (MLCommons, JSON-LD) manifests for k-space stores.

A manifest ``data_manifests/<name>.json`` describes one published version of a store. Beside it:

* ``<name>.subjects.csv``: the subject table (row, subject_id, split, status, checksum, reason);
* ``<name>.SHA256SUMS``: ``sha256sum`` lines for every file of the store, paths relative to the store
  root (``cd STORE && sha256sum -c``).

The manifest's ``distribution`` lists the store (``contentUrl`` relative to the manifest, or a URL;
its ``sha256`` is the digest of the listing of its content: data files by their bytes, metadata
files by their content, :mod:`kspace_sim.sharing.content`) and both side files with their own
digests. Record sets: ``subjects`` (from the CSV), ``splits``, ``access`` (license, UK Biobank
application), ``provenance`` (simulator version and commit, every parameter, seed, input, library
versions, the synthetic-data flag) and ``store_content`` (each metadata file's content digest, each
array's shape and dtype), the last four inline. :func:`publish` refuses to overwrite a
version with different content.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata as _im
from pathlib import Path
from typing import Any

import numpy as np

from kspace_sim.store.remote import check_remote, filesystem, is_url
from kspace_sim.sharing.content import VOLATILE_DESCRIPTION, content_listing, store_content
from kspace_sim.sharing.splits import SPLIT_NAMES, SplitOptions, assign_splits
from kspace_sim.store.checksum import store_checksum_algorithm
from kspace_sim.store.layout import STATUS_DONE, open_store

__all__ = [
    "ManifestError",
    "VOLATILE_PROVENANCE",
    "PublishOptions",
    "ReadOptions",
    "SplitOptions",
    "STATUS_NAMES",
    "SPLIT_NAMES",
    "sidecar_paths",
    "store_file_hashes",
    "build_manifest",
    "store_provenance",
    "validate_manifest",
    "load_manifest",
    "manifest_store_url",
    "publish",
    "resplit_store",
]

STATUS_NAMES = {0: "pending", 1: "done", 2: "failed"}
ZARR_FORMAT = "application/vnd.zarr+v3"
VOLATILE_KEYS = ("dateCreated", "datePublished", "dateModified")  # the store's and the publication's dates
# provenance that says when, where and how long, not what: reported by verify, never failed
VOLATILE_PROVENANCE = ("git_commit", "store_created", "build_runs", "library_versions")
LIBRARIES = ("numpy", "scipy", "zarr", "numcodecs", "dask", "distributed", "fsspec", "nibabel", "pydicom", "mlcroissant")
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


UKB_LICENSE = "https://www.ukbiobank.ac.uk/enable-your-research/about-our-data/terms-of-access"
UKB_ACCESS_TERMS = (
    "Derived from UK Biobank data: available to approved researchers under a UK Biobank application "
    "and Material Transfer Agreement; no attempt may be made to re-identify participants."
)
SYNTHETIC_LICENSE = "https://www.apache.org/licenses/LICENSE-2.0"
SYNTHETIC_ACCESS_TERMS = "Synthetic phantom data (no participant data): no access restrictions."


class ManifestError(Exception):
    """A manifest that cannot be written, read or published as asked."""


@dataclass
class PublishOptions:
    """What a manifest says about the dataset besides the store's own contents."""

    name: str
    version: str = "1.0.0"
    description: str = ""
    license: str | None = None  # None: UKB_LICENSE for cohort stores, SYNTHETIC_LICENSE for demo stores
    access_terms: str | None = None  # None: UKB_ACCESS_TERMS or SYNTHETIC_ACCESS_TERMS likewise
    ukb_application: str | None = None
    creator: str = "kspace-mtr team"
    url: str = "https://www.ukbiobank.ac.uk/"
    store_url: str | None = None  # what the manifest records as the store location (default: relative path)


@dataclass(frozen=True)
class ReadOptions:
    """How the store's files are read to describe it (what the manifest says does not depend on it)."""

    storage_options: dict[str, Any] | None = None  # fsspec options of a URL store
    workers: int = 4  # threads hashing the store's files
    progress: bool = False  # a tqdm bar while hashing


def sidecar_paths(manifest_path: str | Path) -> tuple[Path, Path]:
    """``(<stem>.subjects.csv, <stem>.SHA256SUMS)`` beside the manifest."""
    p = Path(manifest_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.subjects.csv"), p.with_name(f"{stem}.SHA256SUMS")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_file_hashes(store: str, read: ReadOptions | None = None) -> dict[str, str]:
    """``{relative path: sha256 hex}`` of every file of the store (local or URL), hashed in
    ``read.workers`` threads."""
    read = read or ReadOptions()
    fs, root = filesystem(store, read.storage_options)
    root = root.rstrip("/")
    files = sorted(f for f in fs.find(root) if not f.rstrip("/").endswith("/"))
    bar = None
    if read.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="hashing store files", unit="file")

    def one(path: str) -> tuple[str, str]:
        h = hashlib.sha256()
        with fs.open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        if bar is not None:
            bar.update(1)
        return path[len(root) + 1 :], h.hexdigest()

    try:
        with ThreadPoolExecutor(max_workers=max(read.workers, 1)) as pool:
            return dict(pool.map(one, files))
    finally:
        if bar is not None:
            bar.close()


def format_sha256sums(hashes: dict[str, str]) -> str:
    """``sha256sum``-style text, sorted by path."""
    return "".join(f"{h}  {p}\n" for p, h in sorted(hashes.items()))


def parse_sha256sums(text: str) -> dict[str, str]:
    """Inverse of :func:`format_sha256sums`."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            h, p = line.split(None, 1)
            out[p.strip().lstrip("*")] = h
    return out


def subjects_csv(group: Any) -> str:
    """The subject table of an opened store as CSV text."""
    ids = [str(x) for x in group["subjects/id"][:]]
    status = np.asarray(group["subjects/status"][:])
    split = np.asarray(group["subjects/split"][:])
    checksum = np.asarray(group["subjects/checksum"][:], dtype=np.uint8)
    reason = [str(x) for x in group["subjects/reason"][:]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "subject_id", "split", "status", "checksum", "reason"])
    for i, sid in enumerate(ids):
        cs = bytes(checksum[i]).hex() if status[i] == STATUS_DONE else ""
        w.writerow([i, sid, SPLIT_NAMES.get(int(split[i]), str(split[i])), STATUS_NAMES.get(int(status[i]), str(status[i])), cs, reason[i]])
    return buf.getvalue()


def read_subjects_csv(text: str) -> list[dict[str, str]]:
    """Rows of a ``subjects.csv`` as dicts."""
    return list(csv.DictReader(io.StringIO(text)))


def _library_versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = _im.version(lib)
        except _im.PackageNotFoundError:
            continue
    return out


def _store_location(store: str, manifest_path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    if is_url(store):
        return store
    return Path(os.path.relpath(Path(store).resolve(), manifest_path.resolve().parent)).as_posix()


def _field(rs: str, name: str, dtype: str, desc: str, column: str | None = None) -> dict[str, Any]:
    f: dict[str, Any] = {"@type": "cr:Field", "@id": f"{rs}/{name}", "name": name, "description": desc, "dataType": dtype}
    if column:
        f["source"] = {"fileObject": {"@id": "subjects-csv"}, "extract": {"column": column}}
    return f


def _inline_set(rs: str, desc: str, rows: dict[str, Any]) -> dict[str, Any]:
    return {
        "@type": "cr:RecordSet",
        "@id": rs,
        "name": rs,
        "description": desc,
        "key": {"@id": f"{rs}/key"},
        "field": [_field(rs, "key", "sc:Text", "property name"), _field(rs, "value", "sc:Text", "value (JSON)")],
        "data": [{f"{rs}/key": k, f"{rs}/value": json.dumps(v, sort_keys=True)} for k, v in rows.items()],
    }


def store_provenance(attrs: dict[str, Any]) -> dict[str, Any]:
    """The provenance block of a store (its group attributes ``attrs``) as manifests record it: input,
    format, simulator version and commit, creation time, seed, every parameter, masks, library versions."""
    synthetic = (attrs.get("input") or {}).get("kind") == "demo"
    return {
        "synthetic": synthetic,
        "input": attrs.get("input", {}),
        "format": attrs.get("format"),
        "format_version": attrs.get("format_version"),
        "simulator_version": attrs.get("simulator_version"),
        "git_commit": attrs.get("git_commit"),
        "store_created": attrs.get("created"),
        "global_seed": attrs.get("global_seed"),
        "parameters": attrs.get("parameters", {}),
        "fft_convention": attrs.get("fft_convention"),
        "view_order": attrs.get("view_order"),
        "masks": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in (attrs.get("masks") or {}).items()},
        "pseudonymised": bool(attrs.get("pseudonymised", False)),
        "float16_image_nrmse": attrs.get("float16_image_nrmse"),
        "build_runs": len(attrs.get("builds") or []),
        "subject_seed_rule": attrs.get("subject_seed_rule"),
        "split": attrs.get("split"),
        "library_versions": _library_versions(),
    }


def build_manifest(
    store: str, manifest_path: str | Path, opts: PublishOptions, read: ReadOptions | None = None
) -> tuple[dict[str, Any], str, str]:
    """Describe ``store`` as a Croissant JSON-LD document (nothing is written).

    Returns:
        ``(manifest, subjects_csv_text, sha256sums_text)``.
    """
    read = read or ReadOptions()
    check_remote(store, read.storage_options)
    group = open_store(store, mode="r", storage_options=read.storage_options)
    attrs = group.attrs.asdict()
    csv_text = subjects_csv(group)
    hashes = store_file_hashes(store, read)
    sums = format_sha256sums(hashes)
    fs, root = filesystem(store, read.storage_options)
    content = store_content(fs, root.rstrip("/"), list(hashes))
    listing = content_listing(hashes, content["metadata_sha256"])
    mpath = Path(manifest_path)
    csv_path, sums_path = sidecar_paths(mpath)
    prov = store_provenance(attrs)
    synthetic = prov["synthetic"]
    license_ = opts.license or (SYNTHETIC_LICENSE if synthetic else UKB_LICENSE)
    terms = opts.access_terms or (SYNTHETIC_ACCESS_TERMS if synthetic else UKB_ACCESS_TERMS)
    status = np.asarray(group["subjects/status"][:])
    split = np.asarray(group["subjects/split"][:])
    done = status == STATUS_DONE
    counts = {name: int((done & (split == code)).sum()) for code, name in SPLIT_NAMES.items()}
    kshape = list(group["kspace"].shape)
    description = opts.description or (
        f"{'SYNTHETIC demo data (phantoms, no participant data). ' if synthetic else ''}"
        f"Fully sampled multi-view cine cardiac MRI k-space (kspace {kshape}, storage "
        f"{group['kspace'].attrs.get('storage', 'complex64')}) with undersampling masks "
        f"{sorted((attrs.get('masks') or {}).keys())}, simulated by kspace_sim {attrs.get('simulator_version')} "
        f"from {'a demo cohort' if synthetic else 'UK Biobank cine CMR'}; Zarr v3 store, format "
        f"{attrs.get('format')} v{attrs.get('format_version')}."
    )
    created = str(attrs.get("created") or "")[:10] or None
    today = _dt.date.today().isoformat()
    store_desc = (
        "Zarr v3 store (docs/store-format.md); sha256 = SHA-256 of the listing of its content: every data "
        "file's sha256 and every metadata file's content digest (store_content record set: its JSON without "
        f"the volatile {VOLATILE_DESCRIPTION})"
    )
    doc: dict[str, Any] = {
        "@context": _context(),
        "@type": "sc:Dataset",
        "name": opts.name,
        "description": description,
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "version": opts.version,
        "license": license_,
        "url": opts.url,
        "creator": {"@type": "sc:Organization", "name": opts.creator},
        "keywords": ["cardiac MRI", "k-space", "UK Biobank", "cine", "undersampling", *(["synthetic"] if synthetic else [])],
        "isLiveDataset": False,
        "citeAs": f"{opts.name} {opts.version}, k-space store simulated by kspace_sim {attrs.get('simulator_version')}",
        "dateCreated": created or today,
        "datePublished": today,
        "dateModified": today,
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": "store",
                "name": "store",
                "description": store_desc,
                "contentUrl": _store_location(store, mpath, opts.store_url),
                "encodingFormat": ZARR_FORMAT,
                "sha256": _sha256(listing.encode()),
            },
            {
                "@type": "cr:FileObject",
                "@id": "sha256sums",
                "name": "sha256sums",
                "description": f"sha256sum listing of the bytes of the {len(hashes)} files of the store (paths relative "
                "to its root); the metadata files' bytes also hold volatile values, compared by content instead",
                "contentUrl": sums_path.name,
                "encodingFormat": "text/plain",
                "sha256": _sha256(sums.encode()),
            },
            {
                "@type": "cr:FileObject",
                "@id": "subjects-csv",
                "name": "subjects-csv",
                "description": "the store's subject table (row i of every array belongs to subject_id)",
                "contentUrl": csv_path.name,
                "encodingFormat": "text/csv",
                "sha256": _sha256(csv_text.encode()),
            },
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "subjects",
                "name": "subjects",
                "description": "one record per store row",
                "key": {"@id": "subjects/row"},
                "field": [
                    _field("subjects", "row", "sc:Integer", "row index in every array of the store", "row"),
                    _field("subjects", "subject_id", "sc:Text", "subject id (a pseudonym when pseudonymised)", "subject_id"),
                    _field("subjects", "split", "sc:Text", "train, validation or test", "split"),
                    _field("subjects", "status", "sc:Text", "pending, done or failed (only done rows hold data)", "status"),
                    _field("subjects", "checksum", "sc:Text",
                           f"{store_checksum_algorithm(group)} (hex) of the kspace row bytes then the seg row bytes", "checksum"),
                    _field("subjects", "reason", "sc:Text", "failure reason", "reason"),
                ],
            },
            _inline_set("splits", "split sizes (done subjects) and how they were drawn", {**counts, "method": attrs.get("split")}),
            _inline_set(
                "access",
                "license and access terms",
                {
                    "license": license_,
                    "access_terms": terms,
                    "ukb_application": opts.ukb_application,
                    "pseudonymised": prov["pseudonymised"],
                },
            ),
            _inline_set("provenance", "how the store was made", prov),
            _inline_set(
                "store_content",
                "what verify compares besides the data files' bytes: each metadata file's content digest "
                f"(its JSON without the volatile {VOLATILE_DESCRIPTION}) and each array's shape and dtype",
                {**content, "volatile": VOLATILE_DESCRIPTION},
            ),
        ],
    }
    return doc, csv_text, sums


def _context() -> dict[str, Any]:
    import mlcroissant as mlc

    return mlc.Metadata(ctx=mlc.Context(), name="x").to_json()["@context"]


def validate_manifest(doc: dict[str, Any]) -> list[str]:
    """Errors that ``mlcroissant`` reports for ``doc`` (empty when valid)."""
    import mlcroissant as mlc

    try:
        ds = mlc.Dataset(jsonld=json.loads(json.dumps(doc)))
    except mlc.ValidationError as exc:
        return [str(exc)]
    return list(ds.metadata.issues.errors)


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest JSON-LD document.

    Raises:
        ManifestError: missing or not JSON.
    """
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ManifestError(f"no manifest at {path}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{path} is not JSON: {exc}") from None


def inline_values(doc: dict[str, Any], record_set: str) -> dict[str, Any]:
    """``{key: value}`` of an inline key/value record set (``provenance``, ``access``, ``splits``)."""
    for rs in doc.get("recordSet", []):
        if rs.get("@id") == record_set:
            return {row[f"{record_set}/key"]: json.loads(row[f"{record_set}/value"]) for row in rs.get("data", [])}
    return {}


def distribution(doc: dict[str, Any], file_id: str) -> dict[str, Any]:
    """The distribution entry ``file_id`` (``store``, ``sha256sums``, ``subjects-csv``)."""
    for d in doc.get("distribution", []):
        if d.get("@id") == file_id:
            return d
    raise ManifestError(f"manifest has no distribution entry {file_id!r}")


def manifest_store_url(doc: dict[str, Any], manifest_path: str | Path) -> str:
    """The store location a manifest names, relative paths resolved against the manifest's folder."""
    url = str(distribution(doc, "store")["contentUrl"])
    if is_url(url) or os.path.isabs(url):
        return url
    return str((Path(manifest_path).resolve().parent / url).resolve())


def _semver(v: str) -> tuple[int, int, int]:
    m = _SEMVER.match(v)
    if not m:
        raise ManifestError(f"version {v!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    return int(m[1]), int(m[2]), int(m[3])


def _content(doc: dict[str, Any]) -> dict[str, Any]:
    """The manifest without what changes between publications of the same content: dates, volatile
    provenance (:data:`VOLATILE_PROVENANCE`) and the byte digest of the SHA256SUMS listing (its
    metadata files' bytes hold the volatile values; the store's own sha256 is the content's)."""
    d = {k: v for k, v in doc.items() if k not in VOLATILE_KEYS}
    d["recordSet"] = [
        {**rs, "data": [r for r in rs.get("data", []) if str(r.get(f"{rs['@id']}/key")) not in VOLATILE_PROVENANCE]}
        if "data" in rs and rs.get("@id") == "provenance"
        else rs
        for rs in doc.get("recordSet", [])
    ]
    d["distribution"] = [
        {k: v for k, v in e.items() if k != "sha256"} if e.get("@id") == "sha256sums" else e for e in doc.get("distribution", [])
    ]
    return json.loads(json.dumps(d, sort_keys=True))


def content_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Which parts of two manifests differ (dates, volatile provenance and the byte digest of the
    SHA256SUMS listing ignored: see :func:`_content`)."""
    a, b = _content(old), _content(new)
    diffs = [k for k in sorted(set(a) | set(b)) if k not in ("distribution", "recordSet") and a.get(k) != b.get(k)]
    for key in ("distribution", "recordSet"):
        ea = {e.get("@id"): e for e in a.get(key, [])}
        eb = {e.get("@id"): e for e in b.get(key, [])}
        diffs += [f"{key}[{i}]" for i in sorted(set(ea) | set(eb), key=str) if ea.get(i) != eb.get(i)]
    return diffs


def resplit_store(store: str, opts: SplitOptions, storage_options: dict[str, Any] | None = None) -> dict[str, int]:
    """Rewrite ``subjects/split`` of ``store`` with :func:`~kspace_sim.sharing.splits.assign_splits`
    and re-consolidate.

    Returns:
        Subjects per split name.
    """
    from kspace_sim.store.remote import consolidate_any

    counts = assign_splits(open_store(store, mode="r+", storage_options=storage_options), opts)
    consolidate_any(store, storage_options)
    return counts


def publish(
    store: str, manifest_path: str | Path, opts: PublishOptions, read: ReadOptions | None = None
) -> tuple[dict[str, Any], str]:
    """Write (or update) the manifest of ``store`` (read as ``read`` says) and its two side files.

    An existing manifest with the same version must describe the same content (dates and library
    versions aside): then nothing changes. A different content needs a higher version.

    Returns:
        ``(manifest, outcome)`` with outcome ``'written'``, ``'unchanged'`` or ``'new version'``.

    Raises:
        ManifestError: invalid version, a same-version different-content overwrite, a lower version,
            or a document that mlcroissant rejects.
    """
    _semver(opts.version)
    mpath = Path(manifest_path)
    doc, csv_text, sums = build_manifest(store, mpath, opts, read)
    errors = validate_manifest(doc)
    if errors:
        raise ManifestError("mlcroissant rejects the manifest: " + "; ".join(errors))
    outcome = "written"
    if mpath.exists():
        old = load_manifest(mpath)
        old_version = str(old.get("version", "0.0.0"))
        diffs = content_differences(old, doc)
        if old_version == opts.version:
            if diffs:
                raise ManifestError(
                    f"{mpath} already publishes version {opts.version} with different content "
                    f"({', '.join(diffs)}); bump --version to publish a new version"
                )
            return old, "unchanged"
        if _semver(opts.version) < _semver(old_version):
            raise ManifestError(f"{mpath} publishes version {old_version}; {opts.version} is not newer")
        doc["dateCreated"] = old.get("dateCreated", doc["dateCreated"])
        outcome = "new version"
    csv_path, sums_path = sidecar_paths(mpath)
    mpath.parent.mkdir(parents=True, exist_ok=True)
    csv_path.write_text(csv_text)
    sums_path.write_text(sums)
    mpath.write_text(json.dumps(doc, indent=2) + "\n")
    return doc, outcome
