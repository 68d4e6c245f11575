"""Benchmark helper: a store to measure on (given with --data, or a synthetic one written with
tests/kmtr_fixtures.py following docs/store-format.md)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path


def synthetic_store(n: int, t: int, size: int, folder: str | None = None, n_coils: int | None = None,
                    snr_db: float | None = 20.0) -> str:
    """Write an ``n``-subject store of 9 × ``t`` × ``size`` × ``size`` into ``folder`` (or a temp dir);
    with ``n_coils`` a store with coils (format 2, the same k-space as without: maps and noise
    parameters from the simulator's coil code, noise at ``snr_db``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from kmtr_fixtures import write_store

    folder = folder or tempfile.mkdtemp(prefix="kmtr_bench_")
    coils = f"_c{n_coils}_snr{snr_db}" if n_coils is not None else ""
    path = Path(folder) / f"synthetic_n{n}_t{t}_{size}{coils}.zarr"
    if not path.exists():
        split = [0] * n
        write_store(path, n=n, t=t, h=size, w=size, status=[1] * n, split=split, masks={"vista_r4": 4.0},
                    n_coils=n_coils, snr_db=snr_db)
    return str(path)
