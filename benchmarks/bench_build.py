"""Build throughput: the project's pipeline against a naive reference and the I/O + FFT floor.

All three process the same demo cohort at full UK Biobank size (9 × 50 × 128 × 128 per subject)
with the same number of worker processes, in one run:

- floor: read the input NIfTI files (raw data), an unshifted FFT of a same-shape complex64
  array, and a raw write (``ndarray.tofile``) of as many bytes as the store holds per subject;
- naive: nibabel ``get_fdata`` (float64), the same view extraction and phase, numpy
  ``fftshift(fft2(ifftshift(x)))`` in complex128, the same masks, a zarr write with default settings;
- pipeline: ``kspace_sim.build.build_store`` on a Dask LocalCluster (cluster start-up excluded,
  everything else included: checksums, subject table, metadata consolidation).

The pipeline runs twice, without and with labels (phenotypes in the same task, the disease table
read alongside), to measure the wall time labels add.

Usage: python benchmarks/bench_build.py [--subjects 24] [--workers 2] [--mask gaussian] [--mask-bank 0]
Targets: pipeline >= 0.7 × floor and >= 2 × naive, peak memory per worker < 2 GB (issue 2);
labels add < 15 % wall time (issue 3).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.fft
import zarr

from kspace_sim.build import BuildConfig, build_store
from kspace_sim.demo import write_demo_cohort
from kspace_sim.phase import apply_phase, smooth_phase_map
from kspace_sim.seeding import derive_rng
from kspace_sim.simulate import MaskSpec, SimulationParams, subject_masks
from kspace_sim.sources.nifti import load_subject_nifti
from kspace_sim.views import extract_views

FILES = ("sa", "la_2ch", "la_3ch", "la_4ch", "seg_sa", "seg_la_2ch", "seg_la_4ch")
SHAPE = (9, 50, 128, 128)


def _floor_subject(args: tuple[str, str]) -> int:
    subject_dir, out_dir = args
    for name in FILES:
        np.asarray(nib.load(str(Path(subject_dir) / f"{name}.nii.gz")).dataobj)
    x = np.ones(SHAPE, dtype=np.complex64)
    k = scipy.fft.fft2(x, axes=(-2, -1), overwrite_x=True)
    seg = np.zeros(SHAPE, dtype=np.uint8)
    mask = np.zeros(SHAPE[:3], dtype=bool)
    with open(Path(out_dir) / Path(subject_dir).name, "wb") as f:
        k.tofile(f)
        seg.tofile(f)
        mask.tofile(f)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _naive_subject(args: tuple[str, str, str, int]) -> int:
    subject_dir, out_dir, pattern, bank = args
    vol = load_subject_nifti(subject_dir)
    for name in list(vol.images):  # nibabel's float64 path
        img = nib.load(str(Path(subject_dir) / f"{name}.nii.gz")).get_fdata()
        vol.images[name] = img if img.ndim == 4 and name == "sa" else img[:, :, 0, :]
    views = extract_views(vol)
    phase = np.stack([smooth_phase_map((128, 128), derive_rng(0, vol.subject_id, "phase", i)) for i in range(9)])
    x = apply_phase(views.images.astype(np.float64), phase).astype(np.complex128)
    ax = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax), axes=ax).astype(np.complex64)
    masks = subject_masks(vol.subject_id, [MaskSpec(pattern, 4, bank_size=bank)], 0, 9, 50, 128)
    root = zarr.open_group(str(Path(out_dir) / f"{vol.subject_id}.zarr"), mode="w")
    root.create_array("kspace", data=k, chunks=(1, 50, 128, 128))
    root.create_array("seg", data=views.seg, chunks=(1, 50, 128, 128))
    for name, m in masks.items():
        root.create_array(name, data=m)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _pool(fn, jobs, workers: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(workers) as ex:
        rss = list(ex.map(fn, jobs))
    return time.perf_counter() - t0, max(rss)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mask", default="gaussian")
    ap.add_argument("--mask-bank", type=int, default=0, help="pattern bank size (16 is the build's default for vista)")
    ap.add_argument("--cohort", type=Path, default=None, help="existing demo cohort, all of it (else --subjects are generated)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        cohort = args.cohort or tmp / "cohort"
        if args.cohort is None:
            t0 = time.perf_counter()
            write_demo_cohort(cohort, args.subjects, seed=0, workers=args.workers)
            print(f"demo cohort: {args.subjects} subjects generated in {time.perf_counter() - t0:.1f} s")
        subjects = sorted(p for p in cohort.iterdir() if p.is_dir())  # the pipeline builds the whole folder
        n = len(subjects)
        # warm the page cache equally for every contender
        for p in subjects:
            for f in p.iterdir():
                f.read_bytes()

        (tmp / "floor").mkdir()
        t_floor, rss_floor = _pool(_floor_subject, [(str(p), str(tmp / "floor")) for p in subjects], args.workers)
        (tmp / "naive").mkdir()
        t_naive, rss_naive = _pool(_naive_subject, [(str(p), str(tmp / "naive"), args.mask, args.mask_bank) for p in subjects], args.workers)

        from dask.distributed import Client, LocalCluster

        spec = MaskSpec(args.mask, 4, bank_size=args.mask_bank)
        timings = {}
        for labels in (False, True):
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
                cfg = BuildConfig(
                    input_dir=str(cohort), out=str(tmp / f"store-{labels}.zarr"), masks=[spec], params=SimulationParams(),
                    workers=args.workers, scheduler=cluster.scheduler_address, progress=False, labels=labels,
                )
                t0 = time.perf_counter()
                report = build_store(cfg)
                timings[labels] = time.perf_counter() - t0
                rss_pipe = max(client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss).values())
            assert report.done == n, report.failed
        t_pipe = timings[False]

        def rate(t: float) -> float:
            return n / t

        print(f"\n{n} subjects of 9 × 50 × 128 × 128, {args.workers} worker processes, mask {args.mask}_r4")
        print(f"{'':10s} {'subjects/s':>11s} {'wall s':>8s} {'peak RSS/worker':>16s}")
        for name, t, rss in (("floor", t_floor, rss_floor), ("naive", t_naive, rss_naive), ("pipeline", t_pipe, rss_pipe)):
            print(f"{name:10s} {rate(t):11.2f} {t:8.1f} {rss / 1024:13.0f} MB")
        print(f"\npipeline / floor = {rate(t_pipe) / rate(t_floor):.2f}  (target >= 0.7)")
        print(f"pipeline / naive = {rate(t_pipe) / rate(t_naive):.2f}  (target >= 2)")
        print(f"peak memory per pipeline worker = {rss_pipe / 1024:.0f} MB (target < 2048 MB)")
        extra = timings[True] / timings[False] - 1
        print(f"labels (18 phenotypes + disease table) in the same pass: {timings[True]:.1f} s vs {timings[False]:.1f} s, "
              f"+{100 * extra:.1f} % wall time (target < 15 %)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
