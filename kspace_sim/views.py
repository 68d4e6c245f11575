"""Multi-view slice extraction: 6 short-axis slices + 2ch/3ch/4ch long axis, cropped and normalised.

Axes: a source slice is ``(X, Y, T)`` (nibabel order); a view is ``(T, H, W)`` with H = X and
W = Y of the source slice (W is treated as the phase-encoding direction). The output stack is
``(S, T, H, W)`` in the order ``VIEW_ORDER``.

Rules (documented in the store attributes):
- Short-axis slices: the first slice containing LV blood pool at frame 0, + 2, then 6
  consecutive slices, shifted to stay inside the stack (the predecessor code's rule). Without a
  segmentation: the 6 central slices.
- Crop centre: the centroid of the ventricles (labels 1-3 of ``seg_sa`` at ED) in world
  coordinates; for short-axis slices its (X, Y) voxel position, for long-axis views its
  projection into the view (averaged with the atria centroid where the view is segmented). Without
  ``seg_sa``: the image centre. Crops falling outside the image are zero padded.
- Frames: a source with T ≠ 50 is resampled to 50 (periodic linear interpolation for images,
  nearest frame for labels); the source count is recorded.
- Intensities: (lo, hi) = (min, 99.9th percentile) over the cropped frames of one series (the 6
  short-axis slices share one range; each long-axis view has its own), mapped to [0, 1] and clipped.
- Labels: one map for all views: 1 LV blood pool, 2 LV myocardium, 3 RV blood pool (seg_sa),
  4 LA (seg_la_2ch label 1, seg_la_4ch label 1), 5 RA (seg_la_4ch label 2); 6-class 4ch maps
  (labels 1-5) are taken as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kspace_sim.sources.subject import LAX_VIEWS, SubjectError, SubjectVolumes

__all__ = [
    "VIEW_ORDER",
    "N_SAX",
    "LABEL_MAP",
    "ViewStack",
    "select_sax_slices",
    "resample_frames",
    "extract_views",
]

N_SAX = 6
VIEW_ORDER: tuple[str, ...] = tuple(f"sax{i}" for i in range(N_SAX)) + LAX_VIEWS
LABEL_MAP = {0: "background", 1: "LV blood pool", 2: "LV myocardium", 3: "RV blood pool", 4: "LA", 5: "RA"}
_LAX_SEG = {"la_2ch": "seg_la_2ch", "la_4ch": "seg_la_4ch"}


@dataclass
class ViewStack:
    """The views of one subject.

    Attributes:
        images: ``(S, T, H, W)`` float32 in [0, 1].
        seg: ``(S, T, H, W)`` uint8 in the trainer's label map (zeros where absent).
        seg_present: ``(S,)`` bool.
        crop_box: ``(S, 4)`` int32 (h0, w0, h1, w1) in source slice indices.
        pixel_spacing: ``(S, 2)`` float32 mm along (H, W).
        intensity_range: ``(S, 2)`` float32 (lo, hi) mapped to (0, 1).
        sax_slices: ``(6,)`` int16 source short-axis slice indices.
        source_frames: frame count of the source.
    """

    images: np.ndarray
    seg: np.ndarray
    seg_present: np.ndarray
    crop_box: np.ndarray
    pixel_spacing: np.ndarray
    intensity_range: np.ndarray
    sax_slices: np.ndarray
    source_frames: int


def select_sax_slices(seg_sa: np.ndarray | None, n_slices: int, n_select: int = N_SAX) -> np.ndarray:
    """Indices of the short-axis slices to use.

    Args:
        seg_sa: ``(X, Y, Z, T)`` labels or None.
        n_slices: Z of the stack.
        n_select: how many consecutive slices (6).

    Raises:
        SubjectError: fewer than ``n_select`` slices, or no LV blood pool at frame 0.
    """
    if n_slices < n_select:
        raise SubjectError(f"only {n_slices} short-axis slices, need {n_select}")
    if seg_sa is None:
        start = (n_slices - n_select) // 2
    else:
        has_lv = np.flatnonzero((seg_sa[..., 0] == 1).any(axis=(0, 1)))
        if has_lv.size == 0:
            raise SubjectError("no LV blood pool at frame 0 of seg_sa")
        start = int(has_lv[0]) + 2
        start = min(max(start, 0), n_slices - n_select)
    return np.arange(start, start + n_select, dtype=np.int16)


def resample_frames(x: np.ndarray, n_frames: int, labels: bool = False) -> np.ndarray:
    """Resample the last axis (a periodic cardiac cycle) to ``n_frames``.

    Images use periodic linear interpolation, labels the nearest frame.
    """
    t_src = x.shape[-1]
    if t_src == n_frames:
        return x
    pos = np.arange(n_frames) * (t_src / n_frames)
    if labels:
        return np.take(x, np.rint(pos).astype(int) % t_src, axis=-1)
    i0 = np.floor(pos).astype(int)
    frac = (pos - i0).astype(np.float32)
    a = np.take(x, i0 % t_src, axis=-1)
    b = np.take(x, (i0 + 1) % t_src, axis=-1)
    return (a * (1 - frac) + b * frac).astype(x.dtype)


def _crop(
    slice_xyt: np.ndarray, centre: tuple[float, float], size: int, dtype: np.dtype | type | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``(X, Y, T)`` to ``(T, size, size)`` around ``centre`` (zero padding), converted to
    ``dtype`` (default: the input's) in the same copy; returns the box too."""
    x, y, t = slice_xyt.shape
    h0 = int(round(centre[0])) - size // 2
    w0 = int(round(centre[1])) - size // 2
    out = np.zeros((t, size, size), dtype=dtype or slice_xyt.dtype)
    sx0, sx1 = max(h0, 0), min(h0 + size, x)
    sy0, sy1 = max(w0, 0), min(w0 + size, y)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sx0 - h0 : sx1 - h0, sy0 - w0 : sy1 - w0] = np.moveaxis(slice_xyt[sx0:sx1, sy0:sy1], -1, 0)
    return out, np.array([h0, w0, h0 + size, w0 + size], dtype=np.int32)


def _centroid(mask: np.ndarray) -> np.ndarray | None:
    idx = np.argwhere(mask)
    return idx.mean(axis=0) if idx.size else None


def _world_to_voxel(affine: np.ndarray, point: np.ndarray) -> np.ndarray:
    return (np.linalg.inv(affine) @ np.append(point, 1.0))[:3]


def upper_percentile(x: np.ndarray, q: float) -> float:
    """``np.percentile(x, q)`` over all of ``x`` (q a Python float), fast for ``q`` near 100.

    Only the top of ``x`` is partitioned: a threshold below the wanted order statistic is taken
    from a strided sample with a 4x margin, the values at or above it are selected, and the two
    order statistics are read from that selection, exactly (ties included); when the selection is
    too small the whole array is partitioned. The interpolation repeats numpy's 'linear' method
    operation by operation (in the array's dtype, a Python-float weight), so the result equals
    ``np.percentile`` bit for bit (tested); 25x faster on a subject's (6, 50, 128, 128) stack.
    """
    flat = np.ravel(x, order="K")
    n = flat.size
    qq = np.true_divide(q, 100)
    virtual = (n - 1) * qq  # numpy's virtual index of the 'linear' method
    i = int(min(max(np.floor(virtual), 0), n - 1))
    gamma = float(virtual - np.floor(virtual)) if 0 <= virtual < n - 1 else 0.0
    need = n - i  # values at or above the i-th smallest (0-based)
    top = flat
    if 16 * need < n:
        sample = flat[:: max(1, n // 65536)]
        k = max(0, sample.size - 1 - int(np.ceil(4 * need * sample.size / n)))
        threshold = np.partition(sample, k)[k]
        selected = flat[flat >= threshold]
        if selected.size >= need:
            top = selected
    j = top.size - need  # the i-th smallest of x is the j-th smallest of top
    idx = [j, j + 1] if j + 1 < top.size else [j]
    part = np.partition(top, idx)
    a, b = part[j], part[idx[-1]]
    diff = b - a
    value = np.add(a, diff * gamma)
    if gamma >= 0.5:
        value = np.subtract(b, diff * (1 - gamma), dtype=value.dtype)
    return float(value)


def _normalise(stack: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """Map ``stack`` to [0, 1] by (min, 99.9th percentile) into ``out`` (float32, same shape)."""
    lo = float(stack.min())
    hi = upper_percentile(stack, 99.9)
    if not hi > lo:
        hi = lo + 1.0
    np.subtract(stack, lo, out=out)
    np.divide(out, hi - lo, out=out)
    np.clip(out, 0.0, 1.0, out=out)
    return lo, hi


def _map_lax_labels(view: str, seg: np.ndarray) -> np.ndarray:
    out = np.zeros_like(seg)
    if view == "la_4ch" and seg.max() > 2:  # 6-class 4ch variant: 1 LV, 2 Myo, 3 RV, 4 LA, 5 RA
        return seg
    out[seg == 1] = 4
    if view == "la_4ch":
        out[seg == 2] = 5
    return out


def extract_views(vol: SubjectVolumes, crop: int = 128, n_frames: int = 50) -> ViewStack:
    """Cut, crop, resample and normalise the 9 views of one subject.

    Args:
        vol: the subject's volumes.
        crop: output H = W (pixels).
        n_frames: output T.

    Returns:
        A :class:`ViewStack` with ``S = 9`` views in ``VIEW_ORDER``.

    Raises:
        SubjectError: too few short-axis slices, or no LV at frame 0 in ``seg_sa``.
    """
    sa = vol.images["sa"]
    seg_sa = vol.segs.get("seg_sa")
    t_src = sa.shape[-1]
    if t_src < 2:
        raise SubjectError(f"only {t_src} frame(s)")
    sax_idx = select_sax_slices(seg_sa, sa.shape[2])
    s = len(VIEW_ORDER)
    images = np.zeros((s, n_frames, crop, crop), dtype=np.float32)
    seg = np.zeros((s, n_frames, crop, crop), dtype=np.uint8)
    seg_present = np.zeros(s, dtype=bool)
    boxes = np.zeros((s, 4), dtype=np.int32)
    spacing = np.zeros((s, 2), dtype=np.float32)
    ranges = np.zeros((s, 2), dtype=np.float32)

    heart_world = None
    if seg_sa is not None:
        c = _centroid(np.isin(seg_sa[..., 0], (1, 2, 3)))
        if c is not None:
            heart_world = (vol.affines["sa"] @ np.append(c, 1.0))[:3]
    if heart_world is not None:
        sax_centre = _world_to_voxel(vol.affines["sa"], heart_world)[:2]
    else:
        sax_centre = (np.array(sa.shape[:2]) - 1) / 2.0

    sax_raw = np.stack([_crop(sa[:, :, z], tuple(sax_centre), crop, np.float32)[0] for z in sax_idx])
    sax_box = _crop(sa[:, :, sax_idx[0], :1], tuple(sax_centre), crop)[1]
    sax_raw = resample_frames(np.moveaxis(sax_raw, 1, -1), n_frames)  # (6, H, W, T)
    ranges[:N_SAX] = _normalise(np.moveaxis(sax_raw, -1, 1), images[:N_SAX])
    boxes[:N_SAX] = sax_box
    spacing[:N_SAX] = vol.spacing["sa"][:2]
    if seg_sa is not None:
        for i, z in enumerate(sax_idx):
            cropped = _crop(seg_sa[:, :, z], tuple(sax_centre), crop)[0]
            seg[i] = np.moveaxis(resample_frames(np.moveaxis(cropped, 0, -1), n_frames, labels=True), -1, 0)
        seg_present[:N_SAX] = True

    for j, view in enumerate(LAX_VIEWS):
        i = N_SAX + j
        img = vol.images[view]
        aff = vol.affines[view]
        seg_name = _LAX_SEG.get(view)
        lax_seg = vol.segs.get(seg_name) if seg_name else None
        if heart_world is not None:
            centre = _world_to_voxel(aff, heart_world)[:2]
            if lax_seg is not None:
                atria = _centroid(lax_seg[..., 0] > 0)
                if atria is not None:
                    centre = 0.5 * (centre + atria[:2])
        else:
            centre = (np.array(img.shape[:2]) - 1) / 2.0
        cropped, boxes[i] = _crop(img, tuple(centre), crop, np.float32)
        cropped = np.moveaxis(resample_frames(np.moveaxis(cropped, 0, -1), n_frames), -1, 0)
        ranges[i] = _normalise(cropped, images[i])
        spacing[i] = vol.spacing[view][:2]
        if lax_seg is not None:
            sc = _crop(_map_lax_labels(view, lax_seg), tuple(centre), crop)[0]
            seg[i] = np.moveaxis(resample_frames(np.moveaxis(sc, 0, -1), n_frames, labels=True), -1, 0)
            seg_present[i] = True

    return ViewStack(images, seg, seg_present, boxes, spacing, ranges, sax_idx, t_src)
