"""CMRxRecon's kspace_full and kus written a block of frames at a time: the MAT-file allocated by
``allocate_mat73`` and filled from a small buffer, hashed as written."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import numpy as np
import pytest

pytest.importorskip("h5py")

from kspace_sim.export.cmrxrecon_export import cine_full, cine_undersampled, stream_cine_full_and_kus
from kspace_sim.export.matlab_v73 import allocate_mat73, read_mat73, write_mat73
from kspace_sim.export.subject_task import _AppendedData, _cine_full_and_kus, file_digests

CREATED = dt.datetime(2026, 1, 2, 3, 4, 5)


def _kspace(shape=(2, 3, 7, 8, 6), seed=0):
    rng = np.random.default_rng(seed)
    k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    k.real[0, 0, 0, 0, :3] = -0.0  # signed zeros must survive the product bit for bit
    mask = rng.random((shape[1], shape[2], shape[4])) < 0.4  # (Z, T, W)
    return k, mask


@pytest.mark.parametrize("block_bytes", [1, 2 * 3 * 6 * 8 * 8 * 2 + 5, 1 << 20])
def test_streamed_blocks_are_the_variables_bytes(block_bytes):
    """One frame per block, two (the last block short: 7 frames), and all at once: the blocks,
    concatenated, are the stored bytes of cine_full and cine_undersampled, bit for bit."""
    k, mask = _kspace()
    full_parts, kus_parts = [], []
    stream_cine_full_and_kus(k, mask, lambda v: full_parts.append(bytes(v)), lambda v: kus_parts.append(bytes(v)), block_bytes)
    full = cine_full(k)
    assert b"".join(full_parts) == np.ascontiguousarray(full.T).tobytes()
    assert b"".join(kus_parts) == np.ascontiguousarray(cine_undersampled(full, mask).T).tobytes()
    assert len(full_parts) == {1: 7, 1 << 20: 1}.get(block_bytes, 4)


@pytest.mark.parametrize("value", [
    _kspace()[0].transpose(3, 4, 0, 1, 2),  # complex single, MATLAB order (H, W, C, Z, T)
    np.arange(24, dtype=np.float64).reshape(2, 3, 4),
    np.random.default_rng(1).random((5, 4, 3)) < 0.5,
])
def test_allocated_file_filled_in_place_reads_as_write_mat73s(tmp_path, value):
    """allocate_mat73 + the data written at its offset: the variable reads back equal, the MATLAB
    header is there, and the file is write_mat73's but for the dataset's allocation flags."""
    from scipy.io.matlab import matfile_version

    path, ref = tmp_path / "a.mat", tmp_path / "ref.mat"
    offset = allocate_mat73(path, "x", value.shape, value.dtype, CREATED)
    assert read_mat73(path, "x").shape == value.shape  # complete and readable before the data
    data = np.ascontiguousarray(value.T).tobytes()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)
    got = read_mat73(path, "x")
    assert got.dtype == value.dtype and np.array_equal(got, value)
    assert matfile_version(str(path)) == (2, 0)
    write_mat73(ref, {"x": value}, CREATED)
    a, b = path.read_bytes(), ref.read_bytes()
    assert len(a) == len(b) and a[:512] == b[:512]
    assert sum(x != y for x, y in zip(a, b)) <= 4  # allocation and fill-time flags of the dataset
    assert a[offset:offset + len(data)] == data


def test_appended_data_hashes_the_finished_file(tmp_path):
    path = tmp_path / "a.mat"
    value = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
    data = np.ascontiguousarray(value.T).tobytes()
    for sha in (False, True):
        offset = allocate_mat73(path, "x", value.shape, value.dtype, CREATED)
        sink = _AppendedData(path, offset, len(data), sha)
        for i in range(0, len(data), 7):
            sink.write(memoryview(data[i:i + 7]))
        digests = sink.close()
        assert digests == file_digests(path, sha)
        assert np.array_equal(read_mat73(path, "x"), value)
        if sha:
            assert digests["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    plain = tmp_path / "plain"  # a region in the middle of a file: the bytes after it are hashed too
    plain.write_bytes(b"head" + bytes(len(data)) + b"tail")
    sink = _AppendedData(plain, 4, len(data), True)
    sink.write(memoryview(data))
    assert sink.close() == file_digests(plain, True) and plain.read_bytes() == b"head" + data + b"tail"
    offset = allocate_mat73(path, "x", value.shape, value.dtype, CREATED)
    sink = _AppendedData(path, offset, len(data), False)
    with pytest.raises(ValueError, match="region of"):
        sink.write(memoryview(data + b"x"))
    sink.write(memoryview(data[:-1]))
    with pytest.raises(ValueError, match="region of"):
        sink.close()
    with pytest.raises(OSError, match="shorter than its data offset"):
        _AppendedData(plain, plain.stat().st_size + 1, 1, False)


def test_group_write_gives_both_files_and_their_digests(tmp_path):
    """The writer-thread job for one cine group: kspace_full and kus read back as the store's
    product, each digest equal to the finished file's."""
    k, mask = _kspace()
    paths = [tmp_path / "full.mat", tmp_path / "kus.mat"]
    digests = _cine_full_and_kus(k, mask, CREATED, True)(paths)
    assert digests == [file_digests(p, True) for p in paths]
    full = read_mat73(paths[0], "kspace_full")
    assert full.shape == (8, 6, 2, 3, 7) and np.array_equal(full, cine_full(k))
    kus = read_mat73(paths[1], "kus")
    assert kus.view(np.uint64).tobytes() == cine_undersampled(cine_full(k), mask).view(np.uint64).tobytes()


def test_a_failed_block_leaves_no_open_file(tmp_path, monkeypatch):
    from kspace_sim.export import subject_task

    k, mask = _kspace()
    opened = []
    real_init = subject_task._AppendedData.__init__

    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        opened.append(self)

    def fail(self, data):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(subject_task._AppendedData, "__init__", init)
    monkeypatch.setattr(subject_task._AppendedData, "write", fail)
    with pytest.raises(OSError, match="disk full"):
        _cine_full_and_kus(k, mask, CREATED, False)([tmp_path / "f.mat", tmp_path / "k.mat"])
    assert len(opened) == 2 and all(s._fd is None for s in opened)
    assert os.path.exists(tmp_path / "f.mat")  # the caller (_FileWriter) removes the temporary files
