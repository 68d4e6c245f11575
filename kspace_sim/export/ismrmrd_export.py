"""ISMRMRD (MRD v1, HDF5) files of one view of one subject, through the ``ismrmrd`` package.

Layout of a file (as ``ismrmrd.File`` writes and reads it): group ``dataset`` with ``xml`` (the
ISMRMRD header, serialised by ``ismrmrd.xsd.ToXML``) and ``data`` (one row of
``ismrmrd.hdf5.acquisition_dtype`` per acquired line). The acquisitions are the sampled
phase-encoding lines of the mask, frame by frame (``idx.phase`` = frame t, ``idx.kspace_encode_step_1``
= line ky, ascending), each ``number_of_samples = H`` readout samples for every channel.
The store's W axis is the phase-encoding direction (ky, ``encodedSpace.matrixSize.y``), H the
readout (kx, ``matrixSize.x``).

The acquisition rows are built as one numpy structured array of the package's own dtype instead of
one ``ismrmrd.Acquisition`` object per line (6× faster; a test holds the rows byte-equal to what
``ismrmrd.Acquisition`` + ``ismrmrd.File`` write). The writer takes k-space with a coil axis
``(C, T, H, W)``: single-channel stores pass C = 1; multi-coil stores will pass their coils as
channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LARMOR_HZ_PER_T",
    "NOMINAL_FIELD_T",
    "NOMINAL_SLICE_THICKNESS_MM",
    "ViewGeometry",
    "ismrmrd_header",
    "acquisition_rows",
    "header_xml",
    "write_ismrmrd_view",
    "read_ismrmrd_view",
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


def ismrmrd_header(g: ViewGeometry) -> Any:
    """The ``ismrmrd.xsd.ismrmrdHeader`` of one view: encoding (matrix (H, W, 1), field of view from
    the pixel spacing, limits: ky in [0, W−1] centred at W/2, phase = frame in [0, T−1]), Cartesian
    trajectory, parallel imaging (R, embedded calibration when the mask has ACS lines), channels,
    and user parameters naming the store, subject, view and mask."""
    import ismrmrd.xsd as x

    h, w = g.readout, g.lines
    fov = x.fieldOfViewMm(
        x=float(h * g.pixel_spacing_mm[0]), y=float(w * g.pixel_spacing_mm[1]),
        z=NOMINAL_SLICE_THICKNESS_MM[g.kind],
    )
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
        "subject_id": g.subject_id,
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
        "frame_interval_s": float(g.dt_s),
        "pixel_spacing_h_mm": float(g.pixel_spacing_mm[0]),
        "pixel_spacing_w_mm": float(g.pixel_spacing_mm[1]),
    }
    longs = {"store_row": int(g.row), "view_index": int(g.view_index), "acs_lines": n_acs}
    user = x.userParametersType(
        userParameterLong=[x.userParameterLongType(name=k, value=v) for k, v in longs.items()],
        userParameterDouble=[x.userParameterDoubleType(name=k, value=v) for k, v in doubles.items() if np.isfinite(v)],
        userParameterString=[x.userParameterStringType(name=k, value=v) for k, v in strings.items()],
    )
    return x.ismrmrdHeader(
        subjectInformation=x.subjectInformationType(patientID=g.subject_id) if g.subject_id else None,
        acquisitionSystemInformation=x.acquisitionSystemInformationType(
            systemVendor="kspace_sim (simulated k-space)", systemModel=str(g.provenance.get("simulator_version", "")),
            receiverChannels=g.channels,
        ),
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=round(LARMOR_HZ_PER_T * NOMINAL_FIELD_T)),
        encoding=[enc],
        userParameters=user,
    )


def _bit(flag: int) -> np.uint64:
    return np.uint64(1) << np.uint64(flag - 1)


def acquisition_rows(kspace: np.ndarray, mask: np.ndarray, acs: np.ndarray) -> np.ndarray:
    """One ``ismrmrd.hdf5.acquisition_dtype`` row per sampled line.

    Args:
        kspace: ``(C, T, H, W)`` complex64, one view (C channels, T frames, H readout, W phase encodes).
        mask: ``(T, W)`` bool, True = line acquired.
        acs: ``(W,)`` bool, ACS (calibration) lines.

    Returns:
        ``(n,)`` structured rows in acquisition order (frame by frame, ky ascending): header with
        ``idx.kspace_encode_step_1 = ky``, ``idx.phase = t``, ``scan_counter``, flags (first/last in
        encode step 1 and in phase for each frame's first/last line, first/last in slice, last in
        measurement, ``ACQ_IS_PARALLEL_CALIBRATION`` + ``…_AND_IMAGING`` on sampled ACS lines,
        which belong to the image too), data ``(C, H)`` complex as float32 pairs, no trajectory.
    """
    import ismrmrd
    from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

    c, _, h, _ = kspace.shape
    tt, yy = np.nonzero(mask)
    n = tt.size
    head = np.zeros(n, acquisition_header_dtype)
    head["version"] = 1
    head["scan_counter"] = np.arange(n, dtype=np.uint32)
    head["number_of_samples"] = h
    head["available_channels"] = c
    head["active_channels"] = c
    head["channel_mask"][:, 0] = np.uint64((1 << c) - 1) if c < 64 else np.uint64(2**64 - 1)
    head["center_sample"] = h // 2
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
    rows = np.empty(n, acquisition_dtype)
    rows["head"] = head
    lines = np.ascontiguousarray(kspace[:, tt, :, yy].astype(np.complex64, copy=False))  # (n, C, H)
    pairs = lines.view(np.float32).reshape(n, 2 * c * h)
    data = np.empty(n, dtype=object)
    data[:] = list(pairs)
    rows["data"] = data
    empty = np.zeros(0, np.float32)
    traj = np.empty(n, dtype=object)
    traj[:] = [empty] * n
    rows["traj"] = traj
    return rows


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


def write_ismrmrd_view(path: str | Path, header: Any, rows: np.ndarray) -> None:
    """Write an ISMRMRD file: ``dataset/xml`` (the header) and ``dataset/data`` (the rows), the
    layout ``ismrmrd.File`` writes (readable by ``ismrmrd.File`` and ``ismrmrd.Dataset``)."""
    import h5py
    from ismrmrd.hdf5 import acquisition_dtype

    with h5py.File(path, "w", libver="earliest") as f:
        grp = f.create_group("dataset", track_order=False)
        xml = grp.create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes), track_times=False)
        xml[0] = header_xml(header)
        grp.create_dataset("data", data=rows.astype(acquisition_dtype, copy=False), maxshape=(None,), chunks=True, track_times=False)


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
