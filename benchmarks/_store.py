"""Benchmark helper: a store to measure on (given with --data, or a synthetic one written with
tests/kmtr_fixtures.py following docs/store-format.md)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def synthetic_store(n: int, t: int, size: int, folder: str | None = None) -> str:
    """Write an ``n``-subject store of 9 × ``t`` × ``size`` × ``size`` into ``folder`` (or a temp dir)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from kmtr_fixtures import write_store

    folder = folder or tempfile.mkdtemp(prefix="kmtr_bench_")
    path = Path(folder) / f"synthetic_n{n}_t{t}_{size}.zarr"
    if not path.exists():
        split = [0] * n
        write_store(path, n=n, t=t, h=size, w=size, status=[1] * n, split=split, masks={"vista_r4": 4.0})
    return str(path)
