"""MATLAB v7.3 MAT-files written and read with h5py.

A v7.3 MAT-file is an HDF5 file with a 512-byte user block that starts with MATLAB's text header
(116 bytes of text, 8 bytes subsystem offset, version 0x0200, endian indicator ``IM``), one HDF5
dataset per variable at the root, and a ``MATLAB_class`` attribute on each (``single``,
``double``, ``logical`` …). MATLAB is column-major: a variable of MATLAB size ``(n1, n2, …, nk)``
is an HDF5 dataset of shape ``(nk, …, n2, n1)``; complex variables are the compound type
``{real, imag}``. :func:`write_mat73` takes arrays in MATLAB's dimension order and writes them that
way; ``h5py.File(path)[name]`` then has the reversed shape (as the CMRxRecon loaders expect:
``np.transpose(f['kspace_full'][()], [4, 3, 2, 1, 0])``, ``k['real'] + 1j * k['imag']``).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

__all__ = ["COMPLEX64_COMPOUND", "MATLAB_CLASSES", "allocate_mat73", "is_mat73", "matlab_userblock", "read_mat73", "write_mat73"]

USERBLOCK_SIZE = 512
#: numpy dtype → MATLAB class name
MATLAB_CLASSES = {
    np.dtype("float32"): "single",
    np.dtype("float64"): "double",
    np.dtype("complex64"): "single",
    np.dtype("complex128"): "double",
    np.dtype("bool"): "logical",
    np.dtype("uint8"): "uint8",
    np.dtype("int16"): "int16",
    np.dtype("int32"): "int32",
}
#: how MATLAB (and the CMRxRecon files) store a complex single variable in HDF5
COMPLEX64_COMPOUND = np.dtype([("real", "<f4"), ("imag", "<f4")])
COMPLEX128_COMPOUND = np.dtype([("real", "<f8"), ("imag", "<f8")])


def matlab_userblock(created: _dt.datetime) -> bytes:
    """The 512-byte user block of a v7.3 MAT-file: MATLAB's text header, no subsystem data,
    version 0x0200, endian indicator ``IM`` (little-endian), zero padding."""
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created.strftime('%a %b %d %H:%M:%S %Y')} HDF5 schema 1.00 ."
    head = text.encode("ascii").ljust(116, b" ")[:116]
    head += b"\x00" * 8  # subsystem data offset: none
    head += (0x0200).to_bytes(2, "little") + b"IM"
    return head.ljust(USERBLOCK_SIZE, b"\x00")


def _stored(value: np.ndarray) -> tuple[np.ndarray, str]:
    """``(array as stored in HDF5, MATLAB class)`` for a MATLAB-order array."""
    dtype = np.dtype(value.dtype)
    if dtype not in MATLAB_CLASSES:
        raise TypeError(f"no MATLAB class for dtype {dtype}")
    data = np.ascontiguousarray(value.T)  # MATLAB column-major (n1, …, nk) = HDF5 row-major (nk, …, n1)
    return data.view(_hdf5_dtype(dtype)), MATLAB_CLASSES[dtype]


def write_mat73(path: str | Path, variables: dict[str, np.ndarray], created: _dt.datetime) -> None:
    """Write ``variables`` (MATLAB dimension order, any of :data:`MATLAB_CLASSES`) to a v7.3 MAT-file.

    Written to ``path`` directly (callers wanting atomicity write to a temporary name and rename).
    ``created`` goes into the text header (pass a fixed time for bit-identical files). No
    compression, no time stamps in the HDF5 objects.
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "w", userblock_size=USERBLOCK_SIZE, libver="earliest") as f:
        for name, value in variables.items():
            data, cls = _stored(np.asarray(value))
            ds = f.create_dataset(name, data=data, track_times=False)
            ds.attrs.create("MATLAB_class", np.bytes_(cls))
            if cls == "logical":
                ds.attrs.create("MATLAB_int_decode", np.int32(1))
    with open(path, "r+b") as fh:
        fh.write(matlab_userblock(created))


def _hdf5_dtype(dtype: np.dtype) -> np.dtype:
    """How a variable of numpy ``dtype`` is stored: complex as ``{real, imag}``, bool as uint8."""
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if dtype.kind == "c":
        return COMPLEX64_COMPOUND if dtype == np.complex64 else COMPLEX128_COMPOUND
    return dtype


def allocate_mat73(path: str | Path, name: str, matlab_shape: tuple[int, ...], dtype: np.dtype, created: _dt.datetime) -> int:
    """Create a v7.3 MAT-file holding one variable ``name`` of MATLAB size ``matlab_shape`` whose
    data are allocated in the file but not written; returns the byte offset of those data.

    The caller writes the variable's bytes there itself (``os.pwrite``): ``prod(matlab_shape) ·
    itemsize`` bytes, the C-order bytes of the array in HDF5 order (``matlab_shape`` reversed; the
    MATLAB-order array's ``.T``), complex as interleaved (real, imag). Until then the region reads
    as zeros (the file is complete and readable; no fill value is written). The file is the one
    :func:`write_mat73` writes for the same variable except for the dataset's allocation and
    fill-time flags (early / never instead of late / if set); so a large variable can be written
    in blocks from a small buffer instead of from one full-size array.
    """
    import h5py
    from h5py import h5d, h5p

    dtype = np.dtype(dtype)
    if dtype not in MATLAB_CLASSES:
        raise TypeError(f"no MATLAB class for dtype {dtype}")
    path = Path(path)
    with h5py.File(path, "w", userblock_size=USERBLOCK_SIZE, libver="earliest") as f:
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5d.FILL_TIME_NEVER)
        ds = f.create_dataset(name, shape=tuple(matlab_shape)[::-1], dtype=_hdf5_dtype(dtype), track_times=False, dcpl=dcpl)
        ds.attrs.create("MATLAB_class", np.bytes_(MATLAB_CLASSES[dtype]))
        if dtype == np.bool_:
            ds.attrs.create("MATLAB_int_decode", np.int32(1))
        offset = ds.id.get_offset()
    with open(path, "r+b") as fh:
        fh.write(matlab_userblock(created))
    return int(offset)


def read_mat73(path: str | Path, name: str) -> np.ndarray:
    """Variable ``name`` of a v7.3 MAT-file in MATLAB dimension order (complex for ``{real, imag}``,
    bool for ``logical``), read with plain h5py."""
    import h5py

    with h5py.File(path, "r") as f:
        ds = f[name]
        cls = ds.attrs.get("MATLAB_class", b"")
        raw = ds[()]
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if raw.dtype.names == ("real", "imag"):
        out = np.empty(raw.shape, dtype=np.complex64 if raw.dtype["real"] == np.float32 else np.complex128)
        out.real, out.imag = raw["real"], raw["imag"]
        raw = out
    elif cls == "logical":
        raw = raw.astype(bool)
    return raw.T


def is_mat73(path: str | Path) -> bool:
    """True when the file starts with a v7.3 MAT-file text header."""
    with open(path, "rb") as fh:
        head = fh.read(128)
    return head.startswith(b"MATLAB 7.3 MAT-file") and head[126:128] == b"IM"
