"""Writing one NIfTI volume: deterministic standard gzip, atomic, read back exactly."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kspace_sim.sources.nifti import read_volume, write_volume


def _image() -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    data = (rng.normal(200, 40, size=(24, 20, 3, 5))).astype(np.int16)
    img = nib.Nifti1Image(data, np.diag([1.8, 1.8, 8.0, 1.0]))
    img.header.set_zooms((1.8, 1.8, 8.0, 0.03))
    img.header.set_xyzt_units("mm", "sec")
    return img


def test_gz_is_a_standard_gzip_stream_with_mtime_zero_and_the_same_bytes_every_time(tmp_path: Path) -> None:
    img = _image()
    a, b = tmp_path / "a" / "sa.nii.gz", tmp_path / "b" / "sa.nii.gz"
    for p in (a, b):
        p.parent.mkdir()
        write_volume(img, p)
    raw = a.read_bytes()
    assert raw == b.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip magic, mtime 0
    assert gzip.decompress(raw) == img.to_bytes()  # the standard library reads it
    back, arr = read_volume(a)
    np.testing.assert_array_equal(arr, np.asanyarray(img.dataobj))
    assert back.header.get_zooms() == pytest.approx((1.8, 1.8, 8.0, 0.03))
    assert sorted(q.name for q in a.parent.iterdir()) == ["sa.nii.gz"]  # no temporary file left


def test_plain_nii_is_the_uncompressed_image(tmp_path: Path) -> None:
    img = _image()
    write_volume(img, tmp_path / "sa.nii")
    assert (tmp_path / "sa.nii").read_bytes() == img.to_bytes()


def test_a_write_killed_halfway_leaves_the_existing_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "sa.nii.gz"
    write_volume(_image(), path)
    before = path.read_bytes()
    real_write = Path.write_bytes

    def half_then_fail(self: Path, data: bytes) -> int:
        real_write(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    other = nib.Nifti1Image(np.zeros((4, 4, 1, 2), np.int16), np.eye(4))
    with pytest.raises(OSError, match="disk full"):
        write_volume(other, path)
    assert path.read_bytes() == before
