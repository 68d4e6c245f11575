"""Find the subjects of an input folder: UK Biobank NIfTI subject folders (or DICOM zips)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from kspace_sim.sources.nifti import is_nifti_subject_dir, load_subject_nifti
from kspace_sim.sources.subject import SubjectVolumes

__all__ = [
    "SubjectSource",
    "InputScan",
    "InputError",
    "NO_IMAGE_FILES",
    "NOT_A_SUBJECT_FOLDER",
    "scan_input",
    "discover_subjects",
    "cohort_folders_below",
    "holds_zips",
]


class InputError(Exception):
    """An input folder that cannot be used at all (reported before any work)."""


@dataclass(frozen=True)
class SubjectSource:
    """Where one subject's data comes from; :meth:`load` runs inside the worker.

    Attributes:
        subject_id: the id (folder name, or eid of the zips).
        kind: ``'nifti'`` or ``'dicom'``.
        path: the subject folder (nifti) or the short-axis zip (dicom).
        la_zip: the long-axis zip (dicom only).
        seg_dir: folder with ``<id>/seg_*.nii.gz`` for zips (dicom only).
        source_id: the id in the input (raw eid) when ``subject_id`` is a pseudonym.
    """

    subject_id: str
    kind: str
    path: str
    la_zip: str | None = None
    seg_dir: str | None = None
    source_id: str | None = None

    def pseudonymised(self, key: bytes) -> "SubjectSource":
        """The same source under its keyed-hash pseudonym (the raw id is kept only in memory)."""
        from kspace_sim.privacy import pseudonymise

        return replace(self, subject_id=pseudonymise(self.subject_id, key), source_id=self.subject_id)

    def scrub(self, text: str) -> str:
        """``text`` with the raw id replaced by the pseudonym (no-op without pseudonymisation)."""
        return text.replace(self.source_id, self.subject_id) if self.source_id else text

    def load(self) -> SubjectVolumes:
        """Load the subject; the returned volumes carry ``subject_id`` (the pseudonym if any)."""
        raw_id = self.source_id or self.subject_id
        if self.kind == "nifti":
            vol = load_subject_nifti(self.path, raw_id)
        elif self.kind == "dicom":
            from kspace_sim.sources.dicom_zip import load_subject_zips

            vol = load_subject_zips(self.path or None, self.la_zip, raw_id, seg_dir=self.seg_dir)
        else:
            raise ValueError(f"unknown source kind {self.kind!r}")
        vol.subject_id = self.subject_id
        return vol


NO_IMAGE_FILES = "no image files"
NOT_A_SUBJECT_FOLDER = "not a subject folder"
_ZIP_GLOB = "*_2020[89]_*.zip"


@dataclass
class InputScan:
    """Every entry of an input folder accounted for.

    Attributes:
        sources: the subjects, sorted by id (built, or failed with a reason, later).
        skipped: ``(entry name, reason)`` for every other entry, sorted by name; the reason starts
            with ``"no image files"`` or ``"not a subject folder"`` (or, for zip input, says why a
            file is not a subject's zip), with a hint where the entry holds a cohort itself.
        layout: ``'nifti'`` or ``'dicom'``.
    """

    sources: list[SubjectSource]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    layout: str = "nifti"


def holds_zips(folder: Path) -> bool:
    """True when ``folder`` holds UK Biobank cine zips (``<eid>_2020[89]_*.zip``)."""
    return folder.is_dir() and any(folder.glob(_ZIP_GLOB))


def holds_nifti_subjects(folder: Path) -> bool:
    """True when a sub-folder of ``folder`` is a NIfTI subject (holds ``sa.nii.gz``)."""
    return folder.is_dir() and any(p.is_dir() and is_nifti_subject_dir(p) for p in folder.iterdir())


def cohort_folders_below(root: str | Path) -> dict[str, list[Path]]:
    """The immediate sub-folders of ``root`` that hold a cohort: ``{'dicom': [...], 'nifti': [...]}``
    (e.g. ``DEMO/zips`` and ``DEMO/nifti`` of ``kspace-sim demo --format dicom --out DEMO``)."""
    root = Path(root)
    out: dict[str, list[Path]] = {"dicom": [], "nifti": []}
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir()):
        if p.is_dir() and not p.name.startswith("."):
            if holds_zips(p):
                out["dicom"].append(p)
            if holds_nifti_subjects(p):
                out["nifti"].append(p)
    return out


def _classify_folder(p: Path) -> str | None:
    """None when ``p`` is a NIfTI subject folder (``sa.nii.gz`` or any ``*.nii*``), else why not."""
    if p.name.startswith("."):
        return f"{NOT_A_SUBJECT_FOLDER} (hidden)"
    if is_nifti_subject_dir(p) or any(p.glob("*.nii*")):
        return None
    if holds_zips(p):
        return f"{NO_IMAGE_FILES} (it holds UK Biobank DICOM zips: pass it as --input)"
    if holds_nifti_subjects(p):
        return f"{NOT_A_SUBJECT_FOLDER} (it holds subject folders: pass it as --input)"
    if not any(p.iterdir()):
        return f"{NO_IMAGE_FILES} (empty folder)"
    return f"{NO_IMAGE_FILES} (no .nii/.nii.gz file)"


def scan_input(input_dir: str | Path, seg_dir: str | Path | None = None) -> InputScan:
    """Subjects of ``input_dir`` and every other entry with the reason it is not one.

    NIfTI layout: every sub-folder holding ``sa.nii.gz`` is a subject, and so is one holding other
    ``*.nii*`` files (its build then fails, naming the missing view); an empty sub-folder or one
    without NIfTI files is skipped with ``"no image files"``, a hidden one or a plain file with
    ``"not a subject folder"``. DICOM layout (the folder holds ``<eid>_2020[89]_*.zip``):
    ``<eid>_20209_2_0.zip`` (+ ``<eid>_20208_2_0.zip``) per subject, every other entry skipped
    with its reason (:func:`kspace_sim.sources.dicom_zip.scan_zip_folder`).

    Raises:
        InputError: the folder does not exist or holds no subject (one line, naming the
            sub-folders that hold a cohort when there are some).
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"input folder {root} does not exist")
    if holds_zips(root):
        from kspace_sim.sources.dicom_zip import scan_zip_folder

        found, skipped = scan_zip_folder(root)
        sources = [
            SubjectSource(
                eid,
                "dicom",
                str(z.sa_zip) if z.sa_zip else "",
                str(z.la_zip) if z.la_zip else None,
                str(seg_dir) if seg_dir else None,
            )
            for eid, z in sorted(found.items())
        ]
        scan = InputScan(sources, skipped, "dicom")
    else:
        sources, skipped = [], []
        for p in sorted(root.iterdir()):
            if not p.is_dir():
                skipped.append((p.name, f"{NOT_A_SUBJECT_FOLDER} (a file)"))
                continue
            reason = _classify_folder(p)
            if reason is None:
                sources.append(SubjectSource(p.name, "nifti", str(p)))
            else:
                skipped.append((p.name, reason))
        scan = InputScan(sources, skipped, "nifti")
    if not scan.sources:
        below = cohort_folders_below(root)
        hints = [f"UK Biobank zips in {p}" for p in below["dicom"]] + [f"NIfTI subjects in {p}" for p in below["nifti"]]
        if hints:
            raise InputError(f"no subjects in {root} itself ({'; '.join(hints)}): pass one of those folders as --input")
        raise InputError(f"no subjects found in {root} (expected <id>/sa.nii.gz folders or UKB zips)")
    return scan


def discover_subjects(input_dir: str | Path, seg_dir: str | Path | None = None) -> list[SubjectSource]:
    """Subjects of ``input_dir``, sorted by id (:func:`scan_input` without the skipped entries).

    Raises:
        InputError: the folder does not exist or holds no subject.
    """
    return scan_input(input_dir, seg_dir).sources
