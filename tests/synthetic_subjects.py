"""Tiny synthetic subjects in the UK Biobank NIfTI layout for fast simulator tests.

Ellipses in every view (not anatomically faithful: the demo cohort is for that), small matrices
so that a build with ``crop=32, frames=10`` takes well under a second per subject.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from kspace_sim.sources.nifti import save_subject_nifti
from kspace_sim.sources.subject import SubjectVolumes


def _ellipse(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 <= 1.0


def stable_seed(eid: str, seed: int) -> int:
    """A 64-bit seed from ``(eid, seed)`` that is the same in every process (Python's ``hash`` of a
    string is salted per process, so a failure seeded with it could not be reproduced)."""
    digest = hashlib.sha256(f"{eid}\x00{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def make_subject(
    eid: str, shape: tuple[int, int] = (40, 44), n_slices: int = 9, n_frames: int = 10, seed: int = 0
) -> SubjectVolumes:
    """A small subject: SAX (X, Y, Z, T) with LV/myocardium/RV ellipses, LAX views with an LA."""
    rng = np.random.default_rng(stable_seed(eid, seed))
    x, y = shape
    t = np.arange(n_frames)
    scale = 1.0 - 0.25 * np.sin(np.pi * t / n_frames) ** 2
    sa = np.zeros((x, y, n_slices, n_frames), dtype=np.float32)
    seg_sa = np.zeros_like(sa, dtype=np.uint8)
    c = (x / 2 + rng.uniform(-2, 2), y / 2 + rng.uniform(-2, 2))
    for z in range(1, n_slices - 1):
        for f in range(n_frames):
            r = 6 * scale[f]
            lv = _ellipse(shape, c, (r, r))
            myo = _ellipse(shape, c, (r + 3, r + 3)) & ~lv
            rv = _ellipse(shape, (c[0], c[1] + r + 7), (r, r + 2)) & ~myo & ~lv
            seg_sa[lv, z, f] = 1
            seg_sa[myo, z, f] = 2
            seg_sa[rv, z, f] = 3
    sa[:] = 200 + 20 * rng.standard_normal(sa.shape)
    sa[seg_sa == 1] = 900
    sa[seg_sa == 2] = 300
    sa[seg_sa == 3] = 850
    affine_sa = np.diag([1.8, 1.8, 10.0, 1.0])
    images = {"sa": sa}
    affines = {"sa": affine_sa, "seg_sa": affine_sa}
    segs = {"seg_sa": seg_sa}
    spacing = {"sa": (1.8, 1.8, 10.0)}
    for k, view in enumerate(("la_2ch", "la_3ch", "la_4ch")):
        img = np.full((x, y, n_frames), 150.0, dtype=np.float32)
        lab = np.zeros((x, y, n_frames), dtype=np.uint8)
        for f in range(n_frames):
            la = _ellipse(shape, (x / 2 - 8, y / 2), (5 / scale[f], 5))
            lab[la, f] = 1
            if view == "la_4ch":
                ra = _ellipse(shape, (x / 2 - 8, y / 2 + 12), (4 / scale[f], 4))
                lab[ra & ~la, f] = 2
        img[lab > 0] = 800
        img += 10 * rng.standard_normal(img.shape).astype(np.float32)
        aff = np.array([[0, 0, 1, 0], [1.8, 0, 0, 0], [0, 1.8, 0, 10.0 * k], [0, 0, 0, 1]], dtype=float)
        images[view] = img
        affines[view] = aff
        spacing[view] = (1.8, 1.8, 6.0)
        if view != "la_3ch":
            segs[f"seg_{view}"] = lab
            affines[f"seg_{view}"] = aff
    return SubjectVolumes(eid, images, affines, segs, spacing, dt=0.9 / n_frames)


def write_cohort(root: Path, eids: list[str], **kwargs: object) -> Path:
    """Write ``eids`` as subject folders under ``root``; returns ``root``."""
    for eid in eids:
        save_subject_nifti(make_subject(eid, **kwargs), root / eid)  # type: ignore[arg-type]
    return root
