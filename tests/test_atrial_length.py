"""The published atrial length (ukbb_cardiac, REFERENCES.md "Atria"): the digital line pinned to
OpenCV's ``cv2.line`` pixel by pixel, and a hand-worked atrium where the published length and the
old extent measure differ."""

from __future__ import annotations

import numpy as np
import pytest

from kspace_sim.labels.atria import atrial_area_length, atrial_phenotypes, single_plane_volume, ukbb_cardiac_length_mm
from kspace_sim.labels.digital_line import clip_line, line_pixels

# ---- the digital line, worked by hand ----------------------------------------------------------
# OpenCV points are (x = column, y = row); line_pixels returns (row, col). The 8-connected walk
# steps one pixel along the major axis and one along the minor axis after pixel k whenever
# err_k = dx − 2dy − 2dy·k + 2dx·m_k < 0, i.e. the minor offset is m_k = ceil((2dy·k − dx)/(2dx)).


def _as_set(pixels: np.ndarray) -> set[tuple[int, int]]:
    return {(int(r), int(c)) for r, c in pixels}


def test_line_shallow_slope() -> None:
    # (0,0)→(5,2): dx=5, dy=2, m_k = ceil((4k−5)/10) = 0,0,1,1,2,2
    got = line_pixels((0, 0), (5, 2), (4, 7))
    assert got.tolist() == [[0, 0], [0, 1], [1, 2], [1, 3], [2, 4], [2, 5]]


def test_line_tie_and_direction() -> None:
    # (0,0)→(4,2): dx=4, dy=2, m_k = ceil((4k−4)/8) = 0,0,1,1,2 (err = 0 at k=1: no minor step)
    want = [[0, 0], [0, 1], [1, 2], [1, 3], [2, 4]]
    assert line_pixels((0, 0), (4, 2), (4, 7)).tolist() == want
    assert line_pixels((4, 2), (0, 0), (4, 7)).tolist() == want  # drawn left to right either way
    # (0,2)→(4,0): y decreasing: rows 2,2,1,1,0
    assert line_pixels((0, 2), (4, 0), (4, 7)).tolist() == [[2, 0], [2, 1], [1, 2], [1, 3], [0, 4]]


def test_line_steep() -> None:
    # (1,−2)→(2,9) on 5×4: clipped to the top row first: x1 += int((0+2)·(2−1)/(9+2)) = int(0.18) = 0
    # → (1,0); bottom: x2 += int((4−9)·(2−1)/(0−9)) = int(0.56) = 0 → (2,4); then the steep walk
    # (dy=4, dx=1): m_k = ceil((2k−4)/8) = 0,0,0,1,1
    assert clip_line((1, -2), (2, 9), (5, 4)) == ((1, 0), (2, 4))
    assert line_pixels((1, -2), (2, 9), (5, 4)).tolist() == [[0, 1], [1, 1], [2, 1], [3, 2], [4, 2]]


def test_line_clipped_like_opencv_not_masked() -> None:
    # (−3,1)→(4,5) on a 4-row × 6-column image. OpenCV clips first: p1 lies below the last row
    # (y=5 > 3): x2 += int((3−5)·(4+3)/(5−1)) = int(−3.5) = −3 → (1,3); p0 lies left of column 0:
    # y1 += int((0+3)·(3−1)/(1+3)) = int(1.5) = 1 → (0,2). The walk (0,2)→(1,3) gives rows 2, 3.
    assert clip_line((-3, 1), (4, 5), (4, 6)) == ((0, 2), (1, 3))
    assert line_pixels((-3, 1), (4, 5), (4, 6)).tolist() == [[2, 0], [3, 1]]
    # drawing the whole line and masking it to the image would give (3, 0), (3, 1) instead
    assert (3, 0) not in _as_set(line_pixels((-3, 1), (4, 5), (4, 6)))


def test_line_outside_image_and_single_point() -> None:
    assert line_pixels((-5, -5), (-1, -9), (10, 10)).shape == (0, 2)
    assert clip_line((20, 0), (30, 5), (10, 10)) is None
    assert line_pixels((3, 4), (3, 4), (10, 10)).tolist() == [[4, 3]]


def test_line_matches_opencv() -> None:
    """Pixel for pixel against ``cv2.line`` (thickness 1, 8-connected) on random lines, most of
    them leaving the image (a dev dependency: opencv-python-headless)."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(7)
    for trial in range(3000):
        rows, cols = (int(v) for v in rng.integers(1, 48, 2))
        p0 = tuple(int(v) for v in rng.integers(-60, 110, 2))
        p1 = tuple(int(v) for v in rng.integers(-60, 110, 2))
        if trial % 4 == 0:  # short lines, inside and near the image
            p0 = tuple(int(v) for v in rng.integers(-2, 12, 2))
            p1 = (p0[0] + int(rng.integers(-4, 5)), p0[1] + int(rng.integers(-4, 5)))
        img = np.zeros((rows, cols), dtype=np.uint8)
        cv2.line(img, p0, p1, 1)
        got = line_pixels(p0, p1, (rows, cols))
        assert _as_set(got) == _as_set(np.argwhere(img > 0)), (rows, cols, p0, p1)
        assert len(_as_set(got)) == len(got)


# ---- a worked atrium: the widest part off the centre line --------------------------------------
# Pixel (i, j) → world: i along RAS z (1.5 mm), j along RAS x (2.0 mm); the long axis is RAS z, so
# the long-axis projection orders pixels by row i. The atrium (rows i = 0..8, columns j = 1..5):
#   rows 2..8, columns 2..4: a bar of 7 × 3 = 21 pixels (its centre line is column 3);
#   rows 0..2, columns 1 and 5: two lobes of 3 × 2 = 6 pixels reaching 2 rows below the bar.
# n = 27 pixels (row 2 counts 5): area = 27 · 1.5 · 2.0 = 81 mm² = 0.81 cm².
# Sorted by height: rows 0, 1 (2 pixels each), 2 (5): the bottom third (pixels[:9]) is rows 0..2,
# centroid b = (i, j) = ((0·2 + 1·2 + 2·5)/9, 3) = (4/3, 3); the top third (pixels[18:]) is rows
# 6..8, centroid c = (7, 3). Major axis u = (1, 0); the line from c − 100u = (−93, 3) to c + 100u
# = (107, 3) is column 3, clipped to rows 0..11. It meets the atrium in rows 2..8 of column 3, so
# L = (8 − 2) · 1.5 mm = 9.0 mm = 0.90 cm. The old extent measure spans all rows 0..8 along u:
# 8 · 1.5 = 12.0 mm = 1.20 cm. Single-plane volumes 8/(3π)·A²/L: 8/(3π)·0.81²/0.9 = 0.61879 mL
# (published) and 8/(3π)·0.81²/1.2 = 0.46409 mL (extent).

WORKED_AREA_CM2 = 0.81
WORKED_LENGTH_CM = 0.90
WORKED_EXTENT_CM = 1.20


def _worked_atrium(n_frames: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mask = np.zeros((12, 8, n_frames), dtype=bool)
    mask[2:9, 2:5] = True  # the bar
    mask[0:3, 1] = True  # the lobes
    mask[0:3, 5] = True
    affine = np.eye(4)
    affine[:3, 0] = (0.0, 0.0, 1.5)  # i → RAS z
    affine[:3, 1] = (2.0, 0.0, 0.0)  # j → RAS x
    affine[:3, 2] = (0.0, 6.0, 0.0)
    affine[:3, 3] = (10.0, -20.0, 30.0)
    return mask, affine, np.array([0.0, 0.0, 1.0])


def test_worked_atrium_published_length() -> None:
    mask, affine, axis = _worked_atrium()
    m = atrial_area_length(mask, affine, (1.5, 2.0, 6.0), axis)
    np.testing.assert_allclose(m.area_cm2, WORKED_AREA_CM2, rtol=1e-12)
    np.testing.assert_allclose(m.length_cm, WORKED_LENGTH_CM, rtol=1e-12)
    assert ukbb_cardiac_length_mm(mask[..., 0], affine, axis) == pytest.approx(9.0, rel=1e-12)
    v = single_plane_volume(m.area_cm2, m.length_cm)
    np.testing.assert_allclose(v, 8 / (3 * np.pi) * 0.81**2 / 0.9, rtol=1e-12)
    np.testing.assert_allclose(v, 0.618794, rtol=1e-6)


def test_worked_atrium_extent_differs() -> None:
    mask, affine, axis = _worked_atrium()
    m = atrial_area_length(mask, affine, (1.5, 2.0, 6.0), axis, length_method="extent")
    np.testing.assert_allclose(m.length_cm, WORKED_EXTENT_CM, rtol=1e-12)
    np.testing.assert_allclose(single_plane_volume(m.area_cm2, m.length_cm), 0.464096, rtol=1e-6)
    with pytest.raises(ValueError, match="length_method"):
        atrial_area_length(mask, affine, (1.5, 2.0, 6.0), axis, length_method="major_axis")


def test_worked_atrium_phenotypes_use_published_length() -> None:
    """RA single plane from the worked atrium (constant over frames): V max = V min = 0.61879 mL."""
    mask, affine, axis = _worked_atrium()
    r = atrial_phenotypes(mask, mask, mask, affine, affine, (1.5, 2.0, 6.0), (1.5, 2.0, 6.0), axis)
    assert r.reasons == []
    v = 8 / (3 * np.pi) * 0.81**2 / 0.9
    np.testing.assert_allclose(r.values[4:8], [v, v, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(r.values[0:2], [v, v], rtol=1e-12)  # biplane of two equal views
    old = atrial_phenotypes(
        mask, mask, mask, affine, affine, (1.5, 2.0, 6.0), (1.5, 2.0, 6.0), axis, length_method="extent"
    )
    np.testing.assert_allclose(old.values[4], 8 / (3 * np.pi) * 0.81**2 / 1.2, rtol=1e-12)


def test_no_major_axis_is_a_qc_reason() -> None:
    """Two pixels have no thirds to draw an axis through (the reference returns −1 and leaves a
    volume of 0 in that frame): the length is NaN and the chamber's phenotypes are missing."""
    mask, affine, axis = _worked_atrium()
    tiny = np.zeros_like(mask)
    tiny[4, 3:5] = True
    m = atrial_area_length(tiny, affine, (1.5, 2.0, 6.0), axis)
    assert np.isnan(m.length_cm).all() and (m.area_cm2 > 0).all()
    r = atrial_phenotypes(mask, mask, tiny, affine, affine, (1.5, 2.0, 6.0), (1.5, 2.0, 6.0), axis)
    assert np.isfinite(r.values[:4]).all() and np.isnan(r.values[4:]).all()
    assert r.reasons and "RA (4ch) has no length in 3 frame(s)" in r.reasons[0]
