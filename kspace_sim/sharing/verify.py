"""Verify a store, alone or against its Croissant manifest.

Store checks: format and version, array shapes and dtypes against the recorded parameters, every
subject marked done readable, and its SHA-256 (``kspace`` row bytes then ``seg`` row bytes)
recomputed and compared with ``subjects/checksum`` — in threads, with a progress bar.

Against a manifest, also: the side files' own digests, the provenance (parameters, seed, format
and simulator versions, input), the subject table (missing, extra, status, split, checksum), every
data file's SHA-256 from ``SHA256SUMS`` (k-space, segmentations, masks, labels, subject table: a
changed byte is named by subject and array), every array's shape and dtype and every metadata
file's content (:mod:`kspace_sim.sharing.content`). What only says when, where and how long
(creation time, build log, durations, git commit, library versions) is reported in
``VerifyReport.notes``, never failed: a rebuild of the same content verifies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kspace_sim.sharing.content import VOLATILE_DESCRIPTION, is_metadata_file, metadata_digest
from kspace_sim.sharing.manifest import (
    ManifestError,
    ReadOptions,
    distribution,
    inline_values,
    load_manifest,
    manifest_store_url,
    parse_sha256sums,
    read_subjects_csv,
    sidecar_paths,
)
from kspace_sim.store.remote import check_remote, filesystem
from kspace_sim.store.checksum import CHECKSUM_ALGORITHMS, store_checksum_algorithm, subject_checksum
from kspace_sim.store.coil_arrays import COIL_CHECKSUM_PATHS, has_coils, stored_coil_checksum_rows
from kspace_sim.store.layout import FORMAT_VERSIONS, STATUS_DONE, StoreError, open_store
from kspace_sim.store.schema import ARRAYS, array_spec, resolve_shape

__all__ = ["Problem", "VerifyReport", "verify", "verify_store"]

PER_SUBJECT_ARRAYS = tuple(dict.fromkeys(a.path for a in ARRAYS if a.chunking == "row" and not a.path.startswith("masks/")))
PROVENANCE_KEYS = ("format_version", "simulator_version", "global_seed", "parameters", "fft_convention", "view_order", "pseudonymised", "input")
# provenance key -> store attribute, compared and reported only (VOLATILE_PROVENANCE)
_VOLATILE_ATTRS = {"git_commit": "git_commit", "store_created": "created"}


@dataclass(frozen=True)
class Problem:
    """One mismatch: what kind, which subject (id or ``''``), which array or file, and the detail."""

    kind: str
    subject: str
    array: str
    detail: str

    def __str__(self) -> str:
        who = f"subject {self.subject} " if self.subject else ""
        return f"[{self.kind}] {who}{self.array}: {self.detail}"


@dataclass
class VerifyReport:
    """The outcome of a verification."""

    store: str
    manifest: str | None
    n_subjects: int = 0
    n_done: int = 0
    checked_subjects: int = 0
    checked_files: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # volatile differences: reported, not failed

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, subject: str, array: str, detail: str) -> None:
        self.problems.append(Problem(kind, subject, array, detail))


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths where two JSON values differ, with both values."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path or '(value)'}: manifest {a!r}, store {b!r}"]


# the small arrays whose shape and dtype verify checks (their declaration: kspace_sim/store/schema.py)
_CHECKED_SUBJECT_ARRAYS = ("subjects/status", "subjects/split", "subjects/checksum", "subjects/kspace_scale")
# the arrays of a store with coils (format 2), from the schema
_COIL_ARRAYS = tuple(dict.fromkeys(a.path for a in ARRAYS if a.since == 2))


def _expected_shapes(group: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype of the arrays verify checks, from the schema and the store's parameters."""
    attrs = group.attrs.asdict()
    sim = (attrs.get("parameters") or {}).get("simulation") or {}
    n = group["subjects/id"].shape[0]
    s = len(attrs.get("view_order") or []) or 9
    t, hw = int(sim.get("frames", 50)), int(sim.get("crop", 128))
    storage = (attrs.get("parameters") or {}).get("kspace_storage", "complex64")
    dims = {"N": n, "S": s, "T": t, "H": hw, "W": hw, "C": CHECKSUM_ALGORITHMS.get(store_checksum_algorithm(group), 32)}
    paths = ["kspace", *(["seg"] if "seg" in group else []), *_CHECKED_SUBJECT_ARRAYS]
    coils = attrs.get("coils")
    if isinstance(coils, dict) and attrs.get("format_version") == 2:  # a store with coils: its coils/* arrays too
        dims["K"] = int(coils.get("n_coils", 0))
        paths += _COIL_ARRAYS
    from kspace_sim.masks import mask_name

    paths += [f"masks/{mask_name(m['pattern'], m['acceleration'])}" for m in (attrs.get("parameters") or {}).get("masks", [])]
    return {p: (resolve_shape(array_spec(p, storage), dims), array_spec(p, storage).dtype) for p in paths}


def _check_layout(group: Any, rep: VerifyReport) -> None:
    attrs = group.attrs.asdict()
    if attrs.get("format_version") not in FORMAT_VERSIONS:
        rep.add("format", "", "attrs.format_version", f"{attrs.get('format_version')!r}, expected one of {FORMAT_VERSIONS}")
    for name, (shape, dtype) in _expected_shapes(group).items():
        if name not in group:
            rep.add("layout", "", name, "array missing")
            continue
        arr = group[name]
        if tuple(arr.shape) != shape:
            rep.add("layout", "", name, f"shape {tuple(arr.shape)}, expected {shape} from the parameters")
        if str(arr.dtype) != dtype:
            rep.add("layout", "", name, f"dtype {arr.dtype}, expected {dtype}")
    storage = group["kspace"].attrs.get("storage", "complex64") if "kspace" in group else None
    expected = (attrs.get("parameters") or {}).get("kspace_storage", "complex64")
    if storage is not None and storage != expected:
        rep.add("layout", "", "kspace", f"attrs.storage {storage!r}, parameters say {expected!r}")


def _files_by_row(files: dict[str, str]) -> dict[int, dict[str, str]]:
    """Group the per-subject files of ``files`` (chunk keys ``<array>/c/<row>/…``) by row."""
    out: dict[int, dict[str, str]] = {}
    for path, sha in files.items():
        if "/c/" not in path:
            continue
        arr, rest = path.split("/c/", 1)
        if arr in PER_SUBJECT_ARRAYS or arr.startswith("masks/"):
            out.setdefault(int(rest.split("/", 1)[0]), {})[path] = sha
    return out


def _hash_file(fs: Any, path: str) -> str:
    h = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _check_subject(
    group: Any, row: int, sid: str, stored: bytes, fs: Any, root: str, files: dict[str, str], algorithm: str
) -> list[Problem]:
    problems: list[Problem] = []
    for path, sha in sorted(files.items()):
        try:
            got = _hash_file(fs, f"{root}/{path}")
        except FileNotFoundError:
            problems.append(Problem("file", sid, path.split("/c/")[0], f"file {path} missing"))
            continue
        if got != sha:
            problems.append(Problem("file", sid, path.split("/c/")[0], f"file {path} sha256 {got[:12]}…, manifest {sha[:12]}…"))
    rows: dict[str, np.ndarray] = {}
    for name in PER_SUBJECT_ARRAYS:
        if name not in group:
            continue
        try:
            rows[name] = np.asarray(group[name][row])
        except Exception as exc:  # noqa: BLE001 - any read error is reported, not raised
            problems.append(Problem("unreadable", sid, name, f"row {row}: {type(exc).__name__}: {exc}"))
    for name in group["masks"].array_keys() if "masks" in group else []:
        try:
            group[f"masks/{name}"][row]
        except Exception as exc:  # noqa: BLE001
            problems.append(Problem("unreadable", sid, f"masks/{name}", f"row {row}: {type(exc).__name__}: {exc}"))
    if "kspace" in rows:
        k = rows["kspace"]
        seg = rows.get("seg", np.zeros(0, np.uint8))
        coils = has_coils(group)
        try:  # a store with coils: the checksum covers its coils/* rows too (coils/maps read above)
            extra = stored_coil_checksum_rows(group, row, rows.get("coils/maps")) if coils else ()
        except Exception as exc:  # noqa: BLE001 - any read error is reported, not raised
            problems.append(Problem("unreadable", sid, "coils", f"row {row}: {type(exc).__name__}: {exc}"))
            extra = None  # no checksum to recompute
        got = subject_checksum(k, seg, algorithm, extra) if extra is not None else stored
        if got != stored:
            checked = ["kspace", "seg", *(COIL_CHECKSUM_PATHS if coils else ())]
            arrays = sorted({p.array for p in problems if p.kind == "file"}) or checked
            problems.append(
                Problem("checksum", sid, "+".join(arrays), f"row {row}: recomputed {got.hex()[:12]}…, stored {stored.hex()[:12]}…")
            )
        if not np.isfinite(k).all():
            problems.append(Problem("value", sid, "kspace", f"row {row}: non-finite values"))
    return problems


def _subject_table(group: Any, rep: VerifyReport | None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None:
    """``(ids, status, split, checksum)`` of the store, or None (with a problem in ``rep``) when one
    of those arrays cannot be read (a corrupt chunk: its file digest names it too)."""
    out = []
    for name in ("id", "status", "split", "checksum"):
        try:
            out.append(np.asarray(group[f"subjects/{name}"][:]))
        except Exception as exc:  # noqa: BLE001 - a corrupt table is reported, not raised
            if rep is not None:
                rep.add("unreadable", "", f"subjects/{name}", f"{type(exc).__name__}: {exc}")
            return None
    ids, status, split, checksum = out
    return [str(x) for x in ids], status, split, checksum.astype(np.uint8)


def _compare_manifest(doc: dict[str, Any], mpath: Path, group: Any, rep: VerifyReport) -> dict[str, str]:
    """Side files, provenance and subject table; returns the SHA256SUMS map (empty if unusable)."""
    csv_path, sums_path = sidecar_paths(mpath)
    texts: dict[str, str] = {}
    for file_id, path in (("subjects-csv", csv_path), ("sha256sums", sums_path)):
        try:
            entry = distribution(doc, file_id)
            p = mpath.parent / str(entry.get("contentUrl", path.name))
            data = p.read_bytes()
        except (ManifestError, FileNotFoundError) as exc:
            rep.add("manifest", "", file_id, f"unusable: {exc}")
            continue
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            rep.add("manifest", "", p.name, "its sha256 differs from the manifest's distribution entry")
        texts[file_id] = data.decode()
    attrs = group.attrs.asdict()
    prov = inline_values(doc, "provenance")
    for key in PROVENANCE_KEYS:
        for d in _diff(prov.get(key), attrs.get(key), key):
            rep.add("provenance", "", "attrs", d)
    for key, attr in _VOLATILE_ATTRS.items():
        if key in prov and prov.get(key) != attrs.get(attr):
            rep.notes.append(f"{key}: manifest {prov.get(key)!r}, store {attrs.get(attr)!r} (volatile: not compared)")
    if "build_runs" in prov and prov["build_runs"] != len(attrs.get("builds") or []):
        rep.notes.append(f"build_runs: manifest {prov['build_runs']}, store {len(attrs.get('builds') or [])} (volatile: not compared)")
    _compare_arrays(inline_values(doc, "store_content").get("arrays"), group, rep)
    table = _subject_table(group, rep)
    if table is None:
        return parse_sha256sums(texts["sha256sums"]) if "sha256sums" in texts else {}
    ids, status, split, checksum = table
    if "subjects-csv" in texts:
        from kspace_sim.sharing.manifest import SPLIT_NAMES, STATUS_NAMES

        index = {sid: i for i, sid in enumerate(ids)}
        listed = set()
        for r in read_subjects_csv(texts["subjects-csv"]):
            sid = r["subject_id"]
            listed.add(sid)
            if sid not in index:
                rep.add("subjects", sid, "subjects/id", f"in the manifest (row {r['row']}) but not in the store")
                continue
            i = index[sid]
            if str(i) != r["row"]:
                rep.add("subjects", sid, "subjects/id", f"row {i} in the store, {r['row']} in the manifest")
            st = STATUS_NAMES.get(int(status[i]), str(status[i]))
            if st != r["status"]:
                rep.add("subjects", sid, "subjects/status", f"{st} in the store, {r['status']} in the manifest")
            sp = SPLIT_NAMES.get(int(split[i]), str(split[i]))
            if sp != r["split"]:
                rep.add("subjects", sid, "subjects/split", f"{sp} in the store, {r['split']} in the manifest")
            if r["checksum"] and status[i] == STATUS_DONE and bytes(checksum[i]).hex() != r["checksum"]:
                rep.add("subjects", sid, "subjects/checksum", "stored checksum differs from the manifest's")
        for sid in ids:
            if sid not in listed:
                rep.add("subjects", sid, "subjects/id", "in the store but not in the manifest")
    return parse_sha256sums(texts["sha256sums"]) if "sha256sums" in texts else {}


def _store_arrays(group: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, arr in group.arrays():
        out[f"{prefix}{name}"] = arr
    for name, sub in group.groups():
        out.update(_store_arrays(sub, f"{prefix}{name}/"))
    return out


def _compare_arrays(expected: dict[str, Any] | None, group: Any, rep: VerifyReport) -> None:
    """Every array of the manifest's ``store_content`` record present with its shape and dtype,
    and no other array in the store."""
    if expected is None:  # a manifest from before the store_content record: shapes checked by the layout only
        return
    found = _store_arrays(group)
    for name in sorted(set(expected) | set(found)):
        if name not in found:
            rep.add("layout", "", name, "array in the manifest but not in the store")
        elif name not in expected:
            rep.add("layout", "", name, "array in the store but not in the manifest")
        else:
            arr, want = found[name], expected[name]
            if list(arr.shape) != list(want["shape"]):
                rep.add("layout", "", name, f"shape {tuple(arr.shape)} in the store, {tuple(want['shape'])} in the manifest")
            dtype = str(arr.metadata.to_dict().get("data_type"))  # as zarr.json spells it
            if dtype != want["dtype"]:
                rep.add("layout", "", name, f"dtype {dtype} in the store, {want['dtype']} in the manifest")


def _check_metadata_file(fs: Any, root: str, path: str, sha: str, content: dict[str, str] | None, rep: VerifyReport) -> None:
    """A metadata file: equal bytes, or equal content with only volatile values changed (a note)."""
    try:
        with fs.open(f"{root}/{path}", "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        rep.add("file", "", path, "missing from the store")
        return
    rep.checked_files += 1
    if hashlib.sha256(raw).hexdigest() == sha:
        return
    if content is None or path not in content:
        rep.add("file", "", path, "sha256 differs from SHA256SUMS (the manifest has no content digest for it)")
    elif metadata_digest(path, raw) != content[path]:
        rep.add("metadata", "", path, "content differs from the manifest (shape, dtype, chunks, codecs or attributes)")
    else:
        rep.notes.append(f"{path}: only volatile metadata differs ({VOLATILE_DESCRIPTION}: not compared)")


def verify(location: str, read: ReadOptions | None = None) -> VerifyReport:
    """Verify a store (path or URL) or a manifest (``.json``/``.jsonld``) and its store.

    Args:
        location: a manifest file or a store location.
        read: how the store is read (:class:`~kspace_sim.sharing.manifest.ReadOptions`): fsspec
            options of a URL store, threads reading and hashing subjects, a tqdm bar. Default:
            ``ReadOptions()`` (4 threads, no bar).

    Raises:
        ManifestError: the manifest cannot be read.
        StoreError: the store cannot be opened (unreachable, no credentials, not a store).
    """
    import time

    t0 = time.perf_counter()
    doc: dict[str, Any] | None = None
    mpath: Path | None = None
    store = str(location)
    if store.endswith((".json", ".jsonld")):
        mpath = Path(store)
        doc = load_manifest(mpath)
        store = manifest_store_url(doc, mpath)
    rep = verify_store(store, read, doc, mpath)
    rep.seconds = time.perf_counter() - t0
    return rep


def verify_store(
    store: str,
    read: ReadOptions | None = None,
    manifest: dict[str, Any] | None = None,
    manifest_path: Path | None = None,
    on_subject: Callable[[], None] | None = None,
) -> VerifyReport:
    """Verify ``store``; with ``manifest`` (and its path), also compare the two. See :func:`verify`."""
    read = read or ReadOptions()
    check_remote(store, read.storage_options)
    try:
        group = open_store(store, mode="r", storage_options=read.storage_options)
    except StoreError:
        raise
    except Exception as exc:  # noqa: BLE001 - a store that zarr cannot parse
        raise StoreError(f"cannot open {store}: {type(exc).__name__}: {exc}") from None
    rep = VerifyReport(store=store, manifest=str(manifest_path) if manifest_path else None)
    _check_layout(group, rep)
    files = _compare_manifest(manifest, manifest_path, group, rep) if manifest is not None and manifest_path else {}
    fs, root = filesystem(store, read.storage_options)
    root = root.rstrip("/")
    by_row = _files_by_row(files)
    per_subject = {p for d in by_row.values() for p in d}
    content = inline_values(manifest, "store_content").get("metadata_sha256") if manifest is not None else None
    for path in sorted(set(files) - per_subject):
        if is_metadata_file(path):
            _check_metadata_file(fs, root, path, files[path], content, rep)
            continue
        try:
            got = _hash_file(fs, f"{root}/{path}")
        except FileNotFoundError:
            rep.add("file", "", path, "missing from the store")
            continue
        rep.checked_files += 1
        if got != files[path]:
            rep.add("file", "", path, "sha256 differs from SHA256SUMS")
    if files:
        on_disk = {f[len(root) + 1 :] for f in fs.find(root)}
        for path in sorted(on_disk - set(files)):
            rep.add("file", "", path, "in the store but not in SHA256SUMS")
    table = _subject_table(group, None)
    if table is None:  # reported above (or by the file digests): no subject can be checked
        return rep
    ids, status, _, checksum = table
    algorithm = store_checksum_algorithm(group)
    rows = [int(i) for i in np.flatnonzero(status == STATUS_DONE)]
    rep.n_subjects, rep.n_done = len(ids), len(rows)
    bar = None
    if read.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc="verifying", unit="subj")

    def one(row: int) -> list[Problem]:
        out = _check_subject(group, row, ids[row], bytes(checksum[row]), fs, root, by_row.get(row, {}), algorithm)
        if bar is not None:
            bar.update(1)
        if on_subject:
            on_subject()
        return out

    with ThreadPoolExecutor(max_workers=max(read.workers, 1)) as pool:
        for probs in pool.map(one, rows):
            rep.problems.extend(probs)
            rep.checked_subjects += 1
    if bar is not None:
        bar.close()
    rep.checked_files += sum(len(by_row.get(r, {})) for r in rows)
    return rep
