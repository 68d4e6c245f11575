"""Benchmark of the atrial length: ukbb_cardiac's digital-line length against the extent measure.

Times :func:`kspace_sim.labels.phenotypes.subject_phenotypes` (all 18 phenotypes: what a build task
runs per subject) with ``atrial_length_method="ukbb_cardiac"`` (the default, published measure)
and ``"extent"`` (the earlier measure) on the same demo phantoms, interleaved, best of ``--repeat``
passes, and prints the ratio; also the mean atrial phenotypes of both and of the analytic truth.

Run: ``python benchmarks/bench_atrial_length.py [--cohort DIR] [--subjects 8] [--repeat 3]``
(``--cohort``: an existing demo cohort folder, e.g. ``~/.cache/kspace_sim/demo/n64_seed0``;
without it, ``--subjects`` phantoms are generated in memory).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kspace_sim.labels.phenotypes import PHENOTYPE_COLUMNS, subject_phenotypes  # noqa: E402

METHODS = ("ukbb_cardiac", "extent")


def _subjects(cohort: Path | None, n: int) -> list:
    if cohort is not None:
        from kspace_sim.sources.nifti import load_subject_nifti

        dirs = sorted(p for p in cohort.iterdir() if (p / "sa.nii.gz").exists())[:n]
        return [load_subject_nifti(d) for d in dirs]
    from kspace_sim.demo import demo_eids, demo_subject

    return [demo_subject(e, 0)[0] for e in demo_eids(n, 0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, default=None)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    vols = _subjects(args.cohort, args.subjects)
    best = {m: float("inf") for m in METHODS}
    values: dict[str, np.ndarray] = {}
    for _ in range(args.repeat):
        for m in METHODS:
            t0 = time.perf_counter()
            out = [subject_phenotypes(v, atrial_length_method=m).values for v in vols]
            best[m] = min(best[m], time.perf_counter() - t0)
            values[m] = np.asarray(out, dtype=np.float64)
    n = len(vols)
    for m in METHODS:
        print(f"{m:13s} {1000 * best[m] / n:7.1f} ms/subject (18 phenotypes, best of {args.repeat})")
    print(f"ratio ukbb_cardiac / extent: {best['ukbb_cardiac'] / best['extent']:.2f}x")
    print(f"{'mean over ' + str(n) + ' subjects':24s} {'ukbb_cardiac':>12s} {'extent':>8s}")
    for i, col in enumerate(PHENOTYPE_COLUMNS[10:], start=10):
        print(f"{col:24s} {values['ukbb_cardiac'][:, i].mean():12.2f} {values['extent'][:, i].mean():8.2f}")


if __name__ == "__main__":
    main()
