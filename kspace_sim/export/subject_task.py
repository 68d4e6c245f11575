"""One subject's export (runs on a Dask worker): read its rows, write its files, hash them.

Every file is written under a temporary name in its final folder and renamed into place, so a
file with its final name is always complete. The task returns the subject's record (file sizes and
digests); the client stores it only after the task returned, which is what marks the subject done.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import xxhash

__all__ = ["SubjectJob", "export_subject", "file_digests", "FORMATS"]

FORMATS = ("ismrmrd", "cmrxrecon")


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


def file_digests(path: str | Path) -> dict[str, Any]:
    """``{"bytes", "xxh3_128", "sha256"}`` of a file (hex digests)."""
    xh, sh, n = xxhash.xxh3_128(), hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 23), b""):
            xh.update(block)
            sh.update(block)
            n += len(block)
    return {"bytes": n, "xxh3_128": xh.hexdigest(), "sha256": sh.hexdigest()}


def _atomic(out: Path, rel: str, write: Callable[[Path], None]) -> dict[str, Any]:
    """Write ``out/rel`` through ``write(temp path)`` + rename; returns its digests."""
    final = out / rel
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        digests = file_digests(tmp)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return digests


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


def _ismrmrd_files(job: SubjectJob, k: np.ndarray, m: np.ndarray, out: Path) -> dict[str, dict[str, Any]]:
    from kspace_sim.export.ismrmrd_export import ViewGeometry, acquisition_rows, ismrmrd_header, write_ismrmrd_view

    kind = {s: g for g, rows in job.views.items() for s in rows}
    files = {}
    kc = k[None]  # (C = 1, S, T, H, W): a multi-coil store passes its coils here
    for s, view in enumerate(job.view_order):
        geo = ViewGeometry(
            view=view, view_index=s, kind=kind[s], pixel_spacing_mm=(float(job.pixel_spacing[s, 0]), float(job.pixel_spacing[s, 1])),
            frames=k.shape[1], readout=k.shape[2], lines=k.shape[3], channels=kc.shape[0], acs=job.acs, dt_s=job.dt,
            subject_id=job.subject_id, row=job.row, mask_name=job.mask_name, mask=job.mask_spec, provenance=job.provenance,
        )
        header = ismrmrd_header(geo)
        rows = acquisition_rows(kc[:, s], m[s], job.acs)
        rel = f"{job.key}/{view}.h5"
        files[rel] = _atomic(out, rel, lambda p, header=header, rows=rows: write_ismrmrd_view(p, header, rows))
    return files


def _cmrxrecon_files(job: SubjectJob, k: np.ndarray, m: np.ndarray, out: Path) -> dict[str, dict[str, Any]]:
    from kspace_sim.export.cmrxrecon_export import CINE_GROUPS, VARIABLES, cine_arrays, subject_files, write_cine_file

    created = _dt.datetime.fromisoformat(job.created) if job.created else _dt.datetime(1970, 1, 1)
    paths = subject_files(job.key, job.split, job.mask_name)
    files = {}
    kc = k[None]  # (C = 1, S, T, H, W): a multi-coil store passes its coils here
    for stem, group in CINE_GROUPS.items():
        rows = job.views[group]
        arrays = cine_arrays(kc[:, rows], m[rows])
        for kind, rel in paths[stem].items():
            files[rel] = _atomic(out, rel, lambda p, kind=kind: write_cine_file(p, VARIABLES[kind], arrays[kind], created))
        del arrays
    return files


def export_subject(job: SubjectJob) -> dict[str, Any]:
    """Export one subject; returns its record ``{row, key, subject_id, files: {rel: digests}, seconds}``."""
    t0 = time.perf_counter()
    k, m = read_subject(job.store, job.row, job.mask_name, job.storage_options)
    out = Path(job.out)
    if job.fmt == "ismrmrd":
        files = _ismrmrd_files(job, k, m, out)
    elif job.fmt == "cmrxrecon":
        files = _cmrxrecon_files(job, k, m, out)
    else:  # validated before any work
        raise ValueError(f"unknown format {job.fmt!r}")
    return {"row": job.row, "key": job.key, "subject_id": job.subject_id, "split": job.split, "files": files,
            "seconds": time.perf_counter() - t0}
