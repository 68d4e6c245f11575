"""The CMRxRecon cine layout (CMRxRecon 2024 "Task 2" naming, MATLAB v7.3 files).

Per subject ``P<nnn>`` under ``MultiCoil/Cine/<TrainingSet|ValidationSet|TestSet>/`` (the set is
the subject's store split):

- ``FullSample/P001/cine_sax.mat``: ``kspace_full``, the fully sampled k-space, MATLAB size
  ``(nx, ny, nc, nz, nt)`` = (readout H, phase encodes W, coils, slices, frames), complex single;
- ``UnderSample_Task2/P001/cine_sax_kus_<mask>.mat``: ``kus`` = ``kspace_full .* mask``, same size;
- ``Mask_Task2/P001/cine_sax_mask_<mask>.mat``: ``mask``, logical, MATLAB size ``(nx, ny, nz, nt)``;
- the same three for ``cine_lax`` (nz = 3 long-axis views, in the store's order 2ch, 3ch, 4ch).

Differences from the challenge's files, all recorded in the export manifest: the mask has a slice
axis (the challenge's k-t masks are ``(nx, ny, nt)``, one per file; ours differ per slice, so
``kus = kspace_full .* reshape(mask, [nx, ny, 1, nz, nt])``); ``<mask>`` is the store's mask name
(e.g. ``vista_r4``) whose R counts the ACS lines (fastMRI's convention), whereas the challenge's
names (``ktGaussian8``) give R without the ACS lines; nc = 1 for a store without coils.

Writers take k-space with a coil axis ``(C, S, T, H, W)``: a store with coils (format version 2)
gives its K coils as ``nc``, synthesised by the store's rule (docs/store-format.md, "Coils").
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kspace_sim.export.matlab_v73 import read_mat73, write_mat73

__all__ = [
    "CINE_GROUPS",
    "SET_FOLDERS",
    "cine_arrays",
    "cine_full",
    "cine_mask",
    "cine_undersampled",
    "read_cine_subject",
    "stream_cine_full_and_kus",
    "subject_files",
    "write_cine_file",
]

#: store split code → CMRxRecon set folder
SET_FOLDERS = {0: "TrainingSet", 1: "ValidationSet", 2: "TestSet"}
#: CMRxRecon cine file stem → store view group (``attrs['views']`` key)
CINE_GROUPS = {"cine_sax": "sax", "cine_lax": "lax"}
ROOT = Path("MultiCoil") / "Cine"


def subject_files(key: str, split: int, mask_name: str) -> dict[str, dict[str, str]]:
    """``{stem: {"full"|"kus"|"mask": path relative to the export folder}}`` for one subject."""
    base = ROOT / SET_FOLDERS[split]
    return {
        stem: {
            "full": (base / "FullSample" / key / f"{stem}.mat").as_posix(),
            "kus": (base / "UnderSample_Task2" / key / f"{stem}_kus_{mask_name}.mat").as_posix(),
            "mask": (base / "Mask_Task2" / key / f"{stem}_mask_{mask_name}.mat").as_posix(),
        }
        for stem in CINE_GROUPS
    }


def cine_full(kspace: np.ndarray) -> np.ndarray:
    """``kspace_full`` in MATLAB order ``(H, W, C, Z, T)`` from ``(C, Z, T, H, W)`` complex64 (C coils,
    Z slices of one group, T frames): the transposed view of a C-contiguous ``(T, Z, C, W, H)`` array,
    which is how the HDF5 dataset stores it (written without a further copy)."""
    return np.ascontiguousarray(kspace.transpose(2, 1, 0, 4, 3)).T


def cine_undersampled(full: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``kus = kspace_full .* mask``, MATLAB order ``(H, W, C, Z, T)`` like ``full``
    (:func:`cine_full`); ``mask`` ``(Z, T, W)`` bool. Each line is multiplied by its mask value as
    complex64 (1 or 0), broadcast along the readout and the coils."""
    factor = mask.transpose(1, 0, 2).astype(np.complex64)[:, :, None, :, None]  # (T, Z, 1, W, 1)
    return (full.T * factor).T


#: bytes of k-space per block of frames that :func:`stream_cine_full_and_kus` hands out (at least one frame)
STREAM_BLOCK_BYTES = 1 << 20


def stream_cine_full_and_kus(
    kspace: np.ndarray,
    mask: np.ndarray,
    write_full: Callable[[memoryview], object],
    write_kus: Callable[[memoryview], object],
    block_bytes: int = STREAM_BLOCK_BYTES,
) -> None:
    """Hand out the stored bytes of ``kspace_full`` and of ``kus`` in file order, a block of frames
    at a time, through one reused buffer of about ``block_bytes`` (no full-size copy of either).

    For each block of frames ``t0:t1``: ``write_full(view)`` with the block of :func:`cine_full`
    as the HDF5 dataset stores it (C order ``(T, Z, C, W, H)``, complex64 as interleaved
    (real, imag)), then ``write_kus(view)`` with the same block of :func:`cine_undersampled`
    (the same product, computed in place, bit for bit). Concatenated, the views are the two
    variables' data regions (:func:`kspace_sim.export.matlab_v73.allocate_mat73`). A view is
    valid only during its call (the buffer is overwritten next).

    Args:
        kspace: ``(C, Z, T, H, W)`` complex64.
        mask: ``(Z, T, W)`` bool.
    """
    c, z, t, h, w = kspace.shape
    frame_bytes = c * z * w * h * np.dtype(np.complex64).itemsize
    frames = max(1, min(t, block_bytes // frame_bytes))
    factor = mask.transpose(1, 0, 2).astype(np.complex64)[:, :, None, :, None]  # (T, Z, 1, W, 1)
    buf = np.empty((frames, z, c, w, h), dtype=np.complex64)
    for t0 in range(0, t, frames):
        block = buf[: min(frames, t - t0)]
        np.copyto(block, kspace[:, :, t0 : t0 + len(block)].transpose(2, 1, 0, 4, 3))
        view = memoryview(block.reshape(-1).view(np.uint8))
        write_full(view)
        np.multiply(block, factor[t0 : t0 + len(block)], out=block)
        write_kus(view)


def cine_mask(mask: np.ndarray, readout: int) -> np.ndarray:
    """The ``mask`` variable, MATLAB order ``(H, W, Z, T)`` bool, from ``(Z, T, W)`` repeated along
    the readout (H = ``readout``); the view of a C-contiguous ``(T, Z, W, H)`` array."""
    z, t, w = mask.shape
    return np.ascontiguousarray(np.broadcast_to(mask.transpose(1, 0, 2)[..., None], (t, z, w, readout))).T


def cine_arrays(kspace: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """The three variables of one cine file, in MATLAB dimension order.

    Args:
        kspace: ``(C, Z, T, H, W)`` complex64 (C coils, Z slices of one group, T frames).
        mask: ``(Z, T, W)`` bool.

    Returns:
        ``{"full": (H, W, C, Z, T), "kus": (H, W, C, Z, T) complex64, "mask": (H, W, Z, T) bool}``
        (:func:`cine_full`, :func:`cine_undersampled`, :func:`cine_mask`).
    """
    full = cine_full(kspace)
    return {"full": full, "kus": cine_undersampled(full, mask), "mask": cine_mask(mask, kspace.shape[3])}


def write_cine_file(path: Path, variable: str, value: np.ndarray, created: _dt.datetime) -> None:
    """One MATLAB v7.3 file holding ``variable`` (MATLAB order)."""
    write_mat73(path, {variable: value}, created)


#: variable name in each kind of file
VARIABLES = {"full": "kspace_full", "kus": "kus", "mask": "mask"}


def read_cine_subject(
    root: str | Path, files: dict[str, dict[str, str]], views: dict[str, list[int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rebuild a subject from its files with plain h5py: ``(kspace (C, S, T, H, W), kus (C, S, T, H, W),
    mask (S, T, W))`` with S in the store's view order."""
    root = Path(root)
    parts: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for stem, group in CINE_GROUPS.items():
        full = read_mat73(root / files[stem]["full"], "kspace_full")  # (H, W, C, Z, T)
        kus = read_mat73(root / files[stem]["kus"], "kus")
        mask = read_mat73(root / files[stem]["mask"], "mask")  # (H, W, Z, T)
        if not (mask == mask[:1]).all():
            raise ValueError(f"{files[stem]['mask']}: mask not constant along kx")
        for j, s in enumerate(views[group]):
            parts[s] = (full[:, :, :, j, :].transpose(2, 3, 0, 1), kus[:, :, :, j, :].transpose(2, 3, 0, 1), mask[0, :, j, :].T)
    order = sorted(parts)
    k = np.stack([parts[s][0] for s in order], axis=1)
    ku = np.stack([parts[s][1] for s in order], axis=1)
    m = np.stack([parts[s][2] for s in order], axis=0)
    return k, ku, m
