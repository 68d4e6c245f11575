"""Read and write one subject in the UK Biobank NIfTI layout.

A subject folder holds ``sa.nii.gz`` (X, Y, Z, T), ``la_2ch.nii.gz``, ``la_3ch.nii.gz``,
``la_4ch.nii.gz`` (X, Y, 1, T) and optionally ``seg_sa.nii.gz``, ``seg_la_2ch.nii.gz``,
``seg_la_4ch.nii.gz`` with the same geometry as their image.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from kspace_sim.sources.subject import IMAGE_FILES, LAX_VIEWS, SEG_FILES, SubjectError, SubjectVolumes

try:  # Intel ISA-L: inflate 2.3x faster than zlib's on a UKB-size sa.nii.gz, level-1 deflate ~3x
    from isal.igzip import compress as _gzip
    from isal.igzip import decompress as _gunzip
except ImportError:  # pragma: no cover - isal has wheels for the common platforms
    _gzip, _gunzip = gzip.compress, gzip.decompress

__all__ = [
    "load_subject_nifti",
    "save_subject_nifti",
    "is_nifti_subject_dir",
    "seg_image_name",
    "find_volume",
    "open_volume",
    "read_volume",
    "write_volume",
    "header_dt",
    "as_label_map",
]


def seg_image_name(seg_name: str) -> str:
    """``'seg_la_2ch' -> 'la_2ch'``: the image a segmentation belongs to."""
    return seg_name[len("seg_") :]


def is_nifti_subject_dir(path: Path) -> bool:
    """True when ``path`` contains ``sa.nii.gz`` (or ``sa.nii``)."""
    return (path / "sa.nii.gz").exists() or (path / "sa.nii").exists()


def find_volume(subject_dir: Path, name: str) -> Path | None:
    """``subject_dir/<name>.nii.gz`` or ``.nii``, whichever exists (None if neither)."""
    for suffix in (".nii.gz", ".nii"):
        p = subject_dir / f"{name}{suffix}"
        if p.exists():
            return p
    return None


def _unreadable(path: Path, exc: Exception) -> SubjectError:
    return SubjectError(f"cannot read {path.name}: {type(exc).__name__}: {exc}")


def open_volume(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI file lazily: the header is parsed, the voxels are not read."""
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise _unreadable(path, exc) from exc


def read_volume(path: Path) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The image and its voxels in their stored dtype (scaled to float only when the header asks).

    A ``.gz`` file is decompressed in one call (ISA-L's inflate when ``isal`` is installed, else
    zlib's), not in the ~3,000 small reads of a lazy image (each releasing and re-taking the GIL).
    """
    try:
        if path.name.endswith(".gz"):
            img = nib.Nifti1Image.from_bytes(_gunzip(path.read_bytes()))
        else:
            img = nib.load(str(path))
        return img, np.asanyarray(img.dataobj)
    except Exception as exc:  # nibabel, gzip and zlib raise many types for corrupt or truncated files
        raise _unreadable(path, exc) from exc


def header_dt(img: nib.Nifti1Image) -> float:
    """Frame interval in seconds from ``pixdim[4]`` (converted from ms when the header says so)."""
    zooms = img.header.get_zooms()
    dt = float(zooms[3]) if len(zooms) > 3 else float("nan")
    if (img.header.get_xyzt_units()[1] or "sec") == "msec":
        dt /= 1000.0
    return dt


def as_label_map(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` as uint8 labels; integer-valued floats are accepted (label files may be float64).

    Raises:
        SubjectError: NaN/Inf, non-integer values, or values outside 0..255.
    """
    if arr.dtype.kind in "iub":
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise SubjectError(f"{name} is not an integer label map in [0, 255]")
        return arr.astype(np.uint8, copy=False)
    if not np.all(np.isfinite(arr)):
        raise SubjectError(f"{name} contains NaN or Inf")
    rounded = np.rint(arr)
    if np.any(np.abs(arr - rounded) > 1e-3) or rounded.min() < 0 or rounded.max() > 255:
        raise SubjectError(f"{name} is not an integer label map in [0, 255]")
    return rounded.astype(np.uint8)


def load_subject_nifti(subject_dir: str | Path, subject_id: str | None = None) -> SubjectVolumes:
    """Load one subject folder.

    Args:
        subject_dir: the folder (its name is the default subject id).
        subject_id: id to report (e.g. a pseudonym).

    Returns:
        :class:`SubjectVolumes` with images in their stored integer dtype (int16 in UK Biobank;
        converted to float32 only where the views are cut) or float32, uint8 segmentations (those present),
        affines, spacing (mm), ``dt`` (s, from ``pixdim[4]`` of ``sa``) and every view's own
        ``frame_intervals`` (s, its ``pixdim[4]``).

    Raises:
        SubjectError: a missing view, an unreadable or truncated file, NaN/Inf intensities,
            a segmentation whose shape differs from its image, or non-integer labels.
    """
    subject_dir = Path(subject_dir)
    sid = subject_id or subject_dir.name
    images: dict[str, np.ndarray] = {}
    affines: dict[str, np.ndarray] = {}
    spacing: dict[str, tuple[float, float, float]] = {}
    segs: dict[str, np.ndarray] = {}
    frame_intervals: dict[str, float] = {}
    dt = float("nan")
    for name in IMAGE_FILES:
        path = find_volume(subject_dir, name)
        if path is None:
            raise SubjectError(f"missing view {name}.nii.gz")
        img, data = read_volume(path)
        if name != "sa":
            if data.ndim != 4 or data.shape[2] != 1:
                raise SubjectError(f"{path.name} has shape {data.shape}, expected (X, Y, 1, T)")
            data = data[:, :, 0, :]
        elif data.ndim != 4:
            raise SubjectError(f"{path.name} has shape {data.shape}, expected (X, Y, Z, T)")
        if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
            raise SubjectError(f"{path.name} contains NaN or Inf")
        images[name] = data if data.dtype.kind in "iu" else data.astype(np.float32, copy=False)
        affines[name] = np.asarray(img.affine, dtype=np.float64)
        spacing[name] = tuple(float(z) for z in img.header.get_zooms()[:3])  # type: ignore[assignment]
        frame_intervals[name] = header_dt(img)
        if name == "sa":
            dt = frame_intervals[name]
    t = images["sa"].shape[-1]
    for view in LAX_VIEWS:
        if images[view].shape[-1] != t:
            raise SubjectError(f"{view} has {images[view].shape[-1]} frames but sa has {t}")
    for name in SEG_FILES:
        path = find_volume(subject_dir, name)
        if path is None:
            continue
        img, data = read_volume(path)
        image_name = seg_image_name(name)
        if name != "seg_sa" and data.ndim == 4 and data.shape[2] == 1:
            data = data[:, :, 0, :]
        if data.shape != images[image_name].shape:
            raise SubjectError(
                f"{path.name} shape {data.shape} differs from {image_name} shape {images[image_name].shape}"
            )
        segs[name] = as_label_map(data, path.name)
        affines[name] = np.asarray(img.affine, dtype=np.float64)
    return SubjectVolumes(sid, images, affines, segs, spacing, dt, frame_intervals)


def write_volume(img: nib.Nifti1Image, path: Path) -> None:
    """Write ``img`` to ``path`` (``.nii.gz`` or ``.nii``) atomically: a temporary name in the same
    folder (``.<stem>.<pid>.tmp.nii[.gz]``), then a rename, so a killed run leaves no half file under
    the real name.

    A ``.gz`` file is one gzip stream at level 1 (ISA-L's deflate when ``isal`` is installed, else
    zlib's), written in one call with gzip mtime 0, so the same image always gives the same bytes.
    ISA-L's level 1 compresses a demo subject about as well as zlib's (2.3:1), and the whole write
    takes less than half the time of zlib's level 1 with ``Z_RLE`` (``benchmarks/bench_nifti_write.py``);
    any gzip reader accepts the stream.
    """
    gz = path.name.endswith(".gz")
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    tmp = path.with_name(f".{stem}.{os.getpid()}.tmp.nii" + (".gz" if gz else ""))
    payload = img.to_bytes()
    tmp.write_bytes(_gzip(payload, 1, mtime=0) if gz else payload)
    os.replace(tmp, path)


def _save(data: np.ndarray, affine: np.ndarray, path: Path, zooms: tuple[float, ...]) -> None:
    img = nib.Nifti1Image(data, affine)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    write_volume(img, path)


def save_subject_nifti(vol: SubjectVolumes, subject_dir: str | Path, image_dtype: type = np.int16) -> None:
    """Write ``vol`` in the UK Biobank NIfTI layout (atomic per file: temp name, then rename).

    Images are cast to ``image_dtype`` (rounded), segmentations to uint8; long-axis arrays get
    their singleton Z axis back; ``pixdim[4]`` = each view's own frame interval in seconds
    (:meth:`SubjectVolumes.frame_interval`; a segmentation has its image's).
    """
    subject_dir = Path(subject_dir)
    subject_dir.mkdir(parents=True, exist_ok=True)
    for name, arr in list(vol.images.items()) + list(vol.segs.items()):
        is_seg = name.startswith("seg_")
        a = arr.astype(np.uint8) if is_seg else np.rint(arr).astype(image_dtype)
        if a.ndim == 3:
            a = a[:, :, None, :]
        sp = vol.spacing.get(name) or vol.spacing[seg_image_name(name)]
        _save(a, vol.affines[name], subject_dir / f"{name}.nii.gz", (*sp, vol.frame_interval(name)))
