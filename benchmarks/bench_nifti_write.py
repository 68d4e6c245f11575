"""Benchmark writing a subject's seven ``.nii.gz`` files (the demo cohort's and ``kspace-sim convert``'s
writer) against the writers it replaced, in the same run.

For ``--subjects`` demo subjects (written once by the demo cohort's own writer and read back, not
timed), each writer writes all seven volumes (``sa``, three long-axis views, three segmentations)
``--repeats`` times; the best time per subject, its ratio to the current writer and the compressed
size are printed. Writers:

* ``write_volume`` (current): one gzip stream at level 1 from ISA-L (``isal``), mtime 0;
* ``zlib level 1, Z_RLE``: the demo cohort's writer before (zlib's run-length strategy);
* ``nibabel save``: ``nib.save`` (zlib through nibabel's gzip file), ``kspace-sim convert``'s writer before.

Every output is decompressed and compared with the image's bytes, so a writer that is fast because it
writes something else fails here.

    python benchmarks/bench_nifti_write.py --subjects 4 --repeats 3
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
from _timing import best_of

from kspace_sim.demo.cohort import demo_eids, write_demo_subject
from kspace_sim.sources.nifti import read_volume, write_volume
from kspace_sim.sources.subject import IMAGE_FILES, SEG_FILES


def _zlib_rle(img: nib.Nifti1Image, path: Path) -> None:
    c = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS, 9, zlib.Z_RLE)
    path.write_bytes(c.compress(img.to_bytes()) + c.flush())


def _nibabel_save(img: nib.Nifti1Image, path: Path) -> None:
    nib.save(img, str(path))


WRITERS: dict[str, Callable[[nib.Nifti1Image, Path], None]] = {
    "write_volume (ISA-L level 1)": write_volume,
    "zlib level 1, Z_RLE (before)": _zlib_rle,
    "nibabel save (convert before)": _nibabel_save,
}


def _subject_images(setup: Path, eid: str) -> list[tuple[str, nib.Nifti1Image]]:
    """One demo subject's seven volumes as the demo cohort writes them, read back into in-memory images
    (their voxels as arrays, their headers as written), as the writers get them in the demo and ``convert``."""
    write_demo_subject(setup, eid)
    out = []
    for name in (*IMAGE_FILES, *SEG_FILES):
        img, arr = read_volume(setup / eid / f"{name}.nii.gz")
        out.append((name, nib.Nifti1Image(arr, img.affine, img.header)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subjects = [_subject_images(Path(tmp) / "setup", e) for e in demo_eids(args.subjects, 0)]
        raw = sum(len(img.to_bytes()) for s in subjects for _, img in s) / len(subjects)
        print(f"{len(subjects)} demo subjects, {raw / 1e6:.1f} MB of NIfTI per subject before compression")
        for label, writer in WRITERS.items():
            folder = Path(tmp) / str(len(rows))
            folder.mkdir()

            def write_all(writer: Callable[[nib.Nifti1Image, Path], None] = writer, folder: Path = folder) -> None:
                for i, images in enumerate(subjects):
                    for name, img in images:
                        writer(img, folder / f"{i}_{name}.nii.gz")

            seconds = best_of(write_all, args.repeats) / len(subjects)
            size = 0
            for i, images in enumerate(subjects):
                for name, img in images:
                    data = (folder / f"{i}_{name}.nii.gz").read_bytes()
                    size += len(data)
                    if gzip.decompress(data) != img.to_bytes():
                        raise AssertionError(f"{label}: {name} does not decompress to the image's bytes")
            rows.append((label, seconds, raw * len(subjects) / size))
    base = rows[0][1]
    print(f"{'writer':32s} {'s / subject':>12s} {'× write_volume':>15s} {'ratio':>6s}")
    for label, seconds, ratio in rows:
        print(f"{label:32s} {seconds:12.3f} {seconds / base:15.2f} {ratio:6.2f}")
    print(f"(cpu: {os.cpu_count()} cores; one process)")


if __name__ == "__main__":
    main()
