"""ISMRMRD (MRD v1, HDF5) files of one view of one subject, through the ``ismrmrd`` package.

Layout of a file (as ``ismrmrd.File`` writes and reads it): group ``dataset`` with ``xml`` (the
ISMRMRD header, serialised by ``ismrmrd.xsd.ToXML``) and ``data`` (one row of
``ismrmrd.hdf5.acquisition_dtype`` per acquired line). The acquisitions are the sampled
phase-encoding lines of the mask, frame by frame (``idx.phase`` = frame t, ``idx.kspace_encode_step_1``
= line ky, ascending), each ``number_of_samples = H`` readout samples for every channel.
The store's W axis is the phase-encoding direction (ky, ``encodedSpace.matrixSize.y``), H the
readout (kx, ``matrixSize.x``).

The acquisition headers are built as one numpy array of the package's own header dtype instead of
one ``ismrmrd.Acquisition`` object per line (a test holds them byte-equal to ``ismrmrd.Acquisition``'s),
and the samples of all lines as one ``(n, C, H)`` array; :func:`write_ismrmrd_view` hands both to
HDF5 in one write, the variable-length ``data`` field given as HDF5's own ``hvl_t`` (length,
pointer) pairs into that array, so h5py does not copy every line into an object array and back
(a test holds the files byte-equal to h5py's object-array path). The header XML of a view is
rendered by xsdata once per store, mask and view (:class:`HeaderTemplate`); each subject's file
substitutes its own values (id, row, pixel spacing, frame interval), byte-equal to a full render
(tested). The writer takes k-space with a coil axis ``(C, T, H, W)``: single-channel stores pass
C = 1; stores with coils pass their K coils as channels, synthesised by the store's rule
(docs/store-format.md, "Coils"; the header's user parameter ``coils`` describes them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LARMOR_HZ_PER_T",
    "NOMINAL_FIELD_T",
    "NOMINAL_SLICE_THICKNESS_MM",
    "SUBJECT_FIELDS",
    "HeaderTemplate",
    "ViewGeometry",
    "acquisition_headers",
    "acquisition_order",
    "acquisition_samples",
    "header_xml",
    "ismrmrd_header",
    "read_ismrmrd_view",
    "subject_values",
    "view_header_xml",
    "write_ismrmrd_view",
]

#: proton gyromagnetic ratio / 2π (Hz per tesla)
LARMOR_HZ_PER_T = 42.577478e6
#: UK Biobank's scanner field (REFERENCES.md: 1.5 T Siemens Aera); the header needs a resonance
#: frequency, the simulation itself has no field strength
NOMINAL_FIELD_T = 1.5
#: UK Biobank's slice thickness (REFERENCES.md: SAX 8 mm, LAX 6 mm): the store does not record it
NOMINAL_SLICE_THICKNESS_MM = {"sax": 8.0, "lax": 6.0}


@dataclass
class ViewGeometry:
    """What the header says about one view.

    Attributes:
        view: view name (``sax0`` … ``la_4ch``); ``view_index`` its index in the store's S axis.
        kind: ``sax`` or ``lax``.
        pixel_spacing_mm: in-plane spacing along (H, W) (store ``subjects/pixel_spacing``).
        frames, readout, lines: T, H, W. ``channels``: C.
        acs: ``(W,)`` bool, the mask's ACS lines (all False for patterns without them).
        dt_s: frame interval (s).
    """

    view: str
    view_index: int
    kind: str
    pixel_spacing_mm: tuple[float, float]
    frames: int
    readout: int
    lines: int
    channels: int
    acs: np.ndarray
    dt_s: float
    subject_id: str = ""
    row: int = -1
    mask_name: str = ""
    mask: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)


#: the :class:`ViewGeometry` fields that differ between subjects within one store, mask and view
SUBJECT_FIELDS = ("subject_id", "row", "pixel_spacing_mm", "dt_s")


def subject_values(g: ViewGeometry) -> dict[str, str | int | float]:
    """The header values taken from the subject's fields (:data:`SUBJECT_FIELDS`): patient and
    subject id, store row, field of view (mm) along H and W, pixel spacing (mm), frame interval (s)."""
    return {
        "patient_id": g.subject_id,
        "fov_x": float(g.readout * g.pixel_spacing_mm[0]),
        "fov_y": float(g.lines * g.pixel_spacing_mm[1]),
        "store_row": int(g.row),
        "frame_interval_s": float(g.dt_s),
        "pixel_spacing_h_mm": float(g.pixel_spacing_mm[0]),
        "pixel_spacing_w_mm": float(g.pixel_spacing_mm[1]),
        "subject_id": g.subject_id,
    }


def _written(v: Any) -> bool:
    """A double user parameter is written when finite (a template slot, a string, always)."""
    return not isinstance(v, float) or bool(np.isfinite(v))


def ismrmrd_header(g: ViewGeometry, values: dict[str, Any] | None = None) -> Any:
    """The ``ismrmrd.xsd.ismrmrdHeader`` of one view: encoding (matrix (H, W, 1), field of view from
    the pixel spacing, limits: ky in [0, W−1] centred at W/2, phase = frame in [0, T−1]), Cartesian
    trajectory, parallel imaging (R, embedded calibration when the mask has ACS lines), channels,
    and user parameters naming the store, subject, view and mask.

    ``values`` replaces :func:`subject_values` (``HeaderTemplate`` passes placeholders)."""
    import ismrmrd.xsd as x

    v = subject_values(g) if values is None else values
    h, w = g.readout, g.lines
    fov = x.fieldOfViewMm(x=v["fov_x"], y=v["fov_y"], z=NOMINAL_SLICE_THICKNESS_MM[g.kind])
    space = x.encodingSpaceType(matrixSize=x.matrixSizeType(x=h, y=w, z=1), fieldOfView_mm=fov)
    recon = x.encodingSpaceType(matrixSize=x.matrixSizeType(x=h, y=w, z=1), fieldOfView_mm=fov)
    zero = x.limitType(minimum=0, maximum=0, center=0)
    limits = x.encodingLimitsType(
        kspace_encoding_step_0=x.limitType(minimum=0, maximum=h - 1, center=h // 2),
        kspace_encoding_step_1=x.limitType(minimum=0, maximum=w - 1, center=w // 2),
        kspace_encoding_step_2=zero, average=zero, slice=zero, contrast=zero,
        phase=x.limitType(minimum=0, maximum=g.frames - 1, center=0),
        repetition=zero, set=zero, segment=zero,
    )
    n_acs = int(np.count_nonzero(g.acs))
    acc = float(g.mask.get("acceleration", 1.0))
    parallel = x.parallelImagingType(
        accelerationFactor=x.accelerationFactorType(kspace_encoding_step_1=max(round(acc), 1), kspace_encoding_step_2=1),
        calibrationMode=x.calibrationModeType.EMBEDDED if n_acs else x.calibrationModeType.OTHER,
    )
    enc = x.encodingType(
        encodedSpace=space, reconSpace=recon, encodingLimits=limits,
        trajectory=x.trajectoryType.CARTESIAN, parallelImaging=parallel,
    )
    strings = {
        "subject_id": v["subject_id"],
        "view": g.view,
        "mask": g.mask_name,
        "mask_pattern": str(g.mask.get("pattern", "")),
        "phase_encoding_axis": "W (ky, matrixSize.y); readout H (kx, matrixSize.x)",
        "data_origin": "simulated from magnitude cine images (kspace_sim): see docs/export.md on implicit data crimes",
        **{k: str(v) for k, v in g.provenance.items()},
    }
    doubles = {
        "acceleration": acc,
        "achieved_acceleration": float(g.mask.get("achieved_acceleration", float("nan"))),
        "achieved_acceleration_without_acs": float(g.mask.get("achieved_acceleration_without_acs", float("nan"))),
        "frame_interval_s": v["frame_interval_s"],
        "pixel_spacing_h_mm": v["pixel_spacing_h_mm"],
        "pixel_spacing_w_mm": v["pixel_spacing_w_mm"],
    }
    longs = {"store_row": v["store_row"], "view_index": int(g.view_index), "acs_lines": n_acs}
    user = x.userParametersType(
        userParameterLong=[x.userParameterLongType(name=k, value=val) for k, val in longs.items()],
        userParameterDouble=[x.userParameterDoubleType(name=k, value=val) for k, val in doubles.items() if _written(val)],
        userParameterString=[x.userParameterStringType(name=k, value=val) for k, val in strings.items()],
    )
    return x.ismrmrdHeader(
        subjectInformation=x.subjectInformationType(patientID=v["patient_id"]) if v["patient_id"] else None,
        acquisitionSystemInformation=x.acquisitionSystemInformationType(
            systemVendor="kspace_sim (simulated k-space)", systemModel=str(g.provenance.get("simulator_version", "")),
            receiverChannels=g.channels,
        ),
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=round(LARMOR_HZ_PER_T * NOMINAL_FIELD_T)),
        encoding=[enc],
        userParameters=user,
    )


_SERIALIZER: Any = None


def header_xml(header: Any) -> str:
    """The header as ``ismrmrd.xsd.ToXML`` serialises it (same xsdata settings, byte-identical
    output: a test holds them equal), with one xsdata context kept for the process instead of a
    new one per call (which costs ~60 ms per header)."""
    global _SERIALIZER
    if _SERIALIZER is None:
        from xsdata.formats.dataclass.context import XmlContext
        from xsdata.formats.dataclass.serializers import XmlSerializer
        from xsdata.formats.dataclass.serializers.config import SerializerConfig

        _SERIALIZER = XmlSerializer(config=SerializerConfig(encoding="ascii", indent=" "), context=XmlContext())
    return _SERIALIZER.render(header, ns_map={"": "http://www.ismrm.org/ISMRMRD"})


_SLOT = re.compile(r"@@kspace_sim:(\w+)@@")


def _slotted(value: Any) -> bool:
    """Whether a subject value can be a template slot: its presence and the XML around it do not
    depend on it (non-empty strings, ints, finite floats; an empty id drops ``subjectInformation``
    and a non-finite double its user parameter, so those stay literal, in the template's key)."""
    if isinstance(value, str):
        return value != ""
    return isinstance(value, int) or (isinstance(value, float) and bool(np.isfinite(value)))


def _xml_text(value: str | float) -> str:
    """A value as xsdata writes it as element text: numbers through xsdata's converter (``repr``
    style floats), strings escaped by ``xml.sax.saxutils`` (the handler xsdata writes through)."""
    from xml.sax.saxutils import escape

    from xsdata.formats.converter import converter

    return escape(value) if isinstance(value, str) else converter.serialize(value)


class HeaderTemplate:
    """The header XML of one view with the subject's values (:func:`subject_values`) left as slots.

    Rendered once by xsdata with placeholders; :meth:`render` joins the fixed text with a
    subject's values, byte-equal to ``header_xml(ismrmrd_header(g))`` (a test holds them equal),
    at a fraction of xsdata's cost per file. ``key`` identifies the headers it can render: every
    non-subject field of the geometry and the subject values that are not slots.
    """

    def __init__(self, g: ViewGeometry) -> None:
        values = subject_values(g)
        self.slots = tuple(k for k, v in values.items() if _slotted(v))
        self.key = HeaderTemplate.key_of(g)
        text = header_xml(ismrmrd_header(g, {**values, **{k: f"@@kspace_sim:{k}@@" for k in self.slots}}))
        self.parts = _SLOT.split(text)  # literal, slot name, literal, …
        found = sorted(set(self.parts[1::2]))
        if found != sorted(self.slots):
            raise ValueError(f"header template: slots {found} in the XML, expected {sorted(self.slots)}")

    @staticmethod
    def key_of(g: ViewGeometry) -> str:
        """What a header depends on besides the values of its slots."""
        values = subject_values(g)
        fixed = {f.name: getattr(g, f.name) for f in fields(g) if f.name not in SUBJECT_FIELDS}
        fixed["literal_values"] = {k: v for k, v in values.items() if not _slotted(v)}
        fixed["slots"] = [k for k, v in values.items() if _slotted(v)]
        return json.dumps(fixed, sort_keys=True, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else repr(o))

    def render(self, g: ViewGeometry) -> str:
        """The header XML of ``g`` (which must have this template's :meth:`key_of`)."""
        values = subject_values(g)
        out = list(self.parts)
        out[1::2] = [_xml_text(values[name]) for name in self.parts[1::2]]
        return "".join(out)


_TEMPLATES: dict[str, HeaderTemplate] = {}


def view_header_xml(g: ViewGeometry) -> str:
    """``header_xml(ismrmrd_header(g))``, from a :class:`HeaderTemplate` kept per process for each
    view of a store and mask (a worker renders each view's template once)."""
    key = HeaderTemplate.key_of(g)
    template = _TEMPLATES.get(key)
    if template is None:
        if len(_TEMPLATES) >= 64:
            _TEMPLATES.clear()
        template = _TEMPLATES[key] = HeaderTemplate(g)
    return template.render(g)


def _bit(flag: int) -> np.uint64:
    return np.uint64(1) << np.uint64(flag - 1)


def acquisition_order(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, lines)``: the ``(n,)`` frame t and line ky of each acquisition of a ``(T, W)`` mask,
    frame by frame, ky ascending."""
    return np.nonzero(mask)


def acquisition_headers(frames: np.ndarray, lines: np.ndarray, acs: np.ndarray, channels: int, readout: int) -> np.ndarray:
    """One ``ismrmrd.hdf5.acquisition_header_dtype`` row per acquisition (:func:`acquisition_order`).

    ``idx.kspace_encode_step_1 = ky``, ``idx.phase = t``, ``scan_counter``, ``number_of_samples =
    readout`` (H), ``channels`` active and available, ``center_sample = H/2``, unit directions, flags
    (first/last in encode step 1 and in phase on each frame's first/last line, first/last in slice,
    last in measurement, ``ACQ_IS_PARALLEL_CALIBRATION`` + ``…_AND_IMAGING`` on the lines of ``acs``
    (``(W,)`` bool), which belong to the image too).
    """
    import ismrmrd
    from ismrmrd.hdf5 import acquisition_header_dtype

    tt, yy = frames, lines
    n = tt.size
    head = np.zeros(n, acquisition_header_dtype)
    head["version"] = 1
    head["scan_counter"] = np.arange(n, dtype=np.uint32)
    head["number_of_samples"] = readout
    head["available_channels"] = channels
    head["active_channels"] = channels
    head["channel_mask"][:, 0] = np.uint64((1 << channels) - 1) if channels < 64 else np.uint64(2**64 - 1)
    head["center_sample"] = readout // 2
    head["read_dir"] = (1.0, 0.0, 0.0)
    head["phase_dir"] = (0.0, 1.0, 0.0)
    head["slice_dir"] = (0.0, 0.0, 1.0)
    head["idx"]["kspace_encode_step_1"] = yy
    head["idx"]["phase"] = tt
    flags = np.zeros(n, np.uint64)
    if n:
        first = np.r_[True, tt[1:] != tt[:-1]]
        last = np.r_[tt[1:] != tt[:-1], True]
        flags[first] |= _bit(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1) | _bit(ismrmrd.ACQ_FIRST_IN_PHASE)
        flags[last] |= _bit(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1) | _bit(ismrmrd.ACQ_LAST_IN_PHASE)
        flags[0] |= _bit(ismrmrd.ACQ_FIRST_IN_SLICE)
        flags[-1] |= _bit(ismrmrd.ACQ_LAST_IN_SLICE) | _bit(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
        flags[acs[yy]] |= _bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) | _bit(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    head["flags"] = flags
    return head


def acquisition_samples(kspace: np.ndarray, frames: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """``(n, C, H)`` complex64: each acquisition's readout for every channel, from ``kspace``
    ``(C, T, H, W)``."""
    return np.ascontiguousarray(kspace[:, frames, :, lines].astype(np.complex64, copy=False))


#: HDF5's in-memory variable-length element ``hvl_t``: ``{size_t len; void *p}``
_HVL = np.dtype([("len", np.uintp), ("p", np.uintp)])
_MEMORY_TYPE: Any = None


def _memory_rows(heads: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, Any]:
    """``(rows, HDF5 memory type)`` of the acquisitions as HDF5 reads them from memory: the header,
    an empty ``traj`` and ``data`` pointing at ``samples``' row i (``2 C H`` float32), which must
    stay alive until the rows are written."""
    global _MEMORY_TYPE
    from h5py import h5t
    from ismrmrd.hdf5 import acquisition_header_dtype

    dtype = np.dtype([("head", acquisition_header_dtype), ("traj", _HVL), ("data", _HVL)])
    if _MEMORY_TYPE is None:
        t = h5t.create(h5t.COMPOUND, dtype.itemsize)
        t.insert(b"head", dtype.fields["head"][1], h5t.py_create(acquisition_header_dtype))
        t.insert(b"traj", dtype.fields["traj"][1], h5t.vlen_create(h5t.NATIVE_FLOAT))
        t.insert(b"data", dtype.fields["data"][1], h5t.vlen_create(h5t.NATIVE_FLOAT))
        _MEMORY_TYPE = t
    n = heads.shape[0]
    rows = np.zeros(n, dtype)
    rows["head"] = heads
    if n:
        per_row = samples.nbytes // n
        rows["data"]["len"] = per_row // 4
        rows["data"]["p"] = samples.ctypes.data + per_row * np.arange(n, dtype=np.uintp)
    return rows, _MEMORY_TYPE


def write_ismrmrd_view(path: str | Path, xml: str, kspace: np.ndarray, mask: np.ndarray, acs: np.ndarray) -> None:
    """Write one view's ISMRMRD file: ``dataset/xml`` (the header text) and ``dataset/data`` (one
    acquisition per sampled line), the layout ``ismrmrd.File`` writes and reads.

    Args:
        path: the file to write.
        xml: the header (:func:`view_header_xml`).
        kspace: ``(C, T, H, W)`` complex64, the view's k-space for C channels (C = 1: no coils).
        mask: ``(T, W)`` bool, True = line acquired.
        acs: ``(W,)`` bool, ACS (calibration) lines.
    """
    import h5py
    from h5py import h5s
    from ismrmrd.hdf5 import acquisition_dtype

    c, _, h, _ = kspace.shape
    frames, lines = acquisition_order(mask)
    heads = acquisition_headers(frames, lines, acs, c, h)
    samples = acquisition_samples(kspace, frames, lines)
    rows, memory_type = _memory_rows(heads, samples)
    with h5py.File(path, "w", libver="earliest") as f:
        grp = f.create_group("dataset", track_order=False)
        text = grp.create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes), track_times=False)
        text[0] = xml
        data = grp.create_dataset("data", shape=rows.shape, dtype=acquisition_dtype, maxshape=(None,), chunks=True, track_times=False)
        if rows.size:
            data.id.write(h5s.ALL, h5s.ALL, rows, mtype=memory_type)
    del samples  # the rows point into it until here


def read_ismrmrd_view(path: str | Path) -> tuple[np.ndarray, np.ndarray, Any]:
    """Read a file back with ``ismrmrd.File``: ``(kspace (C, T, H, W) complex64 zero-filled,
    mask (T, W) bool, header)``, sizes from the header's encoding."""
    import ismrmrd

    with ismrmrd.File(str(path), "r") as f:
        ds = f["dataset"]
        header = ds.header
        acqs = ds.acquisitions[:] if ds.has_acquisitions() else []  # one read, not one per row
    enc = header.encoding[0]
    h, w = enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y
    t_frames = enc.encodingLimits.phase.maximum + 1
    c = header.acquisitionSystemInformation.receiverChannels
    k = np.zeros((c, t_frames, h, w), np.complex64)
    m = np.zeros((t_frames, w), bool)
    for a in acqs:
        t, ky = a.idx.phase, a.idx.kspace_encode_step_1
        k[:, t, :, ky] = a.data
        m[t, ky] = True
    return k, m, header
