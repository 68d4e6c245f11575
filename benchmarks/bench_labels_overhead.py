"""Wall time that labels (18 phenotypes in the subject tasks + the disease table read alongside) add
to ``build_store``: best of ``--repeats`` builds with and without labels, same cohort, same workers.

Usage: python benchmarks/bench_labels_overhead.py COHORT_DIR [--workers 2] [--repeats 3]
Target (issue 3): < 15 % extra wall time.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from kspace_sim.build import BuildConfig, build_store
from kspace_sim.simulate import MaskSpec, SimulationParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cohort", type=Path, help="a cohort folder with participants.csv (e.g. a demo cohort)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_labels_overhead_"))
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(args.repeats):
            for labels in (False, True):
                out = tmp / f"labels-{labels}.zarr"
                shutil.rmtree(out, ignore_errors=True)
                cfg = BuildConfig(str(args.cohort), str(out), [MaskSpec("gaussian", 4)], SimulationParams(),
                                  workers=args.workers, progress=False, labels=labels, labels_parquet=str(tmp / "l.parquet"))
                t0 = time.perf_counter()
                build_store(cfg)
                times[labels].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    without, with_ = min(times[False]), min(times[True])
    print(f"without labels: {[round(t, 1) for t in times[False]]} s; with labels: {[round(t, 1) for t in times[True]]} s")
    print(f"best of {args.repeats}: {without:.1f} s -> {with_:.1f} s, labels add {100 * (with_ / without - 1):+.1f} % wall time (target < 15 %)")


if __name__ == "__main__":
    main()
