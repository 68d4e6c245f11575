"""The per-subject table of a store (``subjects/*``), held in memory by the build's client.

Only the client writes these small arrays. Updates are buffered and flushed as whole arrays,
metadata first and ``status`` last, so a killed build never shows a subject as done whose
metadata is missing (zarr's local store writes each chunk file atomically).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from kspace_sim.store.layout import STATUS_DONE, STATUS_FAILED, STATUS_PENDING
from kspace_sim.store.schema import ARRAYS

__all__ = ["SubjectTable", "SubjectRecord"]

# the per-subject metadata arrays of the schema that a finished task fills in; ``id``, ``status`` and
# ``reason`` are held apart, and ``split`` is assigned once, at the end of a build (sharing.splits.assign_splits)
_ARRAYS = tuple(
    a.path.removeprefix("subjects/")
    for a in ARRAYS
    if a.path.startswith("subjects/") and a.path not in ("subjects/id", "subjects/status", "subjects/reason", "subjects/split")
)


@dataclass
class SubjectRecord:
    """What a finished task reports about one subject (small; no image data)."""

    row: int
    ok: bool
    reason: str = ""
    checksum: bytes = b""
    seg_present: np.ndarray | None = None
    pixel_spacing: np.ndarray | None = None
    crop_box: np.ndarray | None = None
    sax_slices: np.ndarray | None = None
    intensity_range: np.ndarray | None = None
    dt: float = float("nan")
    source_frames: int = 0
    kspace_scale: float = 1.0
    storage_nrmse: float = 0.0
    mask_counts: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    phenotypes: np.ndarray | None = None
    phenotype_reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    coils: tuple[Any, ...] | None = None  # (geometry, field_seed, noise_seed, noise_sigma) in a store with coils


class SubjectTable:
    """In-memory copy of ``subjects/*``, ``labels/phenotypes`` and ``labels/phenotype_qc`` with
    buffered flushing."""

    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        self.ids: list[str] = [str(x) for x in group["subjects/id"][:]]
        self.status: np.ndarray = group["subjects/status"][:]
        self.reason: np.ndarray = np.asarray(group["subjects/reason"][:], dtype=object)
        self.arrays: dict[str, np.ndarray] = {k: group[f"subjects/{k}"][:] for k in _ARRAYS}
        self.phenotypes: np.ndarray | None = (
            group["labels/phenotypes"][:] if "labels/phenotypes" in group else None
        )
        self.phenotype_qc: np.ndarray | None = (
            np.asarray(group["labels/phenotype_qc"][:], dtype=object) if "labels/phenotype_qc" in group else None
        )
        self.dirty = False

    def __len__(self) -> int:
        return len(self.ids)

    def pending_rows(self) -> list[int]:
        """Rows not done yet (pending or failed: failed subjects are retried)."""
        return [i for i, st in enumerate(self.status) if st != STATUS_DONE]

    def record(self, rec: SubjectRecord) -> None:
        i = rec.row
        if rec.ok:
            self.arrays["checksum"][i] = np.frombuffer(rec.checksum, dtype=np.uint8)
            for key in ("seg_present", "pixel_spacing", "crop_box", "sax_slices", "intensity_range"):
                self.arrays[key][i] = getattr(rec, key)
            self.arrays["dt"][i] = rec.dt
            self.arrays["source_frames"][i] = rec.source_frames
            self.arrays["kspace_scale"][i] = rec.kspace_scale
            if self.phenotypes is not None and rec.phenotypes is not None:
                self.phenotypes[i] = rec.phenotypes
                self.phenotype_qc[i] = "; ".join(rec.phenotype_reasons)
            self.status[i] = STATUS_DONE
            self.reason[i] = ""
        else:
            self.status[i] = STATUS_FAILED
            self.reason[i] = rec.reason
        self.dirty = True

    def flush(self) -> None:
        """Write every array, ``status`` last."""
        if not self.dirty:
            return
        for key, arr in self.arrays.items():
            self.group[f"subjects/{key}"][...] = arr
        if self.phenotypes is not None:
            self.group["labels/phenotypes"][...] = self.phenotypes
            self.group["labels/phenotype_qc"][...] = self.phenotype_qc.astype(str)
        self.group["subjects/reason"][...] = self.reason.astype(str)
        self.group["subjects/status"][...] = self.status
        self.dirty = False

    def counts(self) -> dict[str, Any]:
        return {
            "done": int((self.status == STATUS_DONE).sum()),
            "failed": int((self.status == STATUS_FAILED).sum()),
            "pending": int((self.status == STATUS_PENDING).sum()),
        }
