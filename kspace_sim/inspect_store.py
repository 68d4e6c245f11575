"""Human-readable description of a store: arrays, subjects, masks and provenance."""

from __future__ import annotations

from typing import Any

import numpy as np

from kspace_sim.store.layout import SPLIT_CODES, STATUS_DONE, STATUS_FAILED, STATUS_PENDING, open_store

__all__ = ["describe_store"]


def describe_store(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Summary dict of a store (no raw subject ids): arrays with shape/dtype, status counts,
    failures (ids as stored), masks with achieved R, provenance attributes."""
    g = open_store(url, "r", storage_options)
    arrays = {}

    def walk(grp: Any, prefix: str = "") -> None:
        for name, item in grp.members():
            key = f"{prefix}{name}"
            if hasattr(item, "shape"):
                arrays[key] = {"shape": tuple(item.shape), "dtype": str(item.dtype)}
            else:
                walk(item, key + "/")

    walk(g)
    status = g["subjects/status"][:]
    reason = g["subjects/reason"][:]
    ids = g["subjects/id"][:]
    split = g["subjects/split"][:]
    attrs = g.attrs.asdict()
    return {
        "url": url,
        "arrays": arrays,
        "n_subjects": int(status.size),
        "done": int((status == STATUS_DONE).sum()),
        "failed": [(str(ids[i]), str(reason[i])) for i in np.flatnonzero(status == STATUS_FAILED)],
        "pending": int((status == STATUS_PENDING).sum()),
        "splits": {k: int(((split == v) & (status == STATUS_DONE)).sum()) for k, v in SPLIT_CODES.items()},
        "masks": attrs.get("masks", {}),
        "attrs": {k: v for k, v in attrs.items() if k not in ("masks", "builds")},
        "builds": attrs.get("builds", []),
    }
