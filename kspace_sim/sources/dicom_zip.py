"""Read UK Biobank cine DICOM zips (fields 20209 short axis, 20208 long axis) into a SubjectVolumes.

A zip holds one DICOM file per frame and slice plus a ``manifest.csv`` (sometimes
``manifest.cvs``) whose columns include ``filename`` and ``series discription`` (sic); dates
like ``Aug 30, 2015`` are not quoted, so their comma adds a field. Series names:
``CINE_segmented_SAX_b<k>`` (short-axis slice k, k = 1, 2, ...), ``CINE_segmented_SAX`` (all
slices in one series, split by position and checked against ``CardiacNumberOfImages``),
``CINE_segmented_LAX_2Ch`` / ``_3Ch`` / ``_4Ch``. Other series (``..._InlineVF``, localisers)
are ignored.

Conversion rules (REFERENCES.md, "DICOM → NIfTI"):

- X = Columns, Y = Rows: a frame's NIfTI slice is ``pixel_array.T``; dx = PixelSpacing[1],
  dy = PixelSpacing[0].
- Frames of a slice are sorted by ``TriggerTime``; each series keeps its own frame interval
  dt = (TriggerTime[1] − TriggerTime[0]) of its first slice, ms → s (the long-axis cines have
  their own TriggerTime spacing; ``SubjectVolumes.dt`` is the short axis's).
- Affine (voxel → RAS, mm): columns ``rowcos·dx``, ``colcos·dy``, ``n·dz`` and the first slice's
  ImagePositionPatient, all with x and y negated (LPS → RAS). With several slices ``n`` is the
  unit step from one slice position to the next (slices ordered ``b1, b2, ...`` or by
  InstanceNumber in a combined series), with one slice ``n = rowcos × colcos``.
  dz = SpacingBetweenSlices, else the distance between slice positions, else SliceThickness.

Repeats (deterministic rule): when several series share a name (a slice acquired twice), the
complete one is used (every slice has ``CardiacNumberOfImages`` frames with distinct trigger
times); among complete ones (or, if none is complete, to report the error) the one with the
highest SeriesNumber (the latest acquisition), then the latest SeriesTime, then the largest
SeriesInstanceUID.

Every problem with a subject's input is a :class:`SubjectError` naming the zip and the reason.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from kspace_sim.sources.subject import LAX_VIEWS, SEG_FILES, SubjectError, SubjectVolumes

__all__ = [
    "SA_FIELD",
    "LA_FIELD",
    "ZipSubject",
    "ManifestRow",
    "SeriesFrames",
    "ZipContents",
    "choose_series",
    "decode_frame",
    "load_sax_zip",
    "load_lax_zip",
    "FrameHeader",
    "discover_zip_subjects",
    "scan_zip_folder",
    "zip_name",
    "parse_manifest",
    "read_zip_series",
    "split_slices",
    "slice_geometry",
    "load_subject_zips",
    "DECODERS",
]

SA_FIELD = "20209"
LA_FIELD = "20208"
_ZIP_RE = re.compile(r"^(?P<eid>[^_/]+)_(?P<field>2020[89])_(?P<instance>\d+_\d+)\.zip$")
_SAX_SLICE_RE = re.compile(r"^CINE_segmented_SAX_b(\d+)$", re.IGNORECASE)
_SAX_ALL_RE = re.compile(r"^CINE_segmented_SAX$", re.IGNORECASE)
_LAX_RE = re.compile(r"^CINE_segmented_LAX_([234])Ch$", re.IGNORECASE)
_MANIFEST_NAMES = ("manifest.csv", "manifest.cvs")
_DESCRIPTION_COLUMNS = ("series discription", "series description", "seriesdescription", "series_description")
_DATE_WITH_COMMA = re.compile(r"\b([A-Z][a-z]{2}) (\d{1,2}), (\d{4})\b")

#: Transfer syntax UID → (name, packages that let pydicom decode it).
DECODERS: dict[str, tuple[str, str]] = {
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline (Process 1)", "pylibjpeg + pylibjpeg-libjpeg, pillow, or python-gdcm"),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended (Process 2 and 4)", "pylibjpeg + pylibjpeg-libjpeg, pillow, or python-gdcm"),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless (Process 14)", "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm"),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1", "pylibjpeg + pylibjpeg-libjpeg, or python-gdcm"),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", "pyjpegls, or python-gdcm"),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless", "pyjpegls, or python-gdcm"),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 (Lossless Only)", "pylibjpeg + pylibjpeg-openjpeg, pillow, or python-gdcm"),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", "pylibjpeg + pylibjpeg-openjpeg, pillow, or python-gdcm"),
    "1.2.840.10008.1.2.5": ("RLE Lossless", "numpy (built in), or pylibjpeg-rle"),
}


# --------------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class ZipSubject:
    """One subject's zips. ``sa_zip`` = field 20209 (short axis), ``la_zip`` = field 20208."""

    eid: str
    sa_zip: Path | None = None
    la_zip: Path | None = None


def zip_name(eid: str, field_id: str, instance: str = "2_0") -> str:
    """``'<eid>_<field>_<instance>.zip'``, e.g. ``zip_name('1000001', SA_FIELD)``."""
    return f"{eid}_{field_id}_{instance}.zip"


def discover_zip_subjects(zip_dir: str | Path, instance: str = "2_0") -> dict[str, ZipSubject]:
    """Map eid → :class:`ZipSubject` for the ``<eid>_2020[89]_<instance>.zip`` files of ``zip_dir``.

    A subject with only one of its two zips is listed (the missing one is ``None``); loading it
    then fails with a :class:`SubjectError`. Other entries: see :func:`scan_zip_folder`.
    """
    return scan_zip_folder(zip_dir, instance)[0]


def scan_zip_folder(zip_dir: str | Path, instance: str = "2_0") -> tuple[dict[str, ZipSubject], list[tuple[str, str]]]:
    """Every entry of a zip folder accounted for: the subjects (as :func:`discover_zip_subjects`)
    and ``(entry name, reason)`` for each entry that is not a subject's zip (sorted by name)."""
    found: dict[str, dict[str, Path]] = {}
    skipped: list[tuple[str, str]] = []
    for p in sorted(Path(zip_dir).iterdir()):
        m = _ZIP_RE.match(p.name)
        if p.is_dir():
            skipped.append((p.name, "not a subject folder (the input holds UK Biobank zips)"))
        elif m is None:
            skipped.append((p.name, f"not a subject's zip (<eid>_{SA_FIELD}_{instance}.zip / <eid>_{LA_FIELD}_{instance}.zip)"))
        elif m["instance"] != instance:
            skipped.append((p.name, f"imaging instance {m['instance']}, not {instance}"))
        else:
            found.setdefault(m["eid"], {})[m["field"]] = p
    subjects = {
        eid: ZipSubject(eid, sa_zip=paths.get(SA_FIELD), la_zip=paths.get(LA_FIELD))
        for eid, paths in sorted(found.items())
    }
    return subjects, skipped


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ManifestRow:
    """One manifest line: the zip member and its series description."""

    filename: str
    series_description: str


def _fix_row(row: list[str], n_cols: int, fi: int, di: int) -> tuple[str, str] | None:
    """(filename, description) of a row whose unquoted commas split a field (or None)."""
    if len(row) == n_cols:
        return row[fi].strip(), row[di].strip()
    if len(row) < n_cols:
        return None
    dcm = [c.strip() for c in row if c.strip().lower().endswith(".dcm")]
    fname = dcm[0] if len(dcm) == 1 else row[fi].strip()
    candidates = [row[di].strip(), row[di - n_cols].strip()]
    for c in candidates:  # a date fragment (" 2015") is not a series name
        if c and not re.fullmatch(r"[\d :.\-/]*", c):
            return fname, c
    return fname, candidates[0]


def parse_manifest(text: str) -> list[ManifestRow]:
    """Parse a UK Biobank ``manifest.csv`` robustly.

    Handles the misspelled ``series discription`` column (the correct spelling too), dates
    whose comma is not quoted (``Aug 30, 2015``: rewritten to ``30-Aug-2015`` before parsing;
    any remaining extra fields are resolved by locating the ``.dcm`` filename and counting the
    description's position from both ends), a BOM, blank lines and surrounding spaces.

    Raises:
        SubjectError: no header, or no ``filename`` / series-description column.
    """
    text = _DATE_WITH_COMMA.sub(r"\2-\1-\3", text.lstrip("\ufeff"))
    rows = [r for r in csv.reader(io.StringIO(text)) if any(c.strip() for c in r)]
    if not rows:
        raise SubjectError("manifest is empty")
    header = [c.strip().lower() for c in rows[0]]
    if "filename" not in header:
        raise SubjectError(f"manifest has no 'filename' column (columns: {header})")
    di = next((header.index(c) for c in _DESCRIPTION_COLUMNS if c in header), None)
    if di is None:
        raise SubjectError(f"manifest has no 'series discription' column (columns: {header})")
    fi = header.index("filename")
    out = []
    for row in rows[1:]:
        fixed = _fix_row(row, len(header), fi, di)
        if fixed is not None and fixed[0]:
            out.append(ManifestRow(*fixed))
    return out


# --------------------------------------------------------------------------- zip reading


@dataclass
class FrameHeader:
    """The tags of one DICOM file that the conversion uses (positions in LPS, mm; times in ms)."""

    member: str
    series_uid: str
    series_number: int
    series_time: str
    instance_number: int
    trigger_time: float
    position: np.ndarray  # (3,) ImagePositionPatient, LPS
    orientation: np.ndarray  # (6,) ImageOrientationPatient: row cosines, column cosines (LPS)
    pixel_spacing: tuple[float, float]  # (row spacing = dy, column spacing = dx)
    rows: int
    columns: int
    cardiac_images: int | None
    slice_thickness: float | None
    spacing_between_slices: float | None
    dataset: Dataset = field(repr=False)


@dataclass
class SeriesFrames:
    """All frames of one series (one SeriesInstanceUID) under one series description."""

    description: str
    uid: str
    frames: list[FrameHeader]

    @property
    def series_number(self) -> int:
        return max(f.series_number for f in self.frames)

    @property
    def series_time(self) -> str:
        return max(f.series_time for f in self.frames)


# Tags read from every file. Values are taken from the raw element bytes (pydicom's lazy
# conversion of each accessed element costs more than reading the file).
_TAGS = {
    "SeriesTime": 0x00080031, "SliceThickness": 0x00180050, "SpacingBetweenSlices": 0x00180088,
    "TriggerTime": 0x00181060, "CardiacNumberOfImages": 0x00181090, "SeriesInstanceUID": 0x0020000E,
    "SeriesNumber": 0x00200011, "InstanceNumber": 0x00200013, "ImagePositionPatient": 0x00200032,
    "ImageOrientationPatient": 0x00200037, "SamplesPerPixel": 0x00280002, "Rows": 0x00280010,
    "Columns": 0x00280011, "PixelSpacing": 0x00280030, "BitsAllocated": 0x00280100,
    "PixelRepresentation": 0x00280103, "RescaleIntercept": 0x00281052, "RescaleSlope": 0x00281053,
}


def _text(ds: Dataset, keyword: str) -> str | None:
    """A string-valued tag (DS, IS, UI, TM...) as text, multiple values joined by a backslash."""
    elem = ds.get_item(_TAGS[keyword])
    if elem is None or elem.value is None:
        return None
    v = elem.value
    if isinstance(v, bytes):
        text = v.decode("latin-1")
    elif isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        text = "\\".join(str(x) for x in v)
    else:
        text = str(v)
    return text.strip(" \x00") or None


def _numbers(ds: Dataset, keyword: str, n: int | None = None, required: bool = True) -> list[float] | None:
    text = _text(ds, keyword)
    if text is None:
        if required:
            raise KeyError(keyword)
        return None
    values = [float(x) for x in text.split("\\")]
    if n is not None and len(values) != n:
        raise ValueError(f"{keyword} has {len(values)} values, expected {n}")
    return values


def _float(ds: Dataset, keyword: str) -> float | None:
    values = _numbers(ds, keyword, required=False)
    return values[0] if values else None


def _us(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """An unsigned-short tag (Rows, Columns, BitsAllocated...)."""
    elem = ds.get_item(_TAGS[keyword])
    if elem is None or elem.value is None or elem.value == b"":
        if default is None:
            raise KeyError(keyword)
        return default
    v = elem.value
    if isinstance(v, bytes):
        little = getattr(ds, "original_encoding", (None, True))[1] is not False
        if not little:
            return int(ds[_TAGS[keyword]].value)
        return int.from_bytes(v[:2], "little")
    return int(v)


def _header(ds: Dataset, member: str, where: str) -> FrameHeader:
    try:
        ps = _numbers(ds, "PixelSpacing", 2)
        cni = _float(ds, "CardiacNumberOfImages")
        return FrameHeader(
            member=member,
            series_uid=_text(ds, "SeriesInstanceUID") or f"series-{_text(ds, 'SeriesNumber') or 0}",
            series_number=int(_float(ds, "SeriesNumber") or 0),
            series_time=_text(ds, "SeriesTime") or "",
            instance_number=int(_float(ds, "InstanceNumber") or 0),
            trigger_time=_numbers(ds, "TriggerTime", 1)[0],  # type: ignore[index]
            position=np.array(_numbers(ds, "ImagePositionPatient", 3), dtype=np.float64),
            orientation=np.array(_numbers(ds, "ImageOrientationPatient", 6), dtype=np.float64),
            pixel_spacing=(ps[0], ps[1]),  # type: ignore[index]
            rows=_us(ds, "Rows"),
            columns=_us(ds, "Columns"),
            cardiac_images=int(cni) if cni else None,
            slice_thickness=_float(ds, "SliceThickness"),
            spacing_between_slices=_float(ds, "SpacingBetweenSlices"),
            dataset=ds,
        )
    except KeyError as exc:
        raise SubjectError(f"{where}: {member} lacks the required tag {exc.args[0]}") from exc
    except (TypeError, ValueError) as exc:
        raise SubjectError(f"{where}: {member} has an unreadable tag value ({exc})") from exc


def _is_cine(description: str) -> bool:
    return bool(_SAX_SLICE_RE.match(description) or _SAX_ALL_RE.match(description) or _LAX_RE.match(description))


@dataclass
class ZipContents:
    """A zip's cine series: description → series (one per SeriesInstanceUID); ``absent``: files
    the manifest lists but the zip lacks."""

    series: dict[str, list[SeriesFrames]]
    absent: list[str]

    def note(self) -> str:
        """A suffix for error messages when files were absent."""
        if not self.absent:
            return ""
        return f" ({len(self.absent)} file(s) listed in the manifest are absent from the zip, e.g. {self.absent[0]})"


def read_zip_series(zip_path: str | Path, wanted: Iterable[str] | None = None) -> ZipContents:
    """Read one UKB zip: its cine series, grouped by description and SeriesInstanceUID.

    Only files the manifest lists under a cine series name (or under ``wanted`` names) are
    read; headers and raw pixel bytes are parsed, pixels are decoded later
    (:func:`decode_frame`). Zip members are matched to manifest filenames by base name.

    Raises:
        SubjectError: missing file, corrupt zip, no manifest, unreadable DICOM or tags.
    """
    zip_path = Path(zip_path)
    where = zip_path.name
    if not zip_path.is_file():
        raise SubjectError(f"missing zip {where}")
    want = set(wanted) if wanted is not None else None
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
            manifest = next((members[m] for m in members if m.lower() in _MANIFEST_NAMES), None)
            if manifest is None:
                raise SubjectError(f"{where} has no manifest.csv")
            rows = parse_manifest(zf.read(manifest).decode("utf-8", errors="replace"))
            by_uid: dict[tuple[str, str], SeriesFrames] = {}
            absent: list[str] = []
            seen: set[str] = set()
            for row in rows:
                desc = row.series_description
                if (want is not None and desc not in want) or (want is None and not _is_cine(desc)):
                    continue
                base = Path(row.filename).name
                if base in seen:
                    continue
                seen.add(base)
                if base not in members:
                    absent.append(base)
                    continue
                data = zf.read(members[base])
                try:
                    ds = pydicom.dcmread(io.BytesIO(data), force=False)
                except InvalidDicomError as exc:
                    raise SubjectError(f"{where}: {base} is not a DICOM file ({exc})") from exc
                except Exception as exc:  # truncated or malformed element data
                    raise SubjectError(f"{where}: cannot parse DICOM file {base} ({type(exc).__name__}: {exc})") from exc
                h = _header(ds, base, where)
                key = (desc, h.series_uid)
                by_uid.setdefault(key, SeriesFrames(desc, h.series_uid, [])).frames.append(h)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise SubjectError(f"corrupt zip {where}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:
        raise SubjectError(f"cannot read {where}: {exc}") from exc
    out: dict[str, list[SeriesFrames]] = {}
    for (desc, _), series in sorted(by_uid.items()):
        out.setdefault(desc, []).append(series)
    return ZipContents(out, absent)


# --------------------------------------------------------------------------- series logic (pure)


def split_slices(frames: list[FrameHeader], where: str) -> list[list[FrameHeader]]:
    """Split a series into slices, each sorted by TriggerTime.

    Frames are grouped by ImagePositionPatient (0.01 mm); slices are ordered by their lowest
    InstanceNumber. Every slice must hold ``CardiacNumberOfImages`` frames (if the tag exists,
    else as many as the first slice) with distinct trigger times.

    Raises:
        SubjectError: missing or duplicated frames (with the slice and the count).
    """
    groups: dict[tuple[int, ...], list[FrameHeader]] = {}
    for f in frames:
        groups.setdefault(tuple(np.rint(f.position * 100).astype(int)), []).append(f)
    slices = sorted(groups.values(), key=lambda g: min(f.instance_number for f in g))
    cnis = {f.cardiac_images for f in frames if f.cardiac_images}
    if len(cnis) > 1:
        raise SubjectError(f"{where}: inconsistent CardiacNumberOfImages {sorted(cnis)}")
    expected = cnis.pop() if cnis else len(slices[0])
    out = []
    for k, g in enumerate(slices):
        g = sorted(g, key=lambda f: (f.trigger_time, f.instance_number))
        times = np.array([f.trigger_time for f in g])
        dup = times[1:][np.diff(times) <= 1e-6]
        if dup.size:
            raise SubjectError(f"{where}: duplicated frames in slice {k} (TriggerTime {dup[0]:g} ms appears more than once)")
        if len(g) != expected:
            what = "missing" if len(g) < expected else "extra"
            raise SubjectError(f"{where}: {what} frames in slice {k}: {len(g)} frames, CardiacNumberOfImages = {expected}")
        out.append(g)
    return out


def _series_problem(s: SeriesFrames, where: str) -> str | None:
    try:
        split_slices(s.frames, where)
    except SubjectError as exc:
        return str(exc)
    return None


def choose_series(candidates: list[SeriesFrames], where: str) -> list[list[FrameHeader]]:
    """Pick one of several series of the same name (module docstring) and split it into slices.

    Raises:
        SubjectError: when no candidate is complete (the error of the preferred one).
    """
    scored = [(_series_problem(c, where) is None, c.series_number, c.series_time, c.uid, c) for c in candidates]
    best = max(scored, key=lambda x: x[:4])[4]
    return split_slices(best.frames, f"{where} series {best.description} #{best.series_number}")


def _check_same(values: list[np.ndarray], tol: float, what: str, where: str) -> None:
    ref = values[0]
    for k, v in enumerate(values[1:], start=1):
        if np.max(np.abs(np.asarray(v) - ref)) > tol:
            raise SubjectError(f"{where}: inconsistent {what} between slices ({ref.tolist()} vs {np.asarray(v).tolist()} at slice {k})")


def slice_geometry(
    orientation: np.ndarray,
    pixel_spacing: tuple[float, float],
    positions: np.ndarray,
    spacing_between_slices: float | None = None,
    slice_thickness: float | None = None,
    where: str = "",
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Voxel → RAS affine and (dx, dy, dz) in mm for a stack of parallel slices.

    Args:
        orientation: (6,) ImageOrientationPatient (row cosines then column cosines, LPS).
        pixel_spacing: (row spacing, column spacing) = (dy, dx), mm.
        positions: (Z, 3) ImagePositionPatient of slices 0..Z-1 (LPS, mm).
        spacing_between_slices, slice_thickness: the tags (mm) or None.

    Raises:
        SubjectError: slice positions that are not evenly spaced along a line (a missing slice).
    """
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    z = len(positions)
    if z >= 2:
        step = (positions[-1] - positions[0]) / (z - 1)
        gap = float(np.linalg.norm(step))
        if gap < 1e-6:
            raise SubjectError(f"{where}: all slices share one position")
        dev = np.abs(positions - (positions[0] + np.arange(z)[:, None] * step)).max()
        if dev > 0.02 * gap + 1e-3:
            raise SubjectError(f"{where}: slice positions are not evenly spaced (off by {dev:.2f} mm: missing slice?)")
        normal = step / gap
        dz = spacing_between_slices if spacing_between_slices else gap
    else:
        normal = np.cross(row, col)
        normal = normal / np.linalg.norm(normal)
        dz = spacing_between_slices or slice_thickness or 1.0
    lps = np.eye(4)
    lps[:3, 0] = row * dx
    lps[:3, 1] = col * dy
    lps[:3, 2] = normal * dz
    lps[:3, 3] = positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, (dx, dy, float(dz))


# --------------------------------------------------------------------------- pixels


def decode_frame(h: FrameHeader, where: str) -> np.ndarray:
    """Pixels of one frame, (Rows, Columns): stored integers, or float32 when a modality rescale
    (RescaleSlope/Intercept other than 1/0) applies.

    Raises:
        SubjectError: compressed data that no installed plugin decodes (names the transfer
            syntax and the packages that would), or a pixel buffer of the wrong size.
    """
    ds = h.dataset
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    ts = str(ts) if ts else "1.2.840.10008.1.2"
    try:
        if ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1") and _us(ds, "SamplesPerPixel", 1) == 1:
            bits = _us(ds, "BitsAllocated")
            signed = _us(ds, "PixelRepresentation", 0) == 1
            dtype = {8: "i1" if signed else "u1", 16: "<i2" if signed else "<u2", 32: "<i4" if signed else "<u4"}[bits]
            n = h.rows * h.columns
            buf = np.frombuffer(ds.PixelData, dtype=dtype)
            if buf.size < n:
                raise ValueError(f"pixel data holds {buf.size} values, Rows×Columns = {n}")
            arr = buf[:n].reshape(h.rows, h.columns)
        else:
            arr = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError...
        if ts in DECODERS:
            name, packages = DECODERS[ts]
            raise SubjectError(
                f"{where}: cannot decode {h.member}: compressed transfer syntax {name} ({ts}); "
                f"install {packages} to decode it ({type(exc).__name__}: {str(exc)[:200]})"
            ) from exc
        raise SubjectError(f"{where}: cannot decode pixels of {h.member} (transfer syntax {ts}): {exc}") from exc
    if arr.shape != (h.rows, h.columns):
        raise SubjectError(f"{where}: {h.member} pixels have shape {arr.shape}, expected ({h.rows}, {h.columns})")
    slope, intercept = _float(ds, "RescaleSlope"), _float(ds, "RescaleIntercept")
    if (slope is not None and slope != 1.0) or (intercept is not None and intercept != 0.0):
        return arr.astype(np.float32) * np.float32(slope if slope is not None else 1.0) + np.float32(intercept or 0.0)
    return arr


def _stack(slices: list[list[FrameHeader]], where: str) -> np.ndarray:
    """(X, Y, Z, T) float32 from slices of frames (each frame transposed: X = Columns).

    The result is Fortran-contiguous: the NIfTI on-disk order, so writing it needs no copy.
    """
    rows, cols = slices[0][0].rows, slices[0][0].columns
    buf = np.empty((len(slices), len(slices[0]), rows, cols), dtype=np.float32)
    for k, frames in enumerate(slices):
        for t, h in enumerate(frames):
            buf[k, t] = decode_frame(h, where)
    return buf.transpose(3, 2, 0, 1)


def _volume(slices: list[list[FrameHeader]], where: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], float]:
    """(image (X, Y, Z, T), affine, spacing, dt s) of a list of slices after consistency checks."""
    heads = [s[0] for s in slices]
    n_frames = {len(s) for s in slices}
    if len(n_frames) > 1:
        raise SubjectError(f"{where}: slices have different frame counts {sorted(n_frames)}")
    sizes = {(h.rows, h.columns) for s in slices for h in s}
    if len(sizes) > 1:
        raise SubjectError(f"{where}: inconsistent Rows×Columns {sorted(sizes)}")
    all_frames = [h for s in slices for h in s]
    _check_same([np.array(h.pixel_spacing) for h in all_frames], 1e-4, "PixelSpacing", where)
    _check_same([h.orientation for h in all_frames], 1e-3, "ImageOrientationPatient", where)
    for k, s in enumerate(slices):
        _check_same([h.position for h in s], 1e-2, f"ImagePositionPatient within slice {k}", where)
    sbs = heads[0].spacing_between_slices
    affine, spacing = slice_geometry(
        heads[0].orientation, heads[0].pixel_spacing, np.stack([h.position for h in heads]), sbs,
        heads[0].slice_thickness, where,
    )
    frames0 = slices[0]
    dt = (frames0[1].trigger_time - frames0[0].trigger_time) / 1000.0 if len(frames0) > 1 else float("nan")
    return _stack(slices, where), affine, spacing, dt


def _sax_slices(series: dict[str, list[SeriesFrames]], where: str) -> list[list[FrameHeader]]:
    per_slice = {int(m.group(1)): d for d in series if (m := _SAX_SLICE_RE.match(d))}
    if per_slice:
        ks = sorted(per_slice)
        missing = sorted(set(range(1, ks[-1] + 1)) - set(ks))
        if missing:
            raise SubjectError(f"{where}: missing series " + ", ".join(f"CINE_segmented_SAX_b{k}" for k in missing))
        out = []
        for k in ks:
            sl = choose_series(series[per_slice[k]], where)
            if len(sl) != 1:
                raise SubjectError(f"{where}: series {per_slice[k]} holds {len(sl)} slice positions, expected 1")
            out.append(sl[0])
        return out
    combined = [d for d in series if _SAX_ALL_RE.match(d)]
    if combined:
        return choose_series(series[combined[0]], where)
    raise SubjectError(f"{where}: missing series CINE_segmented_SAX_b<k> (no short-axis cine series)")


def load_sax_zip(sa_zip: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], float]:
    """Short-axis zip (field 20209) → (image (X, Y, Z, T) float32, affine, (dx, dy, dz) mm, dt s)."""
    where = Path(sa_zip).name
    contents = read_zip_series(sa_zip)
    try:
        return _volume(_sax_slices(contents.series, where), where)
    except SubjectError as exc:
        raise SubjectError(str(exc) + contents.note()) from exc


def load_lax_zip(la_zip: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float, float], float]]:
    """Long-axis zip (field 20208) → ``{'la_2ch' | 'la_3ch' | 'la_4ch': (image (X, Y, T), affine, spacing, dt)}``."""
    where = Path(la_zip).name
    contents = read_zip_series(la_zip)
    try:
        by_view: dict[str, list[SeriesFrames]] = {}
        for desc, lst in contents.series.items():
            m = _LAX_RE.match(desc)
            if m:
                by_view.setdefault(f"la_{m.group(1)}ch", []).extend(lst)
        out = {}
        for view in LAX_VIEWS:
            if view not in by_view:
                raise SubjectError(f"{where}: missing series CINE_segmented_LAX_{view[3]}Ch")
            slices = choose_series(by_view[view], where)
            if len(slices) != 1:
                raise SubjectError(f"{where}: series CINE_segmented_LAX_{view[3]}Ch holds {len(slices)} slice positions, expected 1")
            img, aff, sp, dt = _volume(slices, f"{where} {view}")
            out[view] = (img[:, :, 0, :], aff, sp, dt)
        return out
    except SubjectError as exc:
        raise SubjectError(str(exc) + contents.note()) from exc


# --------------------------------------------------------------------------- segmentations


def _load_segs(seg_subject_dir: Path, images: dict[str, np.ndarray], affines: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``seg_*.nii.gz`` of one subject (UKB NIfTI layout) checked against the converted images."""
    from kspace_sim.sources.nifti import as_label_map, find_volume, read_volume, seg_image_name

    segs: dict[str, np.ndarray] = {}
    seg_aff: dict[str, np.ndarray] = {}
    for name in SEG_FILES:
        path = find_volume(seg_subject_dir, name)
        if path is None:
            continue
        image_name = seg_image_name(name)
        img, data = read_volume(path)
        if image_name != "sa" and data.ndim == 4 and data.shape[2] == 1:
            data = data[:, :, 0, :]
        if data.shape != images[image_name].shape:
            raise SubjectError(f"{path.name} shape {data.shape} differs from the DICOM {image_name} shape {images[image_name].shape}")
        labels = as_label_map(data, path.name)
        if np.max(np.abs(np.asarray(img.affine) - affines[image_name])) > 0.05:
            raise SubjectError(f"{path.name}: affine differs from the DICOM {image_name} geometry by more than 0.05 mm")
        segs[name] = labels
        seg_aff[name] = affines[image_name].copy()
    return segs, seg_aff


# --------------------------------------------------------------------------- public entry point


def load_subject_zips(
    sa_zip: str | Path | None,
    la_zip: str | Path | None,
    subject_id: str,
    seg_dir: str | Path | None = None,
) -> SubjectVolumes:
    """Convert one subject's UKB zips in memory.

    Args:
        sa_zip: ``<eid>_20209_2_0.zip`` (short axis).
        la_zip: ``<eid>_20208_2_0.zip`` (long axis: 2ch, 3ch, 4ch).
        subject_id: the id to report.
        seg_dir: optional folder with ``<subject_id>/seg_sa.nii.gz`` etc. (UKB NIfTI layout).

    Returns:
        :class:`SubjectVolumes`: ``sa`` (X, Y, Z, T), ``la_*`` (X, Y, T) float32, RAS affines,
        spacing (mm), ``dt`` (s, from the short axis's TriggerTimes), ``frame_intervals`` (s, each
        view's from its own TriggerTimes), segmentations found in ``seg_dir``.

    Raises:
        SubjectError: any problem with this subject's input (missing zip, corrupt zip, missing
            manifest or series, missing/duplicated frames, inconsistent geometry, undecodable
            pixel data, frame counts differing between views, bad segmentations).
    """
    if not sa_zip:
        raise SubjectError(f"missing short-axis zip (field {SA_FIELD}) for {subject_id}")
    if not la_zip:
        raise SubjectError(f"missing long-axis zip (field {LA_FIELD}) for {subject_id}")
    sa, sa_aff, sa_sp, dt = load_sax_zip(sa_zip)
    images: dict[str, np.ndarray] = {"sa": sa}
    affines: dict[str, np.ndarray] = {"sa": sa_aff}
    spacing: dict[str, tuple[float, float, float]] = {"sa": sa_sp}
    frame_intervals: dict[str, float] = {"sa": float(dt)}
    for view, (img, aff, sp, view_dt) in load_lax_zip(la_zip).items():
        if img.shape[-1] != sa.shape[-1]:
            raise SubjectError(f"{view} has {img.shape[-1]} frames but sa has {sa.shape[-1]}")
        images[view], affines[view], spacing[view] = img, aff, sp
        frame_intervals[view] = float(view_dt)  # each cine keeps its own TriggerTime spacing
    segs: dict[str, np.ndarray] = {}
    if seg_dir is not None:
        seg_subject = Path(seg_dir) / subject_id
        if seg_subject.is_dir():
            segs, seg_aff = _load_segs(seg_subject, images, affines)
            affines.update(seg_aff)
    return SubjectVolumes(subject_id, images, affines, segs, spacing, float(dt), frame_intervals)
