"""The in-memory form of one subject's cine MRI, whatever the source (NIfTI, DICOM zips, demo).

Axes follow nibabel's NIfTI arrays: short axis ``(X, Y, Z, T)``, long axis ``(X, Y, T)``
(the singleton Z of a long-axis NIfTI is squeezed). Affines map voxel indices (i, j, k) to
RAS world coordinates in mm, as in the NIfTI header.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LAX_VIEWS", "SEG_FILES", "IMAGE_FILES", "SubjectVolumes", "SubjectError"]

LAX_VIEWS: tuple[str, ...] = ("la_2ch", "la_3ch", "la_4ch")
IMAGE_FILES: tuple[str, ...] = ("sa", *LAX_VIEWS)
SEG_FILES: tuple[str, ...] = ("seg_sa", "seg_la_2ch", "seg_la_4ch")


class SubjectError(Exception):
    """A problem with one subject's input: reported with the subject id, recorded, skipped."""


@dataclass
class SubjectVolumes:
    """One subject's cine volumes and segmentations.

    Attributes:
        subject_id: the id as given by the source (an eid, or a pseudonym).
        images: ``{"sa": (X, Y, Z, T), "la_2ch" | "la_3ch" | "la_4ch": (X, Y, T)}``, float32 or an
            integer dtype (as stored; the views convert the cropped part to float32).
        affines: 4×4 voxel→RAS (mm) affine for every key of ``images`` and ``segs``.
        segs: ``{"seg_sa": (X, Y, Z, T), "seg_la_2ch": (X, Y, T), "seg_la_4ch": (X, Y, T)}``
            uint8 in UK Biobank label conventions; absent keys = not available.
        spacing: ``{name: (dx, dy, dz)}`` in mm from the headers' pixdim.
        dt: frame interval in seconds of the short axis (pixdim[4] of ``sa``; its TriggerTime
            spacing): the ventricular phenotypes' heart rate and the store's ``subjects/dt``.
        frame_intervals: ``{image name: dt (s)}`` of each view as its source gives it (every cine
            has its own TriggerTime spacing: the long-axis views' differ from the short axis's);
            a view not listed has ``dt`` (:meth:`frame_interval`).
    """

    subject_id: str
    images: dict[str, np.ndarray]
    affines: dict[str, np.ndarray]
    segs: dict[str, np.ndarray] = field(default_factory=dict)
    spacing: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    dt: float = float("nan")
    frame_intervals: dict[str, float] = field(default_factory=dict)

    def frame_interval(self, name: str) -> float:
        """Frame interval (s) of image or segmentation ``name`` (a ``seg_*`` map has its image's)."""
        return float(self.frame_intervals.get(name.removeprefix("seg_"), self.dt))

    @property
    def n_frames(self) -> int:
        return int(self.images["sa"].shape[-1])
