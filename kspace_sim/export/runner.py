"""``kspace-sim export``: a store's done subjects to ISMRMRD or the CMRxRecon cine layout, one Dask
task per subject, resumable.

The export folder holds ``.export/identity.json`` (which store, format and mask it belongs to,
written before any subject), one completion record per subject in ``.export/records/<key>.json``
(written by the client, atomically, after the subject's task returned), the subjects' files and,
at the end, ``export_manifest.json`` and ``SHA256SUMS``. A subject whose task fails is reported with
its id and reason and gets no record (the next run tries it again); the others go on. A rerun skips every subject whose record
is there, matches the store's checksum of the subject and whose files all exist with the
recorded size and xxh3 digest; any other subject is exported again. A folder holding something
else (another store's export, another format, mask or checksum, unrelated files) is refused before
any work. Checksums are xxh3-128 (``XXH128SUMS``) unless sha256 is asked for; a resumed export keeps
its folder's algorithm when none is asked for.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import kspace_sim
from kspace_sim.cluster import dask_client
from kspace_sim.export.export_manifest import MANIFEST_FILE, RECORDS_DIR, _write_json_atomic, write_export_manifest
from kspace_sim.export.subject_task import (
    CHECKSUMS,
    DEFAULT_CHECKSUM,
    FORMATS,
    SubjectJob,
    export_subject,
    file_digests,
)
from kspace_sim.store.layout import SPLIT_CODES, STATUS_DONE, open_store

__all__ = [
    "IDENTITY_FILE",
    "MANIFEST_FILE",
    "RECORDS_DIR",
    "ExportConfig",
    "ExportError",
    "ExportReport",
    "export_store",
    "store_fingerprint",
    "subject_key",
]

IDENTITY_FILE = ".export/identity.json"
STATUS_NAMES = {0: "pending", 1: "done", 2: "failed"}


class ExportError(Exception):
    """An export that cannot start as asked (bad format, mask, subjects or output folder)."""


@dataclass
class ExportConfig:
    """One export run.

    Attributes:
        store: store path or URL. out: export folder.
        fmt: ``ismrmrd`` or ``cmrxrecon``. mask: a mask of the store (default: its first, sorted).
        subjects: subject ids to export (default: every done subject). split: only this split.
        workers: Dask worker processes (0 = in this process, two subjects in flight on threads).
            scheduler: an existing cluster.
        checksum: per-file checksum of the manifest: ``xxh3_128`` (XXH128SUMS) or ``sha256``
            (SHA256SUMS); None: the folder's algorithm when resuming an export, else ``xxh3_128``.
    """

    store: str
    out: str
    fmt: str
    mask: str | None = None
    subjects: list[str] | None = None
    split: str | None = None
    workers: int = 2
    scheduler: str | None = None
    storage_options: dict[str, Any] | None = None
    progress: bool = True
    checksum: str | None = None


@dataclass
class ExportReport:
    """What one run did."""

    out: str
    fmt: str
    mask: str
    selected: int
    exported: int
    skipped: int
    seconds: float
    manifest: str
    files: int
    bytes: int
    not_done: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def subjects_per_second(self) -> float:
        return self.exported / self.seconds if self.seconds > 0 else float("nan")


def store_fingerprint(attrs: dict[str, Any], ids: list[str]) -> str:
    """sha256 of what identifies a store: its creation time, seed, parameters, simulator version and
    subject ids (unchanged by resuming or adding masks)."""
    ident = {k: attrs.get(k) for k in ("created", "global_seed", "parameters", "simulator_version", "format_version")}
    ident["subjects"] = ids
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def subject_key(row: int, n_rows: int) -> str:
    """CMRxRecon-style key of a store row: ``P001`` for row 0 (at least 3 digits)."""
    return f"P{row + 1:0{max(3, len(str(n_rows)))}d}"


def _mask_choice(group: Any, wanted: str | None) -> tuple[str, dict[str, Any]]:
    names = sorted(group["masks"].array_keys()) if "masks" in group else []
    if not names:
        raise ExportError("the store holds no masks")
    name = wanted or names[0]
    if name not in names:
        raise ExportError(f"the store holds no mask {name!r} (it holds: {', '.join(names)})")
    spec = {k: v for k, v in (group.attrs.get("masks") or {}).get(name, {}).items() if not k.startswith("_")}
    if "pattern" not in spec:
        from kspace_sim.masks import parse_mask_name

        pattern, acc = parse_mask_name(name)
        spec.update(pattern=pattern, acceleration=acc, options={})
    return name, spec


def _acs(spec: dict[str, Any], lines: int) -> np.ndarray:
    from kspace_sim.masks import acs_lines_mask

    return acs_lines_mask(spec["pattern"], lines, float(spec["acceleration"]), **(spec.get("options") or {}))


def _select_rows(
    cfg: ExportConfig, ids: list[str], status: np.ndarray, split: np.ndarray, reason: np.ndarray
) -> tuple[list[int], list[tuple[str, str]]]:
    """Store rows to export (sorted) and the (id, reason) of the subjects left out as not done."""
    if cfg.split is not None and cfg.split not in SPLIT_CODES:
        raise ExportError(f"unknown split {cfg.split!r}; choose from {', '.join(SPLIT_CODES)}")
    index = {sid: i for i, sid in enumerate(ids)}
    if cfg.subjects:
        rows = []
        for sid in cfg.subjects:
            if sid not in index:
                raise ExportError(f"subject {sid!r} is not in the store")
            i = index[sid]
            if status[i] != STATUS_DONE:
                raise ExportError(f"subject {sid!r} is {STATUS_NAMES.get(int(status[i]), '?')} in the store, not done")
            rows.append(i)
        rows = sorted(set(rows))
    else:
        rows = [i for i in range(len(ids)) if status[i] == STATUS_DONE]
    not_done = [] if cfg.subjects else [(ids[i], str(reason[i]) or STATUS_NAMES.get(int(status[i]), "?"))
                                        for i in range(len(ids)) if status[i] != STATUS_DONE]
    if cfg.split is not None:
        rows = [i for i in rows if split[i] == SPLIT_CODES[cfg.split]]
    return rows, not_done


def _check_folder(out: Path, identity: dict[str, Any]) -> None:
    """Refuse a folder that holds anything but an export of this store in this format and mask."""
    ident_path = out / IDENTITY_FILE
    if ident_path.exists():
        try:
            old = json.loads(ident_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ExportError(f"{out} has an unreadable {IDENTITY_FILE} ({exc}): use another --out") from exc
        if old.get("store_fingerprint") != identity["store_fingerprint"]:
            raise ExportError(f"{out} holds the export of another store: use another --out")
        for key in ("format", "mask", "checksum"):
            if old.get(key, "sha256" if key == "checksum" else None) != identity[key]:
                raise ExportError(f"{out} holds a {old.get('format')} export with mask {old.get('mask')} and "
                                  f"{old.get('checksum', 'sha256')} checksums, not {identity['format']} with "
                                  f"{identity['mask']} and {identity['checksum']}: use another --out")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} exists and is not an export folder of this store: use another --out")
    _write_json_atomic(ident_path, identity)


def _folder_checksum(out: Path) -> str | None:
    """The checksum algorithm of the export already in ``out`` (sha256 for exports written before
    the choice existed), or None when there is none or it cannot be read (checked later)."""
    try:
        old = json.loads((out / IDENTITY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return old.get("checksum", "sha256") if isinstance(old, dict) else None


def _record_complete(out: Path, record: dict[str, Any], checksum: str) -> bool:
    """The record matches the store's subject and every file is there with its size and xxh3 digest."""
    if record.get("subject_checksum") != checksum or not record.get("files"):
        return False
    for rel, d in record["files"].items():
        p = out / rel
        try:
            if p.stat().st_size != d["bytes"]:
                return False
        except OSError:
            return False
        if file_digests(p, sha256=False)["xxh3_128"] != d["xxh3_128"]:
            return False
    return True


def _load_record(out: Path, key: str) -> dict[str, Any] | None:
    try:
        return json.loads((out / RECORDS_DIR / f"{key}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _check_dependencies(fmt: str) -> None:
    missing = []
    for module in ("h5py",) + (("ismrmrd",) if fmt == "ismrmrd" else ()):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"--format {fmt} needs {', '.join(missing)}: pip install 'kspace-mtr[export]'")


#: subjects in flight in this process (workers = 0): one is read and converted while the files of
#: the one before are written (bench_export.py measures the gain)
IN_PROCESS_SUBJECTS = 2


def _export_in_process(jobs: list[SubjectJob], finished: Callable[[dict[str, Any]], None]) -> None:
    """Run ``jobs`` in this process, :data:`IN_PROCESS_SUBJECTS` at a time on threads (numpy, the
    store's codecs, HDF5 writes and hashing release the GIL), handing each record to ``finished``
    in row order. An interruption waits for the subjects in flight (their files are written
    atomically; their records are not written, so a rerun exports them again)."""
    with ThreadPoolExecutor(IN_PROCESS_SUBJECTS, thread_name_prefix="export-subject") as pool:
        in_flight: deque[Future[dict[str, Any]]] = deque()
        try:
            for job in jobs:
                in_flight.append(pool.submit(export_subject, job))
                if len(in_flight) >= IN_PROCESS_SUBJECTS:
                    finished(in_flight.popleft().result())
            while in_flight:
                finished(in_flight.popleft().result())
        except BaseException:
            for fut in in_flight:
                fut.cancel()
            raise


def export_store(cfg: ExportConfig, on_failure: Callable[[str, str], None] | None = None) -> ExportReport:
    """Export (or resume exporting) ``cfg.store`` into ``cfg.out``.

    Raises:
        ExportError, StoreError: before any work, for an unknown format, split or subject, a mask
            the store does not hold, a missing optional dependency, or an output folder holding
            something else.
    """
    if cfg.fmt not in FORMATS:
        raise ExportError(f"unknown format {cfg.fmt!r}; choose from {', '.join(FORMATS)}")
    if cfg.checksum is not None and cfg.checksum not in CHECKSUMS:
        raise ExportError(f"unknown checksum {cfg.checksum!r}; choose from {', '.join(CHECKSUMS)}")
    _check_dependencies(cfg.fmt)
    group = open_store(cfg.store, "r", cfg.storage_options)
    attrs = group.attrs.asdict()
    ids = [str(x) for x in group["subjects/id"][:]]
    status = np.asarray(group["subjects/status"][:])
    split = np.asarray(group["subjects/split"][:])
    reason = np.asarray(group["subjects/reason"][:])
    mask_name, spec = _mask_choice(group, cfg.mask)
    rows, not_done = _select_rows(cfg, ids, status, split, reason)
    out = Path(cfg.out)
    w = int(group["kspace"].shape[4])
    acs = _acs(spec, w)
    identity = {
        "format": cfg.fmt,
        "mask": mask_name,
        "checksum": cfg.checksum or _folder_checksum(out) or DEFAULT_CHECKSUM,
        "store_fingerprint": store_fingerprint(attrs, ids),
        "store": str(cfg.store),
        "exporter_version": kspace_sim.__version__,
    }
    _check_folder(out, identity)

    t0 = time.perf_counter()
    checksums = {i: bytes(np.asarray(group["subjects/checksum"][i], dtype=np.uint8)).hex() for i in rows}
    pixel_spacing = np.asarray(group["subjects/pixel_spacing"][:])
    dts = np.asarray(group["subjects/dt"][:])
    pending = []
    for i in rows:
        rec = _load_record(out, subject_key(i, len(ids)))
        if rec is None or not _record_complete(out, rec, checksums[i]):
            pending.append(i)
    provenance = {"simulator_version": str(attrs.get("simulator_version", "")), "store_git_commit": str(attrs.get("git_commit", "")),
                  "store_created": str(attrs.get("created", "")), "fft_convention": str(attrs.get("fft_convention", "")),
                  "global_seed": str(attrs.get("global_seed", ""))}
    if attrs.get("coils"):  # a store with coils: exported as channels (header user parameter "coils")
        c = attrs["coils"]
        snr = "noise-free" if c.get("snr_db") is None else f"SNR {c['snr_db']:g} dB per view (docs/store-format.md)"
        corr = c.get("noise_correlation") or {}
        provenance["coils"] = (f"{c['n_coils']} {c['model']} coils (coils_version {c.get('coils_version')}), {snr}, "
                               f"noise correlation {corr.get('kind')} rho {corr.get('rho')}")
    jobs = [
        SubjectJob(
            store=cfg.store, row=i, key=subject_key(i, len(ids)), subject_id=ids[i], split=int(split[i]), fmt=cfg.fmt,
            mask_name=mask_name, mask_spec=spec, acs=acs, out=str(out), created=str(attrs.get("created", "")),
            pixel_spacing=pixel_spacing[i], dt=float(dts[i]), views={k: list(v) for k, v in attrs["views"].items()},
            view_order=list(attrs["view_order"]), provenance=provenance, storage_options=cfg.storage_options,
            checksum=identity["checksum"],
        )
        for i in pending
    ]
    bar = _progress(len(jobs), cfg.progress)
    failed: list[tuple[str, str]] = []

    def finished(rec: dict[str, Any]) -> None:
        bar.update(1)
        if "error" in rec:
            failed.append((rec["subject_id"], rec["error"]))
            if on_failure:
                on_failure(rec["subject_id"], rec["error"])
            return
        rec["subject_checksum"] = checksums[rec["row"]]
        rec["store_fingerprint"] = identity["store_fingerprint"]
        _write_json_atomic(out / RECORDS_DIR / f"{rec['key']}.json", rec)

    if cfg.workers <= 0 or not jobs:
        _export_in_process(jobs, finished)
    else:
        from dask.distributed import as_completed

        with dask_client(cfg.workers, cfg.scheduler) as client:
            futures = [client.submit(export_subject, job, key=f"export-{job.key}", pure=False) for job in jobs]
            for fut in as_completed(futures):
                finished(fut.result())
                fut.release()
    bar.close()
    seconds = time.perf_counter() - t0


    n_files, n_bytes = write_export_manifest(out, attrs, identity, mask_name, spec, acs)
    return ExportReport(
        out=str(out), fmt=cfg.fmt, mask=mask_name, selected=len(rows), exported=len(jobs) - len(failed), skipped=len(rows) - len(jobs),
        seconds=seconds, manifest=str(out / MANIFEST_FILE), files=n_files, bytes=n_bytes, not_done=not_done, failed=failed,
    )


class _NoBar:
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="export", unit="subj")
