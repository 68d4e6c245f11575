"""Phenotypes on analytic phantoms: ventricular volumes (ellipsoids), atrial area–length volumes
(ellipses), every QC rule, label validation and missing segmentations."""

from __future__ import annotations

import numpy as np
import pytest

from kspace_sim.labels.atria import (
    atrial_area_length,
    atrial_phenotypes,
    biplane_volume,
    chamber_summary,
    long_axis_from_sax,
    single_plane_volume,
)
from kspace_sim.labels.phenotypes import PHENOTYPE_COLUMNS, PHENOTYPE_UNITS, subject_phenotypes
from kspace_sim.labels.ventricles import ventricular_phenotypes
from kspace_sim.sources.subject import SubjectError, SubjectVolumes

SPACING = (1.0, 1.25, 2.0)  # mm, anisotropic on purpose
SHAPE = (100, 90, 40)
T = 8
DT = 0.05  # s
LV_AXES = (20.0, 18.0, 28.0)  # semi-axes (mm) at ED
MYO = 6.0  # mm wall
LV_SCALE = np.array([1.0, 0.95, 0.85, 0.75, 0.72, 0.8, 0.9, 0.97])  # ES = frame 4
RV_AXES = (14.0, 12.0, 24.0)
RV_SCALE = np.array([1.0, 0.96, 0.9, 0.8, 0.78, 0.84, 0.92, 0.98])


def _ellipsoid(centre_mm, axes_mm, spacing=SPACING, shape=SHAPE):
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij", sparse=True)
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grids, centre_mm, axes_mm)) <= 1.0


def ventricle_phantom(rv_scale: np.ndarray = RV_SCALE) -> np.ndarray:
    """(X, Y, Z, T) seg_sa: LV blood pool ellipsoid, myocardial shell, RV ellipsoid beside it
    (its semi-axes scaled by ``rv_scale[t]`` in frame t)."""
    seg = np.zeros((*SHAPE, T), dtype=np.uint8)
    c_lv = (45.0, 45.0, 40.0)
    c_rv = (45.0 + 20 + MYO + 14 + 2, 45.0, 40.0)
    for t in range(T):
        lv_axes = tuple(a * LV_SCALE[t] for a in LV_AXES)
        lv = _ellipsoid(c_lv, lv_axes)
        epi = _ellipsoid(c_lv, tuple(a + MYO for a in lv_axes))
        rv = _ellipsoid(c_rv, tuple(a * rv_scale[t] for a in RV_AXES)) & ~epi
        seg[..., t][epi] = 2
        seg[..., t][lv] = 1
        seg[..., t][rv] = 3
    return seg


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return ventricle_phantom()


def _vol(axes, scale=1.0):
    return 4.0 / 3.0 * np.pi * np.prod([a * scale for a in axes]) * 1e-3  # mL


def test_columns_and_units_match_references() -> None:
    expected = (
        "LVEDV (mL), LVESV (mL), LVSV (mL), LVEF (%), LVCO (L/min), LVM (g), RVEDV (mL), RVESV (mL), "
        "RVSV (mL), RVEF (%), LAV max (mL), LAV min (mL), LASV (mL), LAEF (%), RAV max (mL), RAV min (mL), "
        "RASV (mL), RAEF (%)"
    ).split(", ")
    assert list(PHENOTYPE_COLUMNS) == expected
    assert PHENOTYPE_UNITS[3] == "%" and PHENOTYPE_UNITS[4] == "L/min" and PHENOTYPE_UNITS[5] == "g"


def test_ventricular_volumes_on_ellipsoids(phantom: np.ndarray) -> None:
    r = ventricular_phenotypes(phantom, SPACING, DT)
    assert r.reasons == [] and r.ed == 0 and r.es == 4
    lvedv, lvesv = _vol(LV_AXES), _vol(LV_AXES, LV_SCALE[4])
    lvm = 1.05 * (_vol(tuple(a + MYO for a in LV_AXES)) - lvedv)
    rvedv, rvesv = _vol(RV_AXES), _vol(RV_AXES, RV_SCALE[4])
    hr = 60.0 / (T * DT)
    expected = [
        lvedv, lvesv, lvedv - lvesv, 100 * (lvedv - lvesv) / lvedv, (lvedv - lvesv) * hr / 1000, lvm,
        rvedv, rvesv, rvedv - rvesv, 100 * (rvedv - rvesv) / rvedv,
    ]
    np.testing.assert_allclose(r.values, expected, rtol=0.02)


def test_rv_end_systole_is_the_lv_end_systole_frame() -> None:
    """RVESV is read at the LV's ES frame (REFERENCES.md: the same ED/ES frames), not at the RV's
    own smallest volume: here the RV is smallest at frame 6, two frames after the LV (frame 4)."""
    rv_scale = np.array([1.0, 0.97, 0.93, 0.9, 0.86, 0.8, 0.74, 0.9])
    seg = ventricle_phantom(rv_scale)
    rv_ml = (seg == 3).sum(axis=(0, 1, 2)) * np.prod(SPACING) * 1e-3  # (T,) voxel-counted RV volumes
    assert int(np.argmin(rv_ml)) == 6
    r = ventricular_phenotypes(seg, SPACING, DT)
    assert r.reasons == [] and r.es == 4
    rvedv, rvesv, rvsv, rvef = r.values[6:10]
    assert rvesv == pytest.approx(rv_ml[4], rel=1e-9) and rvedv == pytest.approx(rv_ml[0], rel=1e-9)
    assert rvesv > 1.1 * rv_ml[6]  # the two frames give clearly different volumes
    assert rvsv == pytest.approx(rv_ml[0] - rv_ml[4], rel=1e-9)
    assert rvef == pytest.approx(100 * (rv_ml[0] - rv_ml[4]) / rv_ml[0], rel=1e-9)


def test_voxel_volume_uses_spacing(phantom: np.ndarray) -> None:
    a = ventricular_phenotypes(phantom, SPACING, DT).values
    b = ventricular_phenotypes(phantom, (2.0, 1.25, 2.0), DT).values  # dx doubled
    np.testing.assert_allclose(b[[0, 1, 2, 5, 6]], 2 * a[[0, 1, 2, 5, 6]], rtol=1e-6)
    np.testing.assert_allclose(b[3], a[3], rtol=1e-6)  # EF is scale free


def test_ventricular_qc_too_few_slices(phantom: np.ndarray) -> None:
    seg = phantom.copy()
    z_lv = np.flatnonzero((seg[..., 0] == 1).any(axis=(0, 1)))
    seg[:, :, z_lv[:-5]] = 0  # LV left on 5 slices
    r = ventricular_phenotypes(seg, SPACING, DT)
    assert np.isnan(r.values).all()
    assert "fewer than 6" in r.reasons[0]


def test_ventricular_qc_gap(phantom: np.ndarray) -> None:
    seg = phantom.copy()
    z_lv = np.flatnonzero((seg[..., 4] == 1).any(axis=(0, 1)))
    seg[:, :, z_lv[len(z_lv) // 2 - 3], 4] = 0  # a hole at ES
    r = ventricular_phenotypes(seg, SPACING, DT)
    assert np.isnan(r.values).all() and "missing on slices" in r.reasons[0] and "ES" in r.reasons[0]


def test_ventricular_qc_empty_lv_at_ed(phantom: np.ndarray) -> None:
    seg = phantom.copy()
    seg[..., 0][seg[..., 0] == 1] = 0
    r = ventricular_phenotypes(seg, SPACING, DT)
    assert np.isnan(r.values).all() and "no LV blood pool at ED" in r.reasons[0]


def test_ventricular_qc_missing_rv_only_affects_rv(phantom: np.ndarray) -> None:
    seg = phantom.copy()
    seg[seg == 3] = 0
    r = ventricular_phenotypes(seg, SPACING, DT)
    assert np.isfinite(r.values[:6]).all() and np.isnan(r.values[6:]).all()
    assert len(r.reasons) == 1 and "RV blood pool" in r.reasons[0]


def test_ventricular_qc_rv_absent_from_mid_cavity(phantom: np.ndarray) -> None:
    seg = phantom.copy()
    lv = (seg[..., 0] == 1).sum(axis=(0, 1))
    mid = int(round((lv * np.arange(lv.size)).sum() / lv.sum()))
    seg[:, :, mid - 1 : mid + 2][seg[:, :, mid - 1 : mid + 2] == 3] = 0
    r = ventricular_phenotypes(seg, SPACING, DT)
    assert np.isnan(r.values[6:]).all() and "mid-cavity" in r.reasons[0]


def test_invalid_dt_only_affects_lvco(phantom: np.ndarray) -> None:
    r = ventricular_phenotypes(phantom, SPACING, float("nan"))
    assert np.isnan(r.values[4]) and np.isfinite(np.delete(r.values, 4)).all()
    assert "LVCO" in r.reasons[0]


# ---- atria -------------------------------------------------------------------------------


def lax_view(axes_px, theta, n_frames=6, scales=None, shape=(160, 150), spacing=(1.2, 1.2)):
    """A long-axis view with an elliptical atrium whose first semi-axis points along the
    in-plane direction ``theta``; returns (mask (X, Y, T), affine, long axis)."""
    scales = np.ones(n_frames) if scales is None else np.asarray(scales)
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    # physical in-plane coordinates (mm)
    x, y = (i - shape[0] / 2) * spacing[0], (j - shape[1] / 2) * spacing[1]
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    mask = np.zeros((*shape, n_frames), dtype=bool)
    for t, s in enumerate(scales):
        mask[..., t] = (u / (axes_px[0] * s)) ** 2 + (v / (axes_px[1] * s)) ** 2 <= 1
    # the view plane is spanned by RAS x' and z' after a rotation about x (oblique, like a LAX view)
    rot = np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)], [0, np.sin(0.4), np.cos(0.4)]])
    e_i, e_j = rot @ np.array([1.0, 0, 0]), rot @ np.array([0, 0, 1.0])
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 3] = e_i * spacing[0], e_j * spacing[1], (10, -20, 30)
    long_axis = np.cos(theta) * e_i + np.sin(theta) * e_j  # the ellipse's first axis, in RAS
    if long_axis[2] < 0:
        long_axis = -long_axis
    return mask, affine, long_axis


def line_step(theta: float, spacing: float = 1.2) -> float:
    """World length (mm) of one step of the 8-connected digital line along the in-plane direction
    ``theta`` on square pixels: one pixel along the major pixel axis per step."""
    return spacing / max(abs(np.cos(theta)), abs(np.sin(theta)))


@pytest.mark.parametrize("theta", [0.0, 0.5, 1.3])
def test_area_length_on_ellipse(theta: float) -> None:
    a, b = 40.0, 24.0  # mm
    mask, affine, axis = lax_view((a, b), theta)
    m = atrial_area_length(mask, affine, (1.2, 1.2, 6.0), axis)
    np.testing.assert_allclose(m.area_cm2, np.pi * a * b / 100, rtol=0.01)
    # the published L joins the first and last pixel centres of the digital line inside the
    # ellipse: on average the chord 2a less one line step (demo/truth.py)
    length = 2 * a - line_step(theta)
    np.testing.assert_allclose(m.length_cm, length / 10, rtol=0.015)
    np.testing.assert_allclose(single_plane_volume(m.area_cm2, m.length_cm), 8 / (3 * np.pi) * (np.pi * a * b) ** 2 / length / 1000, rtol=0.03)
    extent = atrial_area_length(mask, affine, (1.2, 1.2, 6.0), axis, length_method="extent")
    np.testing.assert_allclose(extent.area_cm2, m.area_cm2)
    np.testing.assert_allclose(extent.length_cm, 2 * a / 10, rtol=0.02)
    assert (m.n_large_components == 1).all()


def test_area_length_formulas() -> None:
    assert single_plane_volume(10.0, 5.0) == pytest.approx(8 / (3 * np.pi) * 100 / 5)
    assert biplane_volume(10.0, 8.0, 5.0, 4.0) == pytest.approx(8 / (3 * np.pi) * 80 / 4.5)
    np.testing.assert_allclose(chamber_summary(np.array([50.0, 30.0, 40.0])), [50, 30, 20, 40])


def test_long_axis_points_up() -> None:
    aff = np.diag([1.8, 1.8, -10.0, 1.0])
    np.testing.assert_allclose(long_axis_from_sax(aff), [0, 0, 1])
    aff[:3, 2] = (3.0, 0.0, 4.0)
    np.testing.assert_allclose(long_axis_from_sax(aff), [0.6, 0, 0.8])


def _atria(scales2=None, scales4=None, ra_scales=None, edit=None):
    s = np.array([1.0, 0.95, 0.85, 0.75, 0.8, 0.9])
    la2, aff2, axis = lax_view((36.0, 22.0), 0.2, scales=s if scales2 is None else scales2)
    la4, aff4, _ = lax_view((38.0, 24.0), 0.2, scales=s if scales4 is None else scales4)
    ra4, _, _ = lax_view((30.0, 20.0), 0.2, scales=s if ra_scales is None else ra_scales)
    ra4 = np.roll(ra4, 40, axis=1)
    if edit:
        edit(la2, la4, ra4)
    sp = (1.2, 1.2, 6.0)
    return atrial_phenotypes(la2, la4, ra4, aff2, aff4, sp, sp, axis), s


def test_biplane_la_and_single_plane_ra() -> None:
    r, s = _atria()
    assert r.reasons == []
    k, step = 8 / (3 * np.pi), line_step(0.2)  # published L: the chord 2a·s less one line step
    la = k * (np.pi * 38 * 24) * (np.pi * 36 * 22) * s**4 / ((2 * 38 * s - step + 2 * 36 * s - step) / 2) / 1000
    ra = k * (np.pi * 30 * 20) ** 2 * s**4 / (2 * 30 * s - step) / 1000
    for vals, v in ((r.values[:4], la), (r.values[4:], ra)):
        expected = [v.max(), v.min(), v.max() - v.min(), 100 * (v.max() - v.min()) / v.max()]
        np.testing.assert_allclose(vals, expected, rtol=0.03)


def test_atrial_qc_empty_frame() -> None:
    r, _ = _atria(edit=lambda la2, la4, ra4: la2[..., 3].fill(False))
    assert np.isnan(r.values[:4]).all() and np.isfinite(r.values[4:]).all()
    assert "LA (2ch) area is 0" in r.reasons[0] and "frame 3" in r.reasons[0]


def test_atrial_qc_two_large_components() -> None:
    def edit(la2, la4, ra4):
        ra4[5:10, 5:10, 2] = True  # 25 pixels, far from the RA

    r, _ = _atria(edit=edit)
    assert np.isfinite(r.values[:4]).all() and np.isnan(r.values[4:]).all()
    assert "RA (4ch) has two components" in r.reasons[0]


def test_atrial_qc_small_component_is_tolerated() -> None:
    def edit(la2, la4, ra4):
        ra4[5:8, 5:8, 2] = True  # 9 pixels: not a second large component

    r, _ = _atria(edit=edit)
    assert r.reasons == [] and np.isfinite(r.values).all()


def test_atrial_qc_area_ratio_cyclic() -> None:
    jump = np.array([1.0, 0.95, 0.9, 0.85, 0.8, 0.66])  # area ratio frame 5 -> 0 is 1/0.66² ≈ 2.3
    r, _ = _atria(scales4=jump)
    assert np.isnan(r.values[:4]).all()
    assert "between frames 5 and 0" in r.reasons[0]


def test_missing_lax_segmentation() -> None:
    la2, aff2, axis = lax_view((36.0, 22.0), 0.2)
    r = atrial_phenotypes(la2, None, None, aff2, None, (1.2, 1.2, 6.0), None, axis)
    assert np.isnan(r.values).all() and len(r.reasons) == 2
    assert "seg_la_4ch not available" in r.reasons[0]


# ---- one subject -------------------------------------------------------------------------


def _subject(phantom: np.ndarray, six_class: bool = False) -> SubjectVolumes:
    s = np.array([1.0, 0.9, 0.8, 0.75, 0.8, 0.85, 0.9, 0.95])
    la2, aff2, axis = lax_view((36.0, 22.0), 0.0, n_frames=T, scales=s)
    la4, aff4, _ = lax_view((38.0, 24.0), 0.0, n_frames=T, scales=s)
    ra4 = np.roll(lax_view((30.0, 20.0), 0.0, n_frames=T, scales=s)[0], 40, axis=1)
    seg4 = np.where(la4, 4 if six_class else 1, np.where(ra4, 5 if six_class else 2, 0)).astype(np.uint8)
    if six_class:
        seg4[:20, :20] = 1  # some LV in the 6-class map
    sa_aff = np.eye(4)
    sa_aff[:3, 2] = -axis * 2.0  # slice normal along the long axis (pointing down: flipped)
    sa_aff[:3, 0], sa_aff[:3, 1] = np.array([1.0, 0, 0]), np.cross(axis, [1.0, 0, 0]) * 1.25
    return SubjectVolumes(
        "s1",
        images={"sa": np.zeros(phantom.shape, np.float32)},
        affines={"sa": sa_aff, "seg_sa": sa_aff, "seg_la_2ch": aff2, "seg_la_4ch": aff4, "la_2ch": aff2, "la_4ch": aff4},
        segs={"seg_sa": phantom, "seg_la_2ch": la2.astype(np.uint8), "seg_la_4ch": seg4},
        spacing={"sa": SPACING, "la_2ch": (1.2, 1.2, 6.0), "la_4ch": (1.2, 1.2, 6.0)},
        dt=DT,
    )


def test_subject_phenotypes(phantom: np.ndarray) -> None:
    r = subject_phenotypes(_subject(phantom))
    assert r.values.dtype == np.float32 and r.values.shape == (18,)
    assert r.reasons == [] and np.isfinite(r.values).all()
    np.testing.assert_allclose(r.values[:10], ventricular_phenotypes(phantom, SPACING, DT).values, rtol=1e-6)
    six = subject_phenotypes(_subject(phantom, six_class=True))
    np.testing.assert_array_equal(six.values, r.values)


def test_missing_segmentations_give_nan_with_reasons(phantom: np.ndarray) -> None:
    vol = _subject(phantom)
    vol.segs = {}
    r = subject_phenotypes(vol)
    assert np.isnan(r.values).all()
    assert any("seg_sa not available" in x for x in r.reasons)
    assert any("LA:" in x for x in r.reasons) and any("RA:" in x for x in r.reasons)
    vol = _subject(phantom)
    del vol.segs["seg_la_2ch"]
    r = subject_phenotypes(vol)
    assert np.isnan(r.values[10:14]).all() and np.isfinite(r.values[14:]).all() and np.isfinite(r.values[:10]).all()


@pytest.mark.parametrize("name,bad", [("seg_sa", 4), ("seg_la_2ch", 2), ("seg_la_4ch", 7)])
def test_unexpected_labels_raise(phantom: np.ndarray, name: str, bad: int) -> None:
    vol = _subject(phantom)
    vol.segs[name] = vol.segs[name].copy()
    vol.segs[name].flat[0] = bad
    with pytest.raises(SubjectError, match=f"{name} has unexpected label values .*{bad}"):
        subject_phenotypes(vol)
