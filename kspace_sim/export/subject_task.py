"""One subject's export (runs on a Dask worker): read its rows, write its files, hash them.

Every file is written under a temporary name in its final folder and renamed into place, so a
file with its final name is always complete; it is hashed (xxh3-128, for resuming and the
manifest, and sha256 as well when the export asked for sha256 checksums) after it is written, or,
for CMRxRecon's ``kspace_full`` and ``kus``, while it is written: those two are filled a block of
frames at a time from one small buffer (:func:`kspace_sim.export.cmrxrecon_export.stream_cine_full_and_kus`
into files made by :func:`kspace_sim.export.matlab_v73.allocate_mat73`), so neither a full-size
transposed copy nor a full-size ``kus`` is ever allocated and no file is read back. Writing and
hashing run on a writer thread, in order, while this thread goes on. The task returns
the subject's record (file sizes and digests) once its files are all in place; the client stores
it, which is what marks the subject done. In one process (``workers = 0``) the runner keeps two
subjects in flight on threads (:func:`kspace_sim.export.runner._export_in_process`), so one
subject is read while the files of the one before are written.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import mmap
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

__all__ = ["CHECKSUMS", "DEFAULT_CHECKSUM", "FORMATS", "SubjectJob", "export_subject", "file_digests"]

FORMATS = ("ismrmrd", "cmrxrecon")
#: per-file checksum of the manifest and the sums file it writes: xxh3-128 (``xxhsum -c
#: XXH128SUMS``), or sha256 as well (``sha256sum -c SHA256SUMS``; a sha256 pass over every byte
#: written, ~1 GB/s, costs cmrxrecon about half its throughput)
CHECKSUMS = {"sha256": "SHA256SUMS", "xxh3_128": "XXH128SUMS"}
#: a new export's checksum (the store's subject checksums use the same algorithm)
DEFAULT_CHECKSUM = "xxh3_128"


@dataclass
class SubjectJob:
    """Everything a task needs besides the store's big arrays (small, pickled to the worker)."""

    store: str
    row: int
    key: str
    subject_id: str
    split: int
    fmt: str
    mask_name: str
    mask_spec: dict[str, Any]
    acs: np.ndarray  # (W,) bool
    out: str
    created: str  # ISO time written into the MAT-file headers (the store's creation time)
    pixel_spacing: np.ndarray  # (S, 2) mm
    dt: float
    views: dict[str, list[int]]
    view_order: list[str]
    provenance: dict[str, str] = field(default_factory=dict)
    storage_options: dict[str, Any] | None = None
    checksum: str = DEFAULT_CHECKSUM


class _Digests:
    """The per-file checksums of the export, fed with a file's bytes in order: xxh3-128, and sha256
    when asked."""

    def __init__(self, sha256: bool) -> None:
        self._hashes = [xxhash.xxh3_128()] + ([hashlib.sha256()] if sha256 else [])

    def update(self, data: bytes | memoryview | mmap.mmap) -> None:
        for h in self._hashes:
            h.update(data)

    def result(self, size: int) -> dict[str, Any]:
        """``{"bytes": size, "xxh3_128"[, "sha256"]}`` (hex digests)."""
        return {"bytes": size, **{name: h.hexdigest() for name, h in zip(("xxh3_128", "sha256"), self._hashes)}}


def file_digests(path: str | Path, sha256: bool = True) -> dict[str, Any]:
    """``{"bytes", "xxh3_128"[, "sha256"]}`` of a file (hex digests), hashed through a read-only
    memory map (no copy of the file into Python buffers)."""
    digests = _Digests(sha256)
    with open(path, "rb") as fh:
        n = os.fstat(fh.fileno()).st_size
        if n:  # an empty file cannot be mapped (and hashes as b"")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
                digests.update(view)
    return digests.result(n)


class _AppendedData:
    """The data region of a file made by :func:`kspace_sim.export.matlab_v73.allocate_mat73`,
    written in order (``os.pwrite``) and hashed on the way, so the finished file is never read back:
    :meth:`close` gives the digests :func:`file_digests` gives for the file (the bytes before the
    region and after it are read from the file, a few kilobytes)."""

    def __init__(self, path: Path, offset: int, nbytes: int, sha256: bool) -> None:
        self.path, self.offset, self.end = path, offset, offset + nbytes
        self._pos = offset
        self._digests = _Digests(sha256)
        self._fd: int | None = os.open(path, os.O_RDWR)
        try:
            head = os.pread(self._fd, offset, 0)
            if len(head) != offset:
                raise OSError(f"{path}: shorter than its data offset {offset}")
        except BaseException:
            self.abort()
            raise
        self._digests.update(head)

    def write(self, data: memoryview) -> None:
        """Append ``data`` to the region."""
        if self._pos + len(data) > self.end:
            raise ValueError(f"{self.path}: {self._pos + len(data) - self.offset} bytes written into a region of {self.end - self.offset}")
        done = 0
        while done < len(data):  # pwrite may write less than asked
            done += os.pwrite(self._fd, data[done:], self._pos + done)
        self._digests.update(data)
        self._pos += len(data)

    def abort(self) -> None:
        """Close the file without checking it (idempotent; the caller removes the file)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> dict[str, Any]:
        """Close the file; its digests (``{"bytes", "xxh3_128"[, "sha256"]}``, as :func:`file_digests`)."""
        try:
            if self._pos != self.end:
                raise ValueError(f"{self.path}: {self._pos - self.offset} bytes written into a region of {self.end - self.offset}")
            size = os.fstat(self._fd).st_size
            self._digests.update(os.pread(self._fd, size - self.end, self.end))
        finally:
            self.abort()
        return self._digests.result(size)


#: writes files to the given temporary paths; returns each one's digests, or None to hash the file
GroupWrite = Callable[[list[Path]], list[dict[str, Any] | None]]


class _FileWriter:
    """One subject's files, written atomically (temporary name in the final folder, then rename)
    and hashed on ``pool``'s writer thread, in submission order, while the caller goes on (numpy,
    hashlib and xxhash release the GIL)."""

    def __init__(self, out: Path, sha256: bool, pool: Executor) -> None:
        self.out = out
        self.sha256 = sha256
        self._pool = pool
        self._digests: list[Future[dict[str, dict[str, Any]]]] = []

    def _write_and_hash(self, rels: list[str], write: GroupWrite) -> dict[str, dict[str, Any]]:
        finals = [self.out / rel for rel in rels]
        tmps = [final.with_name(f".{final.name}.tmp-{os.getpid()}") for final in finals]
        try:
            for final in finals:
                final.parent.mkdir(parents=True, exist_ok=True)
            digests = write(tmps)
            for tmp, final in zip(tmps, finals):
                os.replace(tmp, final)
        finally:
            for tmp in tmps:
                if tmp.exists():
                    tmp.unlink()
        return {rel: d if d is not None else file_digests(final, self.sha256) for rel, final, d in zip(rels, finals, digests)}

    def write(self, rel: str, write: Callable[[Path], None]) -> None:
        """Queue ``write(temporary path)`` for ``rel`` (the arrays it writes must not change after)."""
        self.write_group([rel], lambda tmps: [write(tmps[0])])

    def write_group(self, rels: list[str], write: GroupWrite) -> None:
        """Queue ``write(temporary paths)`` for the files ``rels``, written together: renamed into
        place together once ``write`` returned, hashed by it where it returns digests."""
        self._digests.append(self._pool.submit(self._write_and_hash, rels, write))

    def digests(self) -> dict[str, dict[str, Any]]:
        """``{rel: digests}`` of every file written (waits for them; raises the first failure)."""
        return {rel: d for fut in self._digests for rel, d in fut.result().items()}

    def abandon(self) -> None:
        """Drop the writes not started and wait for the one in progress (it cleans up after itself)."""
        for fut in self._digests:
            fut.cancel()
        wait(self._digests)


def read_subject(store: str, row: int, mask_name: str, storage_options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A done subject's ``(kspace (S, T, H, W) complex64, mask (S, T, W) bool)`` from the store
    (float16 storage decoded with the subject's scale)."""
    from kspace_sim.store.kspace_codec import decode_float16
    from kspace_sim.store.layout import open_store

    g = open_store(store, "r", storage_options)
    k = g["kspace"][row]
    if g["kspace"].attrs.get("storage", "complex64") == "float16":
        k = decode_float16(k, float(g["subjects/kspace_scale"][row]))
    return np.asarray(k, dtype=np.complex64), np.asarray(g[f"masks/{mask_name}"][row], dtype=bool)


def read_subject_channels(
    store: str, row: int, mask_name: str, storage_options: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_subject` with a channel axis: ``(kspace (C, S, T, H, W) complex64, mask)``. C = 1 for
    a store without coils; a store with coils gives its coils, synthesised by the store's rule
    (:func:`kspace_sim.store.coil_arrays.subject_coil_kspace`: numpy ``coil_kspace`` with the stored
    maps, per-view noise sigma, correlation and noise seed; docs/store-format.md)."""
    from kspace_sim.store.coil_arrays import has_coils, read_subject_coils, subject_coil_kspace
    from kspace_sim.store.layout import open_store

    k, m = read_subject(store, row, mask_name, storage_options)
    g = open_store(store, "r", storage_options)
    if not has_coils(g):
        return k[None], m
    return subject_coil_kspace(k, read_subject_coils(g, row)), m


def _ismrmrd_files(job: SubjectJob, kc: np.ndarray, m: np.ndarray, files: _FileWriter) -> None:
    from kspace_sim.export.ismrmrd_export import ViewGeometry, view_header_xml, write_ismrmrd_view

    kind = {s: g for g, rows in job.views.items() for s in rows}
    for s, view in enumerate(job.view_order):  # kc: (C, S, T, H, W), the channels of read_subject_channels
        geo = ViewGeometry(
            view=view, view_index=s, kind=kind[s], pixel_spacing_mm=(float(job.pixel_spacing[s, 0]), float(job.pixel_spacing[s, 1])),
            frames=kc.shape[2], readout=kc.shape[3], lines=kc.shape[4], channels=kc.shape[0], acs=job.acs, dt_s=job.dt,
            subject_id=job.subject_id, row=job.row, mask_name=job.mask_name, mask=job.mask_spec, provenance=job.provenance,
        )
        xml = view_header_xml(geo)
        files.write(f"{job.key}/{view}.h5", lambda p, xml=xml, s=s: write_ismrmrd_view(p, xml, kc[:, s], m[s], job.acs))


def _group_rows(rows: list[int]) -> slice | list[int]:
    """``rows`` as a slice when consecutive (indexing with it is a view, not a copy)."""
    return slice(rows[0], rows[-1] + 1) if rows and rows == list(range(rows[0], rows[-1] + 1)) else rows


def _cine_full_and_kus(kspace: np.ndarray, mask: np.ndarray, created: _dt.datetime, sha256: bool) -> GroupWrite:
    """Write one cine group's ``kspace_full`` and ``kus`` files together, a block of frames at a time
    (:func:`~kspace_sim.export.cmrxrecon_export.stream_cine_full_and_kus`), hashed as written."""
    from kspace_sim.export.cmrxrecon_export import VARIABLES, stream_cine_full_and_kus
    from kspace_sim.export.matlab_v73 import allocate_mat73

    c, z, t, h, w = kspace.shape  # (C, Z, T, H, W)
    nbytes = kspace.size * np.dtype(np.complex64).itemsize

    def write(tmps: list[Path]) -> list[dict[str, Any] | None]:
        sinks = []
        try:
            for tmp, kind in zip(tmps, ("full", "kus")):
                offset = allocate_mat73(tmp, VARIABLES[kind], (h, w, c, z, t), np.dtype(np.complex64), created)
                sinks.append(_AppendedData(tmp, offset, nbytes, sha256))
            stream_cine_full_and_kus(kspace, mask, sinks[0].write, sinks[1].write)
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        return [sink.close() for sink in sinks]

    return write


def _cmrxrecon_files(job: SubjectJob, kc: np.ndarray, m: np.ndarray, files: _FileWriter) -> None:
    from kspace_sim.export.cmrxrecon_export import CINE_GROUPS, VARIABLES, cine_mask, subject_files, write_cine_file

    created = _dt.datetime.fromisoformat(job.created) if job.created else _dt.datetime(1970, 1, 1)
    paths = subject_files(job.key, job.split, job.mask_name)  # kc: (C, S, T, H, W), C = nc
    for stem, group in CINE_GROUPS.items():
        rows = _group_rows(job.views[group])
        kspace, mask = kc[:, rows], m[rows]
        # on the writer thread: kspace_full and kus together from one small buffer, then the mask
        files.write_group([paths[stem]["full"], paths[stem]["kus"]], _cine_full_and_kus(kspace, mask, created, files.sha256))
        files.write(paths[stem]["mask"], lambda p, mask=mask: write_cine_file(p, VARIABLES["mask"], cine_mask(mask, kc.shape[3]), created))


def export_subject(job: SubjectJob) -> dict[str, Any]:
    """Export one subject (one Dask task, or one step of the serial loop): read its rows, queue its
    files on a writer thread, wait for them. Returns its record ``{row, key, subject_id, split,
    files: {rel: digests}, seconds}``, or ``{row, key, subject_id, split, error, seconds}`` when it
    fails (nothing is recorded for it then, so a rerun tries it again)."""
    t0 = time.perf_counter()
    base = {"row": job.row, "key": job.key, "subject_id": job.subject_id, "split": job.split}
    with ThreadPoolExecutor(1, thread_name_prefix="export-write") as pool:
        files = _FileWriter(Path(job.out), job.checksum == "sha256", pool)
        try:
            kc, m = read_subject_channels(job.store, job.row, job.mask_name, job.storage_options)
            if job.fmt == "ismrmrd":
                _ismrmrd_files(job, kc, m, files)
            elif job.fmt == "cmrxrecon":
                _cmrxrecon_files(job, kc, m, files)
            else:  # validated before any work
                raise ValueError(f"unknown format {job.fmt!r}")
            digests = files.digests()
        except Exception as exc:  # noqa: BLE001 - one subject's failure must not stop the export
            files.abandon()
            return {**base, "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - t0}
    return {**base, "files": digests, "seconds": time.perf_counter() - t0}
