"""Benchmark ``kspace-sim convert``: N demo subjects as UKB DICOM zips → UKB NIfTI layout.

Setup (not timed, cached in ``--work`` so that reruns start at once): the demo cohort in the
NIfTI layout, then exported as ``<eid>_20209_2_0.zip`` / ``<eid>_20208_2_0.zip``. Timed: a fresh
conversion of all zips (Dask, ``--workers`` processes, including cluster start-up), reported as
subjects/s; one subject is then checked against its source (voxels exact, geometry ≤ 1e-4).

    python benchmarks/bench_convert.py --subjects 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from kspace_sim.demo import write_demo_cohort
from kspace_sim.demo.dicom_export import export_cohort_dicom
from kspace_sim.sources.dicom_convert import convert_cohort
from kspace_sim.sources.nifti import load_subject_nifti
from kspace_sim.sources.subject import IMAGE_FILES


def _check(ref_dir: Path, out_dir: Path) -> float:
    """Largest affine/spacing/dt error (voxels must match exactly)."""
    a, b = load_subject_nifti(ref_dir), load_subject_nifti(out_dir)
    err = abs(a.dt - b.dt)
    for name in IMAGE_FILES:
        if not np.array_equal(a.images[name], b.images[name]):
            raise AssertionError(f"{name}: voxel data differ after the round trip")
        err = max(err, float(np.abs(a.affines[name] - b.affines[name]).max()),
                  float(np.abs(np.subtract(a.spacing[name], b.spacing[name])).max()))
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=100, help="number of demo subjects (default 100)")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes for the conversion (0 = serial)")
    ap.add_argument("--setup-workers", type=int, default=2, help="processes for generating/exporting the cohort")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kspace_sim_bench_convert",
                    help="cache folder for the demo NIfTI cohort and its zips")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    nifti, zips, out = args.work / "nifti", args.work / "zips", args.work / "converted"
    t0 = time.perf_counter()
    eids = write_demo_cohort(nifti, args.subjects, seed=args.seed, workers=args.setup_workers, progress=True)
    t_demo = time.perf_counter() - t0
    keep = set(eids)
    src = args.work / "nifti_subset"  # export exactly these subjects even if the cache holds more
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    for eid in eids:
        os.symlink((nifti / eid).resolve(), src / eid)
    t0 = time.perf_counter()
    export_cohort_dicom(src, zips, workers=args.setup_workers, progress=True)
    t_export = time.perf_counter() - t0
    run_zips = args.work / "zips_subset"
    if run_zips.exists():
        shutil.rmtree(run_zips)
    run_zips.mkdir()
    for z in zips.glob("*_2020[89]_2_0.zip"):
        if z.name.split("_")[0] in keep:
            os.symlink(z.resolve(), run_zips / z.name)
    zip_bytes = sum(z.stat().st_size for z in run_zips.iterdir())

    if out.exists():
        shutil.rmtree(out)
    summary = convert_cohort(run_zips, out, workers=args.workers, progress=True)
    err = _check(nifti / eids[0], out / eids[0])
    result = {
        "benchmark": "convert",
        "subjects": summary.n_subjects,
        "converted": summary.converted,
        "failed": len(summary.failed),
        "workers": args.workers,
        "seconds": round(summary.seconds, 2),
        "subjects_per_second": round(summary.subjects_per_second, 3),
        "seconds_per_subject_per_worker": round(summary.seconds * max(args.workers, 1) / max(summary.converted, 1), 2),
        "zip_mib_per_subject": round(zip_bytes / 2**20 / max(summary.n_subjects, 1), 1),
        "round_trip_max_geometry_error": err,
        "setup_seconds": {"demo_cohort": round(t_demo, 1), "dicom_export": round(t_export, 1)},
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "python": platform.python_version(),
    }
    print(f"converted {summary.converted}/{summary.n_subjects} subjects in {summary.seconds:.1f} s "
          f"with {args.workers} workers: {summary.subjects_per_second:.3f} subjects/s")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
