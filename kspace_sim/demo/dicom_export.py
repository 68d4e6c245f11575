"""Write a SubjectVolumes as UK Biobank-style cine DICOM zips (fields 20209 / 20208).

``<eid>_20209_2_0.zip`` holds the short axis, one series ``CINE_segmented_SAX_b<k>`` per slice
(k = 1 for NIfTI slice 0; or one combined series ``CINE_segmented_SAX`` with
``sax_layout='combined'``); ``<eid>_20208_2_0.zip`` holds ``CINE_segmented_LAX_2Ch/3Ch/4Ch``.
Each zip has a ``manifest.csv`` in UKB style: the misspelled ``series discription`` column and
an unquoted date with a comma (``Aug 30, 2015``), exactly the quirks real manifests have.

Files: MR Image Storage, explicit VR little endian, uncompressed 16-bit pixels (uint16, or int16
when the image has negative values); voxel values are rounded to integers as in the NIfTI
layout. Geometry is the inverse of :mod:`kspace_sim.sources.dicom_zip`: RAS → LPS negates x and
y; ImageOrientationPatient = the normalised first two affine columns, PixelSpacing = their
lengths (dy, dx); slice k lies at ``affine @ (0, 0, k)``; SpacingBetweenSlices = the length of
the third column for a stack, the NIfTI pixdim dz for a single slice; SliceThickness = 0.8 × the
spacing for the short axis (UKB: 8 mm slices, 2 mm gap) and dz for the long axis;
TriggerTime = t · dt in ms, with each view's own dt (``SubjectVolumes.frame_interval``: long-axis
cines may have a TriggerTime spacing of their own). UIDs derive deterministically from the eid.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, PYDICOM_IMPLEMENTATION_UID, generate_uid
from pydicom.valuerep import format_number_as_ds

from kspace_sim.sources.subject import SubjectVolumes

__all__ = ["export_subject_dicom", "export_cohort_dicom", "series_geometry", "MANIFEST_HEADER"]

SA_FIELD, LA_FIELD, INSTANCE = "20209", "20208", "2_0"
MANIFEST_HEADER = "filename,patientid,studyid,aet,hostname,date,seriesid,series discription"
_STUDY_DATE, _MANIFEST_DATE = "20150830", "Aug 30, 2015 9:12:04 AM"
_LAX_NAMES = {"la_2ch": "CINE_segmented_LAX_2Ch", "la_3ch": "CINE_segmented_LAX_3Ch", "la_4ch": "CINE_segmented_LAX_4Ch"}


@dataclass(frozen=True)
class SeriesGeometry:
    """DICOM geometry of a stack: LPS, mm."""

    row_cosines: np.ndarray  # (3,)
    col_cosines: np.ndarray  # (3,)
    pixel_spacing: tuple[float, float]  # (dy, dx)
    positions: np.ndarray  # (Z, 3)
    spacing_between_slices: float


def series_geometry(affine: np.ndarray, n_slices: int, dz: float) -> SeriesGeometry:
    """DICOM geometry of an (X, Y, Z) stack with voxel → RAS ``affine`` (4×4).

    ``dz`` (mm, the NIfTI pixdim) is used as SpacingBetweenSlices for a single slice; a stack's
    spacing is the length of the affine's third column.
    """
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    dx, dy = float(np.linalg.norm(lps[:3, 0])), float(np.linalg.norm(lps[:3, 1]))
    positions = lps[:3, 3][None, :] + np.arange(n_slices)[:, None] * lps[:3, 2][None, :]
    sbs = float(np.linalg.norm(lps[:3, 2])) if n_slices > 1 else float(dz)
    return SeriesGeometry(lps[:3, 0] / dx, lps[:3, 1] / dy, (dy, dx), positions, sbs)


def _ds(values: float | np.ndarray | list[float]) -> str | list[str]:
    """Decimal String value(s), at most 16 characters each (full precision that fits)."""
    if np.ndim(values) == 0:
        return format_number_as_ds(float(values))  # type: ignore[arg-type]
    return [format_number_as_ds(float(v)) for v in np.ravel(values)]


def _pixel_format(images: list[np.ndarray]) -> tuple[str, int, int]:
    """(numpy dtype, PixelRepresentation, BitsStored) able to hold every image exactly (after rint)."""
    lo = min(float(np.min(a)) for a in images)
    hi = max(float(np.max(a)) for a in images)
    if lo >= 0 and hi <= 65535:
        return "<u2", 0, 12 if hi <= 4095 else 16
    if lo >= -32768 and hi <= 32767:
        return "<i2", 1, 16
    raise ValueError(f"intensities [{lo}, {hi}] do not fit 16-bit DICOM pixels")


@dataclass(frozen=True)
class _Series:
    description: str
    number: int
    frames: np.ndarray  # (X, Y, Z, T)
    geometry: SeriesGeometry
    thickness: float
    dt_ms: float | None = None  # this series' frame interval (None: the zip's)


def _series_template(s: _Series, eid: str, study_uid: str, for_uid: str, series_uid: str, dt_ms: float, fmt: tuple[str, int, int]) -> Dataset:
    """The tags shared by every frame of a series."""
    _, pixrep, bits = fmt
    x, y, _, t = s.frames.shape
    g = s.geometry
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "RETRO", "DIS2D"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _STUDY_DATE
    ds.SeriesTime = f"{90000 + s.number * 100:06d}.000000"
    ds.Modality = "MR"
    ds.Manufacturer = "SIEMENS"
    ds.ManufacturerModelName = "Aera"
    ds.PatientID = eid
    ds.PatientName = "anonymous"
    ds.BodyPartExamined = "HEART"
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "*tfi2d1_12"
    ds.SliceThickness = _ds(s.thickness)
    ds.SpacingBetweenSlices = _ds(g.spacing_between_slices)
    ds.RepetitionTime = _ds(dt_ms)
    ds.EchoTime = "1.1"
    ds.MagneticFieldStrength = "1.5"
    ds.FlipAngle = "80"
    ds.NominalInterval = str(int(round(t * dt_ms)))
    ds.CardiacNumberOfImages = str(t)
    ds.PatientPosition = "HFS"
    ds.ProtocolName = s.description
    ds.SeriesDescription = s.description
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.StudyID = "1"
    ds.SeriesNumber = str(s.number)
    ds.AcquisitionNumber = "1"
    ds.ImageOrientationPatient = _ds(np.concatenate([g.row_cosines, g.col_cosines]))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = y
    ds.Columns = x
    ds.PixelSpacing = _ds(list(g.pixel_spacing))
    ds.BitsAllocated = 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = pixrep
    return ds


def _frame_datasets(
    s: _Series, eid: str, study_uid: str, for_uid: str, dt_ms: float, fmt: tuple[str, int, int]
) -> Iterator[tuple[str, Dataset, Dataset]]:
    """(file name, series template, per-frame dataset) for every frame of one series.

    The per-frame dataset holds only what changes between frames (SOPInstanceUID, TriggerTime,
    InstanceNumber, ImagePositionPatient, SliceLocation, PixelData) and the file meta;
    InstanceNumber runs 1.. slice-major.
    """
    dtype = fmt[0]
    _, _, z, t = s.frames.shape
    g = s.geometry
    series_uid = generate_uid(entropy_srcs=[eid, "series", s.description, str(s.number)])
    template = _series_template(s, eid, study_uid, for_uid, series_uid, dt_ms, fmt)
    normal = np.cross(g.row_cosines, g.col_cosines)
    for k in range(z):
        ipp = _ds(g.positions[k])
        slice_location = _ds(float(g.positions[k] @ normal))
        for f in range(t):
            inst = k * t + f + 1
            sop_uid = generate_uid(entropy_srcs=[eid, series_uid, str(inst)])
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.SOPInstanceUID = sop_uid
            ds.TriggerTime = _ds(f * dt_ms)
            ds.InstanceNumber = str(inst)
            ds.ImagePositionPatient = ipp
            ds.SliceLocation = slice_location
            ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(np.rint(s.frames[:, :, k, f]).T).astype(dtype).tobytes())
            yield f"{sop_uid}.dcm", template, ds


def full_dataset(template: Dataset, frame: Dataset) -> Dataset:
    """The complete dataset of one frame (template tags + per-frame tags, with file meta)."""
    ds = Dataset({elem.tag: elem for elem in template})
    for elem in frame:
        ds[elem.tag] = elem
    ds.file_meta = frame.file_meta
    return ds


def _encode_elements(ds: Dataset) -> dict[int, bytes]:
    """Each element of ``ds`` encoded in explicit VR little endian, keyed by tag."""
    out = {}
    for elem in ds:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, elem)
        out[int(elem.tag)] = fp.getvalue()
    return out


def _file_bytes(template_encoded: dict[int, bytes], frame: Dataset) -> bytes:
    """A DICOM Part 10 file: preamble, file meta, then the merged elements in tag order.

    Byte-identical to ``dcmwrite(fp, full_dataset(template, frame), enforce_file_format=True)``
    but encodes the series' constant elements once.
    """
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, frame.file_meta, enforce_standard=True)
    elements = dict(template_encoded)
    elements.update(_encode_elements(frame))
    fp.write(b"".join(elements[tag] for tag in sorted(elements)))
    return fp.getvalue()


def _write_zip(path: Path, eid: str, series: list[_Series], study_uid: str, for_uid: str, dt_ms: float, compresslevel: int) -> Path:
    """One zip with its manifest, written to a temp name then renamed."""
    fmt = _pixel_format([s.frames for s in series])
    manifest = [MANIFEST_HEADER]
    tmp = path.with_name(path.name + ".part")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as zf:
            for s in series:
                encoded: dict[int, bytes] | None = None
                series_dt_ms = dt_ms if s.dt_ms is None else s.dt_ms
                for name, template, frame in _frame_datasets(s, eid, study_uid, for_uid, series_dt_ms, fmt):
                    if encoded is None:
                        encoded = _encode_elements(template)
                    zf.writestr(name, _file_bytes(encoded, frame))
                    manifest.append(f"{name},{eid},{study_uid},UKBB_CMR,scanner1,{_MANIFEST_DATE},{template.SeriesNumber},{s.description}")
            zf.writestr("manifest.csv", "\n".join(manifest) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_subject_dicom(
    vol: SubjectVolumes,
    out_dir: str | Path,
    eid: str,
    sax_layout: str = "per_slice",
    compresslevel: int = 1,
) -> tuple[Path, Path]:
    """Write ``vol`` as ``<eid>_20209_2_0.zip`` (short axis) and ``<eid>_20208_2_0.zip`` (long axis).

    Args:
        vol: images ``sa`` (X, Y, Z, T) and ``la_2ch/3ch/4ch`` (X, Y, T), affines, spacing, dt (s)
            and each view's own frame interval (``vol.frame_intervals``, default ``dt``).
        out_dir: folder for the zips (created).
        eid: the subject id in file names, PatientID and UID seeds.
        sax_layout: ``'per_slice'`` (one series per slice, as UKB mostly ships) or ``'combined'``
            (all slices in one series ``CINE_segmented_SAX``).
        compresslevel: zlib level of the zip members.

    Returns:
        (short-axis zip, long-axis zip).
    """
    if sax_layout not in ("per_slice", "combined"):
        raise ValueError(f"sax_layout must be 'per_slice' or 'combined', not {sax_layout!r}")
    for view in ("sa", *_LAX_NAMES):
        view_dt = vol.frame_interval(view)
        if not (np.isfinite(view_dt) and view_dt > 0):
            raise ValueError(f"frame interval dt of {view} must be a positive number of seconds, not {view_dt}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid(entropy_srcs=[eid, "study"])
    for_uid = generate_uid(entropy_srcs=[eid, "frame-of-reference"])
    dt_ms = float(vol.dt) * 1000.0
    sa = vol.images["sa"]
    geo = series_geometry(vol.affines["sa"], sa.shape[2], vol.spacing.get("sa", (0, 0, 10.0))[2])
    thick = 0.8 * geo.spacing_between_slices
    if sax_layout == "per_slice":
        sax = [
            _Series(f"CINE_segmented_SAX_b{k + 1}", 10 + k, sa[:, :, k : k + 1, :],
                    SeriesGeometry(geo.row_cosines, geo.col_cosines, geo.pixel_spacing, geo.positions[k : k + 1], geo.spacing_between_slices), thick)
            for k in range(sa.shape[2])
        ]
    else:
        sax = [_Series("CINE_segmented_SAX", 10, sa, geo, thick)]
    lax = []
    for n, (view, name) in enumerate(_LAX_NAMES.items()):
        img = vol.images[view][:, :, None, :]
        dz = vol.spacing.get(view, (0, 0, 6.0))[2]
        lax.append(_Series(name, 2 + n, img, series_geometry(vol.affines[view], 1, dz), dz, vol.frame_interval(view) * 1000.0))
    sa_zip = _write_zip(out / f"{eid}_{SA_FIELD}_{INSTANCE}.zip", eid, sax, study_uid, for_uid, dt_ms, compresslevel)
    la_zip = _write_zip(out / f"{eid}_{LA_FIELD}_{INSTANCE}.zip", eid, lax, study_uid, for_uid, dt_ms, compresslevel)
    return sa_zip, la_zip


def _export_one(subject_dir: str, out_dir: str) -> tuple[str, str | None]:
    """Worker: (eid, None) on success or (eid, reason)."""
    from kspace_sim.sources.nifti import load_subject_nifti
    from kspace_sim.sources.subject import SubjectError

    eid = Path(subject_dir).name
    try:
        export_subject_dicom(load_subject_nifti(subject_dir, eid), out_dir, eid)
    except (SubjectError, ValueError, OSError) as exc:
        return eid, f"{type(exc).__name__}: {exc}"
    return eid, None


def export_cohort_dicom(nifti_cohort_dir: str | Path, out_dir: str | Path, workers: int = 2, progress: bool = False) -> list[str]:
    """Export every subject folder (``<eid>/sa.nii.gz`` ...) of a NIfTI cohort as UKB zips.

    Subjects whose two zips already exist are skipped. ``workers`` ≤ 1 runs serially in this
    process, otherwise on a local Dask cluster of ``workers`` processes.

    Returns:
        The eids exported (or already present).

    Raises:
        RuntimeError: when some subjects could not be exported (all reasons listed).
    """
    from kspace_sim.sources.nifti import is_nifti_subject_dir

    src, out = Path(nifti_cohort_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    subjects = sorted(p for p in src.iterdir() if p.is_dir() and is_nifti_subject_dir(p))
    todo = [
        str(p) for p in subjects
        if not ((out / f"{p.name}_{SA_FIELD}_{INSTANCE}.zip").exists() and (out / f"{p.name}_{LA_FIELD}_{INSTANCE}.zip").exists())
    ]
    results: list[tuple[str, str | None]] = []
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="export DICOM", unit="subj")
    if workers <= 1 or len(todo) <= 1:
        for d in todo:
            results.append(_export_one(d, str(out)))
            if bar is not None:
                bar.update(1)
    else:
        from dask.distributed import Client, LocalCluster, as_completed

        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40) as cluster, Client(cluster) as client:
            futures = [client.submit(_export_one, d, str(out), pure=False) for d in todo]
            for fut in as_completed(futures):
                results.append(fut.result())
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    failed = [(e, r) for e, r in results if r is not None]
    if failed:
        raise RuntimeError("DICOM export failed for " + "; ".join(f"{e}: {r}" for e, r in failed))
    return [p.name for p in subjects]
