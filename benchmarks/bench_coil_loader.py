"""The trainer's loader with on-the-fly coil synthesis, as a ratio to the single-coil loader (subjects/s).

Two stores with the same coil-free k-space (synthetic 9 × 50 × 128 × 128, benchmarks/_store.py, or
``--single``/``--coils-store`` given): a single-coil store (format 1) and the same store with C
birdcage coils and noise at 20 dB (format 2, the simulator's coil code). "Loader" is what a
training step waits for: ``DataLoader`` (batch 2, workers 0, like the tiny preset) plus
:func:`kmtr.data.prepare_batch` on ``--device`` (normalisation and images; for coils also the coil
k-space of the kept frames, its noise and the SENSE-1 image, :mod:`kmtr.coils`). Rows:

* ``train``: fresh noise per epoch, drawn on the device (what training does);
* ``eval``: the stored noise, numpy draw of the store's noise rule in the Dataset (validation,
  prediction; the rule has one sub-stream per view and frame, so only the kept frames are drawn);
* ``cached``: ``data.cache`` on (the tiny preset): a later epoch, no store reads — the synthesis alone.

Each ratio is coil / single-coil in the same mode, same run. Target (issue 25): train ≥ 0.7 on CPU.

    python benchmarks/bench_coil_loader.py [--coils 8] [--frames 5] [--subjects 6] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import DataLoader

from benchmarks._store import synthetic_store
from kmtr.data import KSpaceDataset, prepare_batch


def epoch_rate(ds: KSpaceDataset, device: torch.device, batch: int) -> float:
    """Subjects/s of one pass over ``ds`` (DataLoader + prepare_batch on ``device``)."""
    loader = DataLoader(ds, batch_size=batch, num_workers=0, shuffle=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    n = 0
    for raw in loader:
        out = prepare_batch(raw, device)
        n += out["kspace"].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def rate(data: str, mode: str, frames: int, device: torch.device, batch: int, repeats: int) -> float:
    """Best of ``repeats`` epochs in ``mode`` (train | eval | cached)."""
    noise = "stored" if mode == "eval" else "fresh"
    ds = KSpaceDataset(data, "all", "vista_r4", frames, with_labels=False, cache=mode == "cached", coil_noise=noise)
    if mode == "cached":
        epoch_rate(ds, device, batch)  # fills the cache
    best = 0.0
    for epoch in range(repeats):
        ds.set_epoch(epoch + 1)
        best = max(best, epoch_rate(ds, device, batch))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--single", help="single-coil store (default: synthetic)")
    ap.add_argument("--coils-store", help="the same subjects with coils (default: synthetic)")
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--subjects", type=int, default=6)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--modes", nargs="*", default=["train", "eval", "cached"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--folder", help="where synthetic stores are written (reused when present)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    device = torch.device(args.device)
    single = args.single or synthetic_store(args.subjects, 50, 128, args.folder)
    coils = args.coils_store or synthetic_store(args.subjects, 50, 128, args.folder or str(Path(single).parent),
                                                n_coils=args.coils)
    info = KSpaceDataset(coils, "all", "vista_r4", args.frames, with_labels=False).info
    print(f"stores: {single} | {coils} ({info.coils.summary() if info.coils else 'single-coil'}); "
          f"{len(info.rows('all'))} subjects, (S, T', H, W) = ({info.s}, {args.frames}, {info.h}, {info.w}); "
          f"batch {args.batch}, device {device}, torch threads {torch.get_num_threads()}", flush=True)
    epoch_rate(KSpaceDataset(single, "all", "vista_r4", args.frames, with_labels=False), device, args.batch)  # warm
    for mode in args.modes:
        one = rate(single, mode, args.frames, device, args.batch, args.repeats)
        many = rate(coils, mode, args.frames, device, args.batch, args.repeats)
        print(f"{mode:7s}: single-coil {one:7.2f} subjects/s, {info.n_coils} coils {many:7.2f} subjects/s "
              f"= {many / one:.2f} x", flush=True)


if __name__ == "__main__":
    main()
