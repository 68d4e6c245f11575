"""Find the subjects of an input folder: UK Biobank NIfTI subject folders (or DICOM zips)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from kspace_sim.sources.nifti import is_nifti_subject_dir, load_subject_nifti
from kspace_sim.sources.subject import SubjectVolumes

__all__ = ["SubjectSource", "discover_subjects", "InputError"]


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


def discover_subjects(input_dir: str | Path, seg_dir: str | Path | None = None) -> list[SubjectSource]:
    """Subjects of ``input_dir``, sorted by id.

    NIfTI layout: every sub-folder holding ``sa.nii.gz`` is a subject (folders without it are
    reported by the build as failed only if they look like subjects: they hold other ``*.nii*``
    files). DICOM layout: ``<eid>_20209_2_0.zip`` (+ ``<eid>_20208_2_0.zip``).

    Raises:
        InputError: the folder does not exist or holds no subject.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise InputError(f"input folder {root} does not exist")
    if any(root.glob("*_2020[89]_*.zip")):
        from kspace_sim.sources.dicom_zip import discover_zip_subjects

        found = discover_zip_subjects(root)
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
    else:
        sources = [
            SubjectSource(p.name, "nifti", str(p))
            for p in sorted(root.iterdir())
            if p.is_dir() and (is_nifti_subject_dir(p) or any(p.glob("*.nii*")))
        ]
    if not sources:
        raise InputError(f"no subjects found in {root} (expected <id>/sa.nii.gz folders or UKB zips)")
    return sources
