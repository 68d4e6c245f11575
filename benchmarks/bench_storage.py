"""Storage options: store size and read throughput for complex64 vs float16, zstd on/off.

Builds the same demo cohort (full size: 9 × 50 × 128 × 128 per subject, ``SimulationParams()``
defaults) into four stores — complex64 / float16 storage × no compression / zstd — then, for each:

- size: bytes of the ``kspace`` array on disk and of the whole store;
- read throughput: subjects/s reading every done subject's full ``kspace`` row through zarr and
  decoding it to complex64 (float16: ``decode_float16`` with the subject's scale); one untimed pass
  first, so the numbers are for a warm page cache (the store fits in memory): they measure
  decoding, not the disk;
- float16 error: the image-domain NRMSE of the float16 store against the complex64 store, per
  subject (mean and max), next to the value the build recorded.

Usage: python benchmarks/bench_storage.py [--subjects 16] [--input COHORT] [--out DIR] [--repeats 3]
Prints a Markdown table (pasted into data_manifests/README.md).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

from kspace_sim.build import BuildConfig, build_store
from kspace_sim.simulate import MaskSpec, SimulationParams
from kspace_sim.store.kspace_codec import decode_float16, image_nrmse

CONFIGS = (("complex64", "none"), ("complex64", "zstd"), ("float16", "none"), ("float16", "zstd"))


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def read_all(store: Path) -> tuple[list[np.ndarray], float]:
    """Read and decode every done subject's ``kspace`` row; returns (rows, seconds)."""
    g = zarr.open_group(str(store), mode="r")
    rows = np.flatnonzero(g["subjects/status"][:] == 1)
    scale = g["subjects/kspace_scale"][:]
    k = g["kspace"]
    float16 = k.attrs.get("storage") == "float16"
    out = []
    t0 = time.perf_counter()
    for r in rows:
        x = k[int(r)]
        out.append(decode_float16(x, float(scale[r])) if float16 else x)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, default=16)
    ap.add_argument("--input", type=Path, default=None, help="cohort folder (default: a demo cohort written here)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the four stores (default: a temp dir, removed)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_storage_"))
    work.mkdir(parents=True, exist_ok=True)
    cohort = args.input
    if cohort is None:
        from kspace_sim.demo import write_demo_cohort

        cohort = work / "cohort"
        write_demo_cohort(cohort, args.subjects, seed=args.seed, workers=1)
    params = SimulationParams()
    results = []
    reference: list[np.ndarray] | None = None
    try:
        for storage, compression in CONFIGS:
            out = work / f"{storage}-{compression}.zarr"
            if out.exists():
                shutil.rmtree(out)
            t0 = time.perf_counter()
            rep = build_store(
                BuildConfig(
                    input_dir=str(cohort), out=str(out), masks=[MaskSpec("gaussian", 4)], params=params, seed=args.seed,
                    workers=0, storage=storage, compression=compression, progress=False,
                )
            )
            build_s = time.perf_counter() - t0
            read_all(out)  # warm-up
            best = min(read_all(out)[1] for _ in range(args.repeats))
            rows, _ = read_all(out)
            nrmse = None
            if storage == "complex64" and compression == "none":
                reference = rows
            elif storage == "float16" and reference is not None:
                errs = [image_nrmse(a, b) for a, b in zip(reference, rows)]
                nrmse = (float(np.mean(errs)), float(np.max(errs)))
            n = len(rows)
            results.append(
                {
                    "storage": storage,
                    "compression": compression,
                    "subjects": n,
                    "kspace_mib": _bytes(out / "kspace") / 2**20,
                    "store_mib": _bytes(out) / 2**20,
                    "per_subject_mib": _bytes(out / "kspace") / 2**20 / max(n, 1),
                    "read_sps": n / best,
                    "read_mib_s": _bytes(out / "kspace") / 2**20 / best,
                    "build_s": build_s,
                    "nrmse": nrmse,
                    "recorded": rep.float16_image_nrmse,
                }
            )
            print(results[-1], flush=True)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)
    base = results[0]["kspace_mib"]
    print()
    print(f"{results[0]['subjects']} demo subjects, 9 × 50 × 128 × 128 each; warm page cache; 1 thread")
    print()
    print("| storage | compression | kspace MiB/subject | vs complex64 | store MiB | read subjects/s | read MiB/s (on disk) | image NRMSE (mean / max) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        err = f"{r['nrmse'][0]:.2e} / {r['nrmse'][1]:.2e}" if r["nrmse"] else ("0 (exact)" if r["storage"] == "complex64" else "n/a")
        print(
            f"| {r['storage']} | {r['compression']} | {r['per_subject_mib']:.1f} | {r['kspace_mib'] / base:.2f} × | "
            f"{r['store_mib']:.0f} | {r['read_sps']:.1f} | {r['read_mib_s']:.0f} | {err} |"
        )


if __name__ == "__main__":
    main()
