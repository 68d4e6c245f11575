"""Convert a folder of UK Biobank DICOM zips into the UKB NIfTI layout, one Dask task per subject.

``out_dir/<eid>/sa.nii.gz, la_2ch.nii.gz, la_3ch.nii.gz, la_4ch.nii.gz`` (and ``seg_*`` copied
through when a segmentation folder is given). Resumable: a subject whose four image files exist
is skipped. A subject is written into ``out_dir/.tmp-<eid>-<random>/`` and moved into place
only when complete, so no partially written NIfTI is ever visible under ``out_dir/<eid>``; temp
folders left by a killed run are removed at the next start. Per-subject problems
(:class:`SubjectError`) are recorded and the rest goes on; the summary is returned and written
to ``out_dir/conversion_summary.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kspace_sim.cluster import dask_client
from kspace_sim.sources.dicom_zip import load_subject_zips, scan_zip_folder
from kspace_sim.sources.subject import IMAGE_FILES, SubjectError, SubjectVolumes

__all__ = [
    "OUTPUT_FILES",
    "SubjectOutcome",
    "ConvertSummary",
    "outputs_exist",
    "convert_subject",
    "convert_cohort",
    "find_zip_folder",
    "SUMMARY_FILE",
]

OUTPUT_FILES: tuple[str, ...] = tuple(f"{name}.nii.gz" for name in IMAGE_FILES)
SUMMARY_FILE = "conversion_summary.json"
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class SubjectOutcome:
    """What happened to one subject: status ``'converted'``, ``'skipped'`` or ``'failed'``."""

    eid: str
    status: str
    reason: str = ""
    seconds: float = 0.0


@dataclass
class ConvertSummary:
    """Summary of one conversion run (``seconds`` = wall time of the whole run)."""

    input_dir: str
    out_dir: str
    n_subjects: int = 0
    converted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    started: str = ""
    skipped_entries: list[tuple[str, str]] = field(default_factory=list)  # entries that are not subjects' zips
    zip_dir: str = ""  # the folder the zips were read from (input_dir, or its one sub-folder holding them)

    @property
    def subjects_per_second(self) -> float:
        """Converted subjects per second of wall time (skipped ones do not count)."""
        return self.converted / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failed"] = [{"eid": e, "reason": r} for e, r in self.failed]
        d["skipped_entries"] = [{"entry": e, "reason": r} for e, r in self.skipped_entries]
        d["subjects_per_second"] = self.subjects_per_second
        return d


def outputs_exist(subject_dir: str | Path) -> bool:
    """True when all four image files of a converted subject exist."""
    return all((Path(subject_dir) / name).is_file() for name in OUTPUT_FILES)


def _image_dtype(vol: SubjectVolumes) -> type:
    """Smallest integer NIfTI dtype holding every image exactly (float32 for non-integer data)."""
    arrays = list(vol.images.values())
    if not all(np.array_equal(a, np.rint(a)) for a in arrays):
        return np.float32
    lo = min(float(a.min()) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    for dtype in (np.int16, np.uint16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return dtype
    return np.float32


def _publish(tmp: Path, final: Path) -> None:
    """Move a complete subject folder into place (atomic when ``final`` does not exist yet)."""
    if not final.exists():
        os.replace(tmp, final)
        return
    for p in sorted(tmp.iterdir(), key=lambda q: q.name == "sa.nii.gz"):  # sa last
        os.replace(p, final / p.name)
    shutil.rmtree(tmp, ignore_errors=True)


def convert_subject(
    eid: str,
    sa_zip: str | None,
    la_zip: str | None,
    out_dir: str | Path,
    seg_dir: str | Path | None = None,
    overwrite: bool = False,
) -> SubjectOutcome:
    """Convert one subject's zips into ``out_dir/<eid>/`` (runs in a worker; never raises).

    Returns:
        :class:`SubjectOutcome`; a :class:`SubjectError` (or an unexpected exception, with its
        type) becomes ``status='failed'`` with the reason, and nothing is left under ``out_dir``.
    """
    from kspace_sim.sources.nifti import save_subject_nifti

    t0 = time.perf_counter()
    out = Path(out_dir)
    final = out / eid
    if not overwrite and outputs_exist(final):
        return SubjectOutcome(eid, "skipped")
    tmp = out / f"{_TMP_PREFIX}{eid}-{uuid.uuid4().hex[:8]}"
    try:
        vol = load_subject_zips(sa_zip, la_zip, eid, seg_dir=seg_dir)
        save_subject_nifti(vol, tmp, image_dtype=_image_dtype(vol))
        _publish(tmp, final)
    except SubjectError as exc:
        return SubjectOutcome(eid, "failed", str(exc), time.perf_counter() - t0)
    except Exception as exc:  # keep the cohort going; the reason says what broke
        last = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"unexpected {type(exc).__name__}: {exc} ({Path(last.filename).name}:{last.lineno})"
        return SubjectOutcome(eid, "failed", reason, time.perf_counter() - t0)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return SubjectOutcome(eid, "converted", "", time.perf_counter() - t0)


def _remove_stale_temp(out: Path) -> None:
    for p in out.glob(f"{_TMP_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _write_summary(out: Path, summary: ConvertSummary) -> None:
    tmp = out / f"{SUMMARY_FILE}.part"
    tmp.write_text(json.dumps(summary.to_dict(), indent=2))
    os.replace(tmp, out / SUMMARY_FILE)


def find_zip_folder(input_dir: str | Path) -> Path:
    """The folder holding the subjects' zips: ``input_dir`` itself, or its one sub-folder holding
    them (``DEMO/zips`` of ``kspace-sim demo --format dicom --out DEMO``).

    Raises:
        InputError: neither (or several sub-folders hold zips), in one line naming what to pass.
    """
    from kspace_sim.sources.discover import InputError, cohort_folders_below, holds_zips

    root = Path(input_dir)
    if holds_zips(root):
        return root
    below = cohort_folders_below(root)["dicom"]
    if len(below) == 1:
        return below[0]
    if below:
        raise InputError(
            f"no <eid>_20209_2_0.zip / <eid>_20208_2_0.zip in {root} itself, but in {len(below)} sub-folders "
            f"({', '.join(str(p) for p in below)}): pass one of them as --input"
        )
    raise InputError(f"no <eid>_20209_2_0.zip / <eid>_20208_2_0.zip in {root} or its sub-folders")


def convert_cohort(
    input_dir: str | Path,
    out_dir: str | Path,
    workers: int = 2,
    scheduler: str | None = None,
    seg_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    on_failure: Callable[[str, str], None] | None = None,
) -> ConvertSummary:
    """Convert every subject of a zip folder (``<eid>_20209_2_0.zip`` + ``<eid>_20208_2_0.zip``).

    Args:
        input_dir: folder of UKB zips.
        out_dir: NIfTI cohort folder (created).
        workers: Dask worker processes; 0 = serial in this process.
        scheduler: address of an existing Dask scheduler (instead of a local cluster).
        seg_dir: optional ``<eid>/seg_*.nii.gz`` folder whose segmentations are checked and written
            alongside.
        progress: tqdm progress bar.
        overwrite: convert subjects whose outputs exist too.
        on_failure: called with (eid, reason) as failures arrive.

    Returns:
        :class:`ConvertSummary` (also written to ``out_dir/conversion_summary.json``).

    Raises:
        FileNotFoundError: ``input_dir`` does not exist.
        InputError: no subject's zip in ``input_dir`` nor in exactly one of its sub-folders (one
            line, naming the sub-folders that hold zips when there are several); nothing written.
    """
    src, out = Path(input_dir), Path(out_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"input folder {src} does not exist")
    t0 = time.perf_counter()
    zip_dir = find_zip_folder(src)
    subjects, skipped_entries = scan_zip_folder(zip_dir)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp(out)
    summary = ConvertSummary(str(src), str(out), n_subjects=len(subjects),
                             started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                             skipped_entries=skipped_entries, zip_dir=str(zip_dir))
    todo = []
    for eid, z in subjects.items():
        if not overwrite and outputs_exist(out / eid):
            summary.skipped += 1
        else:
            todo.append((eid, str(z.sa_zip) if z.sa_zip else None, str(z.la_zip) if z.la_zip else None))

    def handle(o: SubjectOutcome) -> None:
        if o.status == "converted":
            summary.converted += 1
        elif o.status == "skipped":
            summary.skipped += 1
        else:
            summary.failed.append((o.eid, o.reason))
            if on_failure is not None:
                on_failure(o.eid, o.reason)

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="convert", unit="subj")
    seg = str(seg_dir) if seg_dir else None
    if workers <= 0 or not todo:
        for eid, sa, la in todo:
            handle(convert_subject(eid, sa, la, out, seg, overwrite))
            if bar is not None:
                bar.update(1)
    else:
        from dask.distributed import as_completed

        with dask_client(workers, scheduler) as client:
            futures = [
                client.submit(convert_subject, eid, sa, la, str(out), seg, overwrite, key=f"convert-{eid}", pure=False)
                for eid, sa, la in todo
            ]
            for fut in as_completed(futures):
                handle(fut.result())
                fut.release()
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    summary.failed.sort()
    summary.seconds = time.perf_counter() - t0
    _write_summary(out, summary)
    return summary
