"""DataLoader throughput (subjects/s) against a raw zarr read of the same arrays.

The raw read is ``kspace[row, :, frames]``, ``masks/<mask>[row, :, frames]`` and ``seg[row, :, frames]``
per subject with zarr; the DataLoader path is :class:`kmtr.data.KSpaceDataset` (no augmentation)
through ``torch.utils.data.DataLoader`` including collation. Target: ratio ≥ 0.8.

    python benchmarks/bench_dataloader.py [--data STORE] [--frames 5] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks._store import synthetic_store  # noqa: E402
from kmtr.data import KSpaceDataset, frame_indices  # noqa: E402
from kmtr.store import open_store, read_store_info  # noqa: E402


def raw_read(data: str, rows: np.ndarray, mask: str, frames: int | None) -> float:
    g = open_store(data)
    info = read_store_info(g, data)
    idx = frame_indices(info.t, frames)
    step = int(idx[1] - idx[0]) if len(idx) > 1 else 1
    sel = slice(int(idx[0]), int(idx[-1]) + 1, step)
    t0 = time.perf_counter()
    for row in rows:
        g["kspace"][row, :, sel]
        g[f"masks/{mask}"][row, :, sel]
        if info.has_seg:
            g["seg"][row, :, sel]
    return len(rows) / (time.perf_counter() - t0)


def loader_read(data: str, mask: str, frames: int | None, workers: int, batch: int) -> float:
    ds = KSpaceDataset(data, "all", mask, frames, with_labels=True)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        n += b["kspace"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="store (default: a synthetic 9 x 50 x 128 x 128 store)")
    ap.add_argument("--subjects", type=int, default=12, help="synthetic store size")
    ap.add_argument("--mask", default="vista_r4")
    ap.add_argument("--frames", type=int, nargs="*", default=[0, 5], help="0 = all frames")
    ap.add_argument("--workers", type=int, nargs="*", default=[0, 1])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = args.data or synthetic_store(args.subjects, 50, 128)
    info = read_store_info(open_store(data), data)
    rows = info.rows("all")
    mb = info.s * info.t * info.h * info.w * 9 / 1e6
    print(f"store {data}: {len(rows)} subjects of (S, T, H, W) = ({info.s}, {info.t}, {info.h}, {info.w}), "
          f"{mb:.0f} MB read per subject (kspace + seg) at all frames; {os.cpu_count()} CPUs", flush=True)
    raw_read(data, rows, args.mask, None)  # warm the page cache
    for f in args.frames:
        frames = f or None
        raw = max(raw_read(data, rows, args.mask, frames) for _ in range(args.repeats))
        print(f"frames={f or info.t}: raw zarr read {raw:.2f} subjects/s", flush=True)
        for w in args.workers:
            dl = max(loader_read(data, args.mask, frames, w, args.batch) for _ in range(args.repeats))
            print(f"frames={f or info.t}: DataLoader workers={w} batch={args.batch}: {dl:.2f} subjects/s "
                  f"= {dl / raw:.2f} x raw", flush=True)


if __name__ == "__main__":
    main()
