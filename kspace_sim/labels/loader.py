"""Load only what the phenotypes need from a UK Biobank NIfTI subject folder.

The images are not read: ``seg_sa``, ``seg_la_2ch``, ``seg_la_4ch`` (those present) with their
affines and spacing, and the short-axis *header* (affine, spacing, ``dt`` from ``pixdim[4]``).
Decompressing ``sa.nii.gz`` and the long-axis images is most of the cost of
:func:`kspace_sim.sources.nifti.load_subject_nifti` (~1 s of ~1.1 s per subject on the demo
cohort), so the label table uses this reader. The checks on the segmentations are those of the
full loader (readable, same shape as the image header, integer labels in 0..255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kspace_sim.sources.nifti import as_label_map, find_volume, header_dt, open_volume, read_volume, seg_image_name
from kspace_sim.sources.subject import SEG_FILES, SubjectError, SubjectVolumes

__all__ = ["load_label_inputs"]


def load_label_inputs(subject_dir: str | Path, subject_id: str | None = None) -> SubjectVolumes:
    """The segmentations and geometry of one subject folder, without the images.

    Returns:
        :class:`SubjectVolumes` with ``images == {}``; ``segs`` uint8 (long axis squeezed to
        ``(X, Y, T)``), ``affines`` and ``spacing`` for ``sa`` (header only) and every
        segmentation, ``dt`` (s) from the ``sa`` header (or ``seg_sa`` when ``sa`` is absent).

    Raises:
        SubjectError: an unreadable file, a segmentation whose shape differs from its image
            header, non-integer labels, or neither ``sa`` nor ``seg_sa`` present.
    """
    d = Path(subject_dir)
    sid = subject_id or d.name
    affines: dict[str, np.ndarray] = {}
    spacing: dict[str, tuple[float, float, float]] = {}
    segs: dict[str, np.ndarray] = {}
    headers = {}
    for name in ("sa", *SEG_FILES):
        path = find_volume(d, name)
        if path is not None:
            headers[name] = (open_volume(path), path)
    ref = headers.get("sa") or headers.get("seg_sa")
    if ref is None:
        raise SubjectError("missing sa.nii.gz and seg_sa.nii.gz")
    dt = header_dt(ref[0])
    for name, (img, path) in headers.items():
        affines[name] = np.asarray(img.affine, dtype=np.float64)
        spacing[name] = tuple(float(z) for z in img.header.get_zooms()[:3])  # type: ignore[assignment]
        if name == "sa":
            continue
        image = find_volume(d, seg_image_name(name))
        if image is not None:
            image_shape = open_volume(image).shape
            if image_shape != img.shape:
                raise SubjectError(f"{path.name} shape {img.shape} differs from {image.name} shape {image_shape}")
        data = as_label_map(read_volume(path)[1], path.name)
        if name != "seg_sa" and data.ndim == 4 and data.shape[2] == 1:
            data = data[:, :, 0, :]
        segs[name] = data
    return SubjectVolumes(sid, {}, affines, segs, spacing, dt)
