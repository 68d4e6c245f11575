"""Atrial phenotypes by the area–length method from long-axis segmentations.

Per frame and per view, the atrium is the largest connected component (8-connectivity) of its
label. Area ``A`` (cm²) = pixels·dx·dy/100. Length ``L`` (cm), by default exactly as ukbb_cardiac's
``evaluate_atrial_area_length`` (REFERENCES.md, "Atria"; ``length_method="ukbb_cardiac"``):

1. sort the atrium's pixels by their world position (the view's affine, z index 0) projected on
   the heart's long axis (the short-axis slice normal, oriented with a positive superior (RAS z)
   component); ``c`` = centroid of the top third (``pixels[int(2n/3):]``), ``b`` = centroid of the
   bottom third (``pixels[:int(n/3)]``), both in pixel-index space (i, j);
2. the major axis ``u = (c − b)/‖c − b‖``; the digital line from ``c − 100·u`` to ``c + 100·u``
   with end points truncated to int, drawn as OpenCV's 8-connected ``cv2.line`` draws it
   (:mod:`kspace_sim.labels.digital_line`, clipped to the image);
3. ``L`` = the world distance (mm → cm) between the first and the last pixel of (line ∩ atrium)
   sorted by their long-axis projection.

Ties in a projection (pixels at the same height, common when the long axis is parallel to a pixel
axis) are broken by the pixels' row-major order (a stable sort; the reference's unstable numpy sort
leaves them to the sorting algorithm). A frame whose line misses the atrium, or whose atrium has
fewer than 3 pixels (no major axis), has no length: the chamber's phenotypes are then missing, with
a reason (the reference skips the frame and leaves a volume of 0 in it).

``length_method="extent"`` is this project's earlier measure, kept only for comparison: the extent
of the whole component along the same major axis (distance between its outermost pixel centres).
It overestimates L wherever the atrium is widest away from its centre line, and so underestimates
the volumes (5–15 % on real UK Biobank data).

Volumes (mL): single plane ``V = 8/(3π)·A²/L``; LA biplane
``V = 8/(3π)·A_4ch·A_2ch / ((L_4ch + L_2ch)/2)``; RA single plane from the 4ch view.
Per chamber: V max, V min, SV = max − min, EF = 100·SV/V max.

Quality control (REFERENCES.md, after ukbb_cardiac): in every frame the area is > 0; no frame
has two components of more than 10 pixels; no pair of consecutive frames (cyclic) has an area
ratio ≥ 2 or ≤ 0.5. A failure makes that chamber's four phenotypes missing, with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from kspace_sim.labels.digital_line import line_pixels

__all__ = [
    "LENGTH_METHODS",
    "ATRIAL_COLUMNS",
    "QC_COMPONENT_PIXELS",
    "QC_MAX_AREA_RATIO",
    "AreaLength",
    "long_axis_from_sax",
    "atrial_area_length",
    "ukbb_cardiac_length_mm",
    "atrial_qc",
    "single_plane_volume",
    "biplane_volume",
    "chamber_summary",
    "atrial_phenotypes",
]

ATRIAL_COLUMNS: tuple[str, ...] = (
    "LAV max (mL)",
    "LAV min (mL)",
    "LASV (mL)",
    "LAEF (%)",
    "RAV max (mL)",
    "RAV min (mL)",
    "RASV (mL)",
    "RAEF (%)",
)
QC_COMPONENT_PIXELS = 10
QC_MAX_AREA_RATIO = 2.0
_AREA_LENGTH_K = 8.0 / (3.0 * np.pi)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
LENGTH_METHODS: tuple[str, ...] = ("ukbb_cardiac", "extent")
_LINE_HALF_LENGTH_PX = 100.0  # the reference draws the line from c − 100·u to c + 100·u


@dataclass
class AreaLength:
    """One atrium in one view, per frame.

    Attributes:
        area_cm2: ``(T,)`` area of the largest component (cm²).
        length_cm: ``(T,)`` length along the major axis (cm); NaN where the area is 0.
        n_large_components: ``(T,)`` number of components with more than 10 pixels.
    """

    area_cm2: np.ndarray
    length_cm: np.ndarray
    n_large_components: np.ndarray


@dataclass
class AtrialResult:
    """``values``: (8,) float64 in the order of :data:`ATRIAL_COLUMNS` (NaN = missing);
    ``reasons``: why values are missing."""

    values: np.ndarray
    reasons: list[str] = field(default_factory=list)


def long_axis_from_sax(affine_sa: np.ndarray) -> np.ndarray:
    """Unit vector (3,) of the heart's long axis in RAS: the short-axis slice normal
    (third affine column), flipped if needed so that it points up (z >= 0)."""
    n = np.asarray(affine_sa, dtype=np.float64)[:3, 2]
    norm = np.linalg.norm(n)
    if not norm > 0:
        raise ValueError("short-axis affine has a zero slice direction")
    n = n / norm
    return -n if n[2] < 0 else n


def _extent_length_mm(ij: np.ndarray, rot: np.ndarray, long_axis: np.ndarray) -> float:
    """``length_method="extent"``: extent (mm) of pixels ``ij`` (n, 2) along their major axis.

    ``rot`` is the (3, 2) in-plane part of the voxel→RAS affine (columns scaled by dx, dy)."""
    pos = ij @ rot.T  # (n, 3) mm, translation irrelevant
    d = pos @ long_axis
    n = d.size
    k = max(1, n // 3)
    order = np.argsort(d, kind="stable")
    axis = pos[order[-k:]].mean(axis=0) - pos[order[:k]].mean(axis=0)
    norm = np.linalg.norm(axis)
    if norm < 1e-9:  # a single pixel, or a component flat across the long axis
        basis, _ = np.linalg.qr(rot)  # fall back to the long axis projected into the plane
        axis = basis @ (basis.T @ long_axis)
        norm = np.linalg.norm(axis)
        if norm < 1e-9:
            axis, norm = rot[:, 0], np.linalg.norm(rot[:, 0])
    proj = pos @ (axis / norm)
    return float(proj.max() - proj.min())


def _world_mm(ij: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World positions (n, 3) in mm of pixel indices ``ij`` (n, 2) at slice index 0."""
    return ij @ affine[:3, :2].T + affine[:3, 3]


def ukbb_cardiac_length_mm(
    atrium: np.ndarray, affine: np.ndarray, long_axis: np.ndarray
) -> float:
    """``length_method="ukbb_cardiac"``: the atrial length (mm) of one frame, as ukbb_cardiac
    measures it (steps 1–3 of the module docstring).

    Args:
        atrium: ``(X, Y)`` bool, the atrium (its largest connected component) in the full view.
        affine: 4×4 voxel→RAS (mm) affine of the view.
        long_axis: (3,) unit vector, see :func:`long_axis_from_sax`.

    Returns:
        L in mm; NaN when the atrium has fewer than 3 pixels or the line misses it.
    """
    return _line_length_mm(atrium, (0, 0), atrium.shape, np.asarray(affine, dtype=np.float64), long_axis)


def _line_length_mm(
    atrium: np.ndarray, offset: tuple[int, int], view_shape: tuple[int, ...], affine: np.ndarray, long_axis: np.ndarray
) -> float:
    """:func:`ukbb_cardiac_length_mm` of an atrium given as a crop ``atrium`` whose pixel (0, 0) is
    pixel ``offset`` of a view of ``view_shape`` (X, Y): the line is clipped to the whole view."""
    ij = np.argwhere(atrium) + np.asarray(offset)  # row-major, as np.nonzero
    n = ij.shape[0]
    if n < 3:
        return float("nan")
    order = np.argsort(_world_mm(ij.astype(np.float64), affine) @ long_axis, kind="stable")
    top = ij[order[(2 * n) // 3 :]].mean(axis=0)
    bottom = ij[order[: n // 3]].mean(axis=0)
    axis = top - bottom
    norm = float(np.hypot(axis[0], axis[1]))
    if not norm > 0:
        return float("nan")
    u = axis / norm
    p = top + _LINE_HALF_LENGTH_PX * u
    q = top - _LINE_HALF_LENGTH_PX * u
    # OpenCV points are (x = column = j, y = row = i); int() truncates towards zero as in the reference
    line = line_pixels((int(q[1]), int(q[0])), (int(p[1]), int(p[0])), (int(view_shape[0]), int(view_shape[1])))
    local = line - np.asarray(offset)
    inside = (local[:, 0] >= 0) & (local[:, 0] < atrium.shape[0]) & (local[:, 1] >= 0) & (local[:, 1] < atrium.shape[1])
    hit = line[inside][atrium[local[inside, 0], local[inside, 1]]]
    if hit.shape[0] == 0:
        return float("nan")
    hit = hit[np.lexsort((hit[:, 1], hit[:, 0]))]  # row-major, as np.nonzero of the line image
    world = _world_mm(hit.astype(np.float64), affine)
    along = np.argsort(world @ long_axis, kind="stable")
    return float(np.linalg.norm(world[along[-1]] - world[along[0]]))


def atrial_area_length(
    mask: np.ndarray,
    affine: np.ndarray,
    spacing_mm: tuple[float, float, float],
    long_axis: np.ndarray,
    length_method: str = "ukbb_cardiac",
) -> AreaLength:
    """Area and length of one atrium in one long-axis view, per frame.

    Args:
        mask: ``(X, Y, T)`` bool, the atrium's label.
        affine: 4×4 voxel→RAS (mm) affine of the view.
        spacing_mm: ``(dx, dy, dz)`` of the view (mm); dx, dy give the pixel area.
        long_axis: (3,) unit vector, see :func:`long_axis_from_sax`.
        length_method: ``"ukbb_cardiac"`` (the published measure, default) or ``"extent"``
            (the whole component's extent along the major axis; see the module docstring).

    Returns:
        :class:`AreaLength` with ``(T,)`` arrays.
    """
    if length_method not in LENGTH_METHODS:
        raise ValueError(f"length_method must be one of {', '.join(LENGTH_METHODS)}, not {length_method!r}")
    if mask.ndim != 3:
        raise ValueError(f"long-axis mask must be (X, Y, T), got shape {mask.shape}")
    n_frames = mask.shape[2]
    pixel_cm2 = float(spacing_mm[0]) * float(spacing_mm[1]) / 100.0
    affine = np.asarray(affine, dtype=np.float64)
    rot = affine[:3, :2]
    area = np.zeros(n_frames)
    length = np.full(n_frames, np.nan)
    n_large = np.zeros(n_frames, dtype=np.int64)
    any_xy = mask.any(axis=2)
    if not any_xy.any():
        return AreaLength(area, length, n_large)
    xs, ys = np.flatnonzero(any_xy.any(axis=1)), np.flatnonzero(any_xy.any(axis=0))
    x0, y0 = xs[0], ys[0]
    crop = mask[x0 : xs[-1] + 1, y0 : ys[-1] + 1]  # bounding box over all frames
    for t in range(n_frames):
        comp, n = ndimage.label(crop[:, :, t], structure=_EIGHT_CONNECTED)
        if n == 0:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        n_large[t] = int((sizes > QC_COMPONENT_PIXELS).sum())
        biggest = int(np.argmax(sizes)) + 1  # the first of equal largest, as ukbb_cardiac's get_largest_cc
        area[t] = sizes[biggest - 1] * pixel_cm2
        if length_method == "extent":
            ij = np.argwhere(comp == biggest).astype(np.float64) + (x0, y0)
            length[t] = _extent_length_mm(ij, rot, long_axis) / 10.0
        else:  # the crop, placed in the full view: the line is clipped to the view, as cv2.line's
            length[t] = _line_length_mm(comp == biggest, (int(x0), int(y0)), mask.shape[:2], affine, long_axis) / 10.0
    return AreaLength(area, length, n_large)


def atrial_qc(m: AreaLength, what: str) -> str | None:
    """The QC rules on one atrium/view measurement; the first failure as a reason, or None."""
    zero = np.flatnonzero(m.area_cm2 <= 0)
    if zero.size:
        return f"atrial QC: {what} area is 0 in {zero.size} frame(s), first frame {zero[0]}"
    multi = np.flatnonzero(m.n_large_components >= 2)
    if multi.size:
        return (
            f"atrial QC: {what} has two components over {QC_COMPONENT_PIXELS} pixels in "
            f"{multi.size} frame(s), first frame {multi[0]}"
        )
    no_length = np.flatnonzero(~np.isfinite(m.length_cm))
    if no_length.size:
        return (
            f"atrial QC: {what} has no length in {no_length.size} frame(s), first frame {no_length[0]} "
            "(the major-axis line misses the atrium, or it has fewer than 3 pixels)"
        )
    ratio = np.roll(m.area_cm2, -1) / m.area_cm2  # frame t+1 over frame t, cyclic
    bad = np.flatnonzero((ratio >= QC_MAX_AREA_RATIO) | (ratio <= 1.0 / QC_MAX_AREA_RATIO))
    if bad.size:
        t = int(bad[0])
        return (
            f"atrial QC: {what} area changes by a factor {ratio[t]:.2f} between frames {t} and "
            f"{(t + 1) % ratio.size}"
        )
    return None


def single_plane_volume(area_cm2: np.ndarray, length_cm: np.ndarray) -> np.ndarray:
    """Area–length volume (mL) from one view: ``8/(3π)·A²/L``; shapes broadcast."""
    return _AREA_LENGTH_K * np.asarray(area_cm2) ** 2 / np.asarray(length_cm)


def biplane_volume(a4_cm2: np.ndarray, a2_cm2: np.ndarray, l4_cm: np.ndarray, l2_cm: np.ndarray) -> np.ndarray:
    """Biplane area–length volume (mL): ``8/(3π)·A_4ch·A_2ch / ((L_4ch + L_2ch)/2)``."""
    return _AREA_LENGTH_K * np.asarray(a4_cm2) * np.asarray(a2_cm2) / ((np.asarray(l4_cm) + np.asarray(l2_cm)) / 2.0)


def chamber_summary(volume_ml: np.ndarray) -> np.ndarray:
    """``(T,)`` volumes (mL) → (V max (mL), V min (mL), SV (mL), EF (%))."""
    vmax, vmin = float(np.max(volume_ml)), float(np.min(volume_ml))
    return np.array([vmax, vmin, vmax - vmin, 100.0 * (vmax - vmin) / vmax])


def atrial_phenotypes(
    la_2ch: np.ndarray | None,
    la_4ch: np.ndarray | None,
    ra_4ch: np.ndarray | None,
    affine_2ch: np.ndarray | None,
    affine_4ch: np.ndarray | None,
    spacing_2ch: tuple[float, float, float] | None,
    spacing_4ch: tuple[float, float, float] | None,
    long_axis: np.ndarray,
    length_method: str = "ukbb_cardiac",
) -> AtrialResult:
    """The 8 atrial phenotypes (LA biplane, RA single plane from 4ch).

    Args:
        la_2ch, la_4ch, ra_4ch: ``(X, Y, T)`` bool masks (None = segmentation not available).
        affine_2ch, affine_4ch: 4×4 voxel→RAS affines of the views.
        spacing_2ch, spacing_4ch: view spacing (mm).
        long_axis: (3,) unit vector from :func:`long_axis_from_sax`.
        length_method: see :func:`atrial_area_length` (default: the published ukbb_cardiac length).

    Returns:
        :class:`AtrialResult`; a missing view or a QC failure gives NaN and a reason.
    """
    values = np.full(len(ATRIAL_COLUMNS), np.nan)
    reasons: list[str] = []
    if la_2ch is None or la_4ch is None:
        missing = " and ".join(n for n, a in (("seg_la_2ch", la_2ch), ("seg_la_4ch", la_4ch)) if a is None)
        reasons.append(f"LA: {missing} not available (biplane needs both views)")
    elif la_2ch.shape[2] != la_4ch.shape[2]:
        reasons.append(f"LA: 2ch has {la_2ch.shape[2]} frames but 4ch has {la_4ch.shape[2]}")
    else:
        m2 = atrial_area_length(la_2ch, affine_2ch, spacing_2ch, long_axis, length_method)
        m4 = atrial_area_length(la_4ch, affine_4ch, spacing_4ch, long_axis, length_method)
        fail = atrial_qc(m2, "LA (2ch)") or atrial_qc(m4, "LA (4ch)")
        if fail:
            reasons.append(fail)
        else:
            values[0:4] = chamber_summary(biplane_volume(m4.area_cm2, m2.area_cm2, m4.length_cm, m2.length_cm))
    if ra_4ch is None:
        reasons.append("RA: seg_la_4ch not available")
    else:
        mr = atrial_area_length(ra_4ch, affine_4ch, spacing_4ch, long_axis, length_method)
        fail = atrial_qc(mr, "RA (4ch)")
        if fail:
            reasons.append(fail)
        else:
            values[4:8] = chamber_summary(single_plane_volume(mr.area_cm2, mr.length_cm))
    return AtrialResult(values, reasons)
