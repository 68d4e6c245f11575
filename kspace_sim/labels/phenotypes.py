"""The 18 phenotypes of one subject from its full-resolution segmentations.

:func:`subject_phenotypes` validates the label maps of a :class:`SubjectVolumes` and combines
the pure-array functions of :mod:`kspace_sim.labels.ventricles` (10 ventricular phenotypes from
``seg_sa``) and :mod:`kspace_sim.labels.atria` (8 atrial phenotypes from ``seg_la_2ch`` and
``seg_la_4ch``). Missing segmentations and QC failures give NaN with a reason; label values
outside the UK Biobank conventions raise :class:`SubjectError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from kspace_sim.labels.atria import ATRIAL_COLUMNS, atrial_phenotypes, long_axis_from_sax
from kspace_sim.labels.ventricles import VENTRICULAR_COLUMNS, ventricular_phenotypes
from kspace_sim.sources.subject import SubjectError, SubjectVolumes

__all__ = [
    "PHENOTYPE_COLUMNS",
    "PHENOTYPE_UNITS",
    "PhenotypeResult",
    "atrial_label_values",
    "check_labels",
    "subject_phenotypes",
]

PHENOTYPE_COLUMNS: tuple[str, ...] = VENTRICULAR_COLUMNS + ATRIAL_COLUMNS
PHENOTYPE_UNITS: tuple[str, ...] = tuple(re.search(r"\(([^)]*)\)$", c).group(1) for c in PHENOTYPE_COLUMNS)  # type: ignore[union-attr]

# Highest label value allowed per segmentation (UK Biobank conventions, REFERENCES.md).
_MAX_LABEL = {"seg_sa": 3, "seg_la_2ch": 1, "seg_la_4ch": 5}


@dataclass
class PhenotypeResult:
    """``values``: (18,) float32 in the order of :data:`PHENOTYPE_COLUMNS`, NaN = missing;
    ``reasons``: one line per missing group (missing file, QC rule, invalid dt)."""

    values: np.ndarray
    reasons: list[str] = field(default_factory=list)


def check_labels(name: str, seg: np.ndarray) -> int:
    """Raise :class:`SubjectError` unless ``seg`` holds only the labels allowed for ``name``;
    returns its highest label."""
    top = int(seg.max()) if seg.size else 0
    if top > _MAX_LABEL[name] or (seg.size and int(seg.min()) < 0):
        found = np.unique(seg)
        raise SubjectError(
            f"{name} has unexpected label values {found.tolist()} "
            f"(UK Biobank labels 0..{_MAX_LABEL[name]} expected)"
        )
    return top


def atrial_label_values(seg_la_4ch_max: int) -> tuple[int, int]:
    """(LA, RA) label values of a 4ch map: 1, 2 in the 3-class map; 4, 5 in the 6-class variant
    (1 LV, 2 Myo, 3 RV, 4 LA, 5 RA), recognised by any label above 2."""
    return (4, 5) if seg_la_4ch_max > 2 else (1, 2)


def subject_phenotypes(vol: SubjectVolumes, atrial_length_method: str = "ukbb_cardiac") -> PhenotypeResult:
    """The 18 phenotypes of ``vol`` (volumes mL, EF %, LVCO L/min, LVM g).

    ``atrial_length_method``: the atrial length L (``"ukbb_cardiac"``, the published measure, or
    ``"extent"``; :mod:`kspace_sim.labels.atria`).

    Raises:
        SubjectError: a segmentation with label values outside the UK Biobank conventions, or
            with the wrong number of dimensions.
    """
    values = np.full(len(PHENOTYPE_COLUMNS), np.nan)
    reasons: list[str] = []
    segs = vol.segs
    tops = {}
    for name, ndim in (("seg_sa", 4), ("seg_la_2ch", 3), ("seg_la_4ch", 3)):
        if name in segs:
            if segs[name].ndim != ndim:
                raise SubjectError(f"{name} has shape {segs[name].shape}, expected {ndim} dimensions")
            tops[name] = check_labels(name, segs[name])

    def spacing(name: str) -> tuple[float, float, float]:
        return vol.spacing.get(name) or vol.spacing[name[len("seg_") :]]

    def affine(name: str) -> np.ndarray:
        return vol.affines.get(name, vol.affines.get(name[len("seg_") :]))

    n_v = len(VENTRICULAR_COLUMNS)
    if "seg_sa" in segs:
        v = ventricular_phenotypes(segs["seg_sa"], spacing("seg_sa"), vol.dt)
        values[:n_v] = v.values
        reasons += v.reasons
    else:
        reasons.append("ventricles: seg_sa not available")

    sa_affine = vol.affines.get("sa", vol.affines.get("seg_sa"))
    if sa_affine is None:
        reasons.append("atria: no short-axis affine to define the long axis")
    else:
        s2, s4 = segs.get("seg_la_2ch"), segs.get("seg_la_4ch")
        la_label, ra_label = atrial_label_values(tops.get("seg_la_4ch", 0))
        a = atrial_phenotypes(
            None if s2 is None else s2 == 1,
            None if s4 is None else s4 == la_label,
            None if s4 is None else s4 == ra_label,
            None if s2 is None else affine("seg_la_2ch"),
            None if s4 is None else affine("seg_la_4ch"),
            None if s2 is None else spacing("seg_la_2ch"),
            None if s4 is None else spacing("seg_la_4ch"),
            long_axis_from_sax(sa_affine),
            atrial_length_method,
        )
        values[n_v:] = a.values
        reasons += a.reasons
    return PhenotypeResult(values.astype(np.float32), reasons)
