"""Imaging the phantom: view geometry (affines), rasterisation, bSSFP-like intensities, noise.

All views cut one heart in world (RAS, mm) coordinates. A voxel's label is the phantom's implicit
shape functions evaluated at the voxel centre (no partial volume), for every frame at once: every
ellipsoid test is a linear form of the static features ``[a², b², z², a, b, z, 1]`` of the voxel's
local heart coordinates, so one matrix product gives all shapes at all frames.

Views:
- ``sa``: ``n_slices`` short-axis slices perpendicular to the long axis, 10 mm apart, slice 0
  basal (above the base plane), the slice normal pointing towards the apex; a slice boundary lies
  exactly on the LV base plane, and the sub-pixel in-plane grid offset is chosen among a few
  candidates to minimise the voxelisation error of the ventricular volumes (:func:`align_sax_grid`).
- ``la_4ch`` (plane through the long axis and the RV direction, φ = 0°), ``la_2ch`` (φ = 90°, the
  RV lies on the other side of the septal cut so only LV and LA are cut), ``la_3ch`` (through the
  aortic root).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from kspace_sim.demo.phantom import CycleState, HeartParameters, cycle_state, ellipsoid_quadrics

__all__ = [
    "SAX_SLICE_SPACING_MM",
    "LAX_SLICE_THICKNESS_MM",
    "TISSUE",
    "ViewGeometry",
    "view_geometries",
    "align_sax_grid",
    "local_coordinates",
    "rasterise_tissue",
    "Intensities",
    "sample_intensities",
    "render_view",
]

SAX_SLICE_SPACING_MM = 10.0
LAX_SLICE_THICKNESS_MM = 6.0
TISSUE = {"none": 0, "lv_blood": 1, "lv_myocardium": 2, "rv_blood": 3, "la": 4, "ra": 5, "rv_wall": 6}
_HEART_MARGIN_MM = 8.0
_FRAME_CHUNK = 10
_BLUR_KERNEL = np.array([0.25, 0.5, 0.25], dtype=np.float32)


@dataclass(frozen=True)
class ViewGeometry:
    """One view's grid.

    Attributes:
        name: ``sa``, ``la_2ch``, ``la_3ch`` or ``la_4ch``.
        shape: ``(X, Y, Z)`` voxels (Z = 1 for long-axis views).
        affine: ``(4, 4)`` voxel index → RAS (mm).
        spacing: ``(dx, dy, dz)`` mm (dz: slice spacing for ``sa``, slice thickness for long axis).
        plane_angle_deg: long-axis plane angle φ in the local (a, b) plane; None for ``sa``.
    """

    name: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    plane_angle_deg: float | None


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _grid_affine(
    centre: np.ndarray,
    ex: np.ndarray,
    ey: np.ndarray,
    ez: np.ndarray,
    shape: tuple[int, int],
    spacing: tuple[float, float, float],
    k0_offset: np.ndarray,
) -> np.ndarray:
    """Affine whose in-plane voxel grid is centred on ``centre`` (+ ``k0_offset`` for slice 0)."""
    dx, dy, dz = spacing
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = dx * ex, dy * ey, dz * ez
    aff[:3, 3] = centre + k0_offset - (shape[0] - 1) / 2 * dx * ex - (shape[1] - 1) / 2 * dy * ey
    return aff


def view_geometries(p: HeartParameters, rng: np.random.Generator) -> dict[str, ViewGeometry]:
    """Sample matrix sizes, pixel spacing (1.7–2.0 mm), field-of-view offsets and in-plane rotations.

    The short-axis stack has 1–2 slices above the base plane and covers the whole LV epicardium at
    ED, 10–12 slices in all.
    """
    rot = p.rotation_world_from_local
    a, b, u = rot[:, 0], rot[:, 1], rot[:, 2]
    origin = np.asarray(p.base_centre_world)
    epi_length = p.lv_length_ed + p.apex_wall_ratio * p.wall_thickness_ed
    out: dict[str, ViewGeometry] = {}

    n_above = int(rng.integers(1, 3))
    n_below = math.ceil(epi_length / SAX_SLICE_SPACING_MM) + int(rng.integers(0, 2))
    n_slices = int(np.clip(n_above + n_below, 10, 12))
    n_above = min(n_above, n_slices - math.ceil(epi_length / SAX_SLICE_SPACING_MM))
    d_sa = float(rng.uniform(1.7, 2.0))
    shape_sa = (int(rng.integers(144, 177)), int(rng.integers(144, 177)))
    psi = np.deg2rad(rng.uniform(190.0, 230.0))
    ex = _unit(np.cos(psi) * a + np.sin(psi) * b)
    ez = -u
    ey = np.cross(ez, ex)
    centre = origin - 0.4 * epi_length * u + 0.25 * p.rv_depth_ed * a
    centre = centre + rng.normal(0.0, 6.0) * ex + rng.normal(0.0, 6.0) * ey
    centre = centre - ((centre - origin) @ u) * u  # in the base plane
    k0 = (n_above - 0.5) * SAX_SLICE_SPACING_MM * u
    spacing = (d_sa, d_sa, SAX_SLICE_SPACING_MM)
    affine = _grid_affine(centre, ex, ey, ez, shape_sa, spacing, k0)
    out["sa"] = ViewGeometry("sa", (*shape_sa, n_slices), affine, spacing, None)

    d_la = float(rng.uniform(1.7, 2.0))
    aorta_angle = math.degrees(math.atan2(p.aorta_root[1], p.aorta_root[0]))
    for name, phi in (("la_2ch", 90.0), ("la_3ch", aorta_angle), ("la_4ch", 0.0)):
        direction = np.cos(np.deg2rad(phi)) * a + np.sin(np.deg2rad(phi)) * b
        gamma = np.deg2rad(rng.uniform(-25.0, 25.0))
        ex = np.cos(gamma) * direction + np.sin(gamma) * u
        ey = -np.sin(gamma) * direction + np.cos(gamma) * u
        ez = np.cross(ex, ey)
        shape = (int(rng.integers(144, 177)), int(rng.integers(144, 177)))
        centre = origin - 0.25 * epi_length * u + 0.15 * p.rv_depth_ed * direction
        centre = centre + rng.normal(0.0, 6.0) * ex + rng.normal(0.0, 6.0) * ey
        centre = centre - ((centre - origin) @ ez) * ez  # in the plane of the long axis
        spacing = (d_la, d_la, LAX_SLICE_THICKNESS_MM)
        affine = _grid_affine(centre, ex, ey, ez, shape, spacing, np.zeros(3))
        out[name] = ViewGeometry(name, (*shape, 1), affine, spacing, phi)
    return out


def align_sax_grid(
    view: ViewGeometry,
    p: HeartParameters,
    es_frame: int,
    target_ml: Mapping[str, float],
    rng: np.random.Generator,
    n_candidates: int = 8,
) -> ViewGeometry:
    """Shift the short-axis grid in-plane by the sub-pixel offset (of ``n_candidates``: none and
    random ones in [−½, ½) pixel) whose voxel-counted volumes best match the analytic ones.

    In a stack perpendicular to the long axis every slice has the same grid position relative to
    the LV axis, so in-plane digitisation errors do not average out over slices; choosing the offset
    keeps voxel counts within a fraction of a percent of the truth. ``target_ml`` holds the analytic
    ``lv_ed``, ``lv_es``, ``myo_ed``, ``rv_ed``, ``rv_es`` volumes (mL).
    """
    state = cycle_state(p, np.array([0, es_frame]))
    voxel_ml = float(np.prod(view.spacing)) * 1e-3
    ex = view.affine[:3, 0] / view.spacing[0]
    ey = view.affine[:3, 1] / view.spacing[1]
    targets = np.array([target_ml[k] for k in ("lv_ed", "lv_es", "myo_ed", "rv_ed", "rv_es")])
    offsets = np.concatenate([np.zeros((1, 2)), rng.uniform(-0.5, 0.5, size=(n_candidates - 1, 2))])
    rot = p.rotation_world_from_local
    lo, hi = heart_box(p)
    local0 = local_coordinates(view, p).reshape(-1, 3)
    local0 = local0[np.all((local0 >= lo - view.spacing[0]) & (local0 <= hi + view.spacing[0]), axis=1)]
    best, best_error = view, np.inf
    for dx_px, dy_px in offsets:
        shift = dx_px * view.spacing[0] * ex + dy_px * view.spacing[1] * ey
        tissue = rasterise_tissue(local0 + rot.T @ shift, p, state)  # (2, M)
        pairs = ((1, 0), (1, 1), (2, 0), (3, 0), (3, 1))  # (tissue code, frame) in the order of targets
        counts = np.array([(tissue[t] == code).sum() for code, t in pairs]) * voxel_ml
        error = float(np.max(np.abs(counts / targets - 1.0)))
        if error < best_error:
            affine = view.affine.copy()
            affine[:3, 3] += shift
            best, best_error = replace(view, affine=affine), error
    return best


def local_coordinates(view: ViewGeometry, p: HeartParameters) -> np.ndarray:
    """``(X, Y, Z, 3)`` float64 local heart coordinates (a, b, z) (mm) of the voxel centres."""
    rot = p.rotation_world_from_local
    lin = rot.T @ view.affine[:3, :3]
    off = rot.T @ (view.affine[:3, 3] - np.asarray(p.base_centre_world))
    i, j, k = (np.arange(n, dtype=np.float64) for n in view.shape)
    return (
        i[:, None, None, None] * lin[:, 0]
        + j[None, :, None, None] * lin[:, 1]
        + k[None, None, :, None] * lin[:, 2]
        + off
    )


def world_coordinates(view: ViewGeometry) -> np.ndarray:
    """``(X, Y, Z, 3)`` float64 RAS coordinates (mm) of the voxel centres."""
    aff = view.affine
    i, j, k = (np.arange(n, dtype=np.float64) for n in view.shape)
    return (
        i[:, None, None, None] * aff[:3, 0]
        + j[None, :, None, None] * aff[:3, 1]
        + k[None, None, :, None] * aff[:3, 2]
        + aff[:3, 3]
    )


def heart_box(p: HeartParameters) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper corners (local a, b, z; mm) of a box holding the heart at every frame."""
    epi_r = p.lv_radius_ed + p.wall_thickness_ed
    a_hi = max(epi_r + p.rv_depth_ed + p.rv_wall_thickness, p.ra_centre[0] + p.ra_semi_axes[0])
    a_lo = min(-epi_r, p.la_centre[0] - p.la_semi_axes[0])
    b_hi = max(
        p.rv_half_width_ed + p.rv_wall_thickness,
        abs(p.la_centre[1]) + p.la_semi_axes[1],
        abs(p.ra_centre[1]) + p.ra_semi_axes[1],
    )
    z_lo = -(p.lv_length_ed + p.apex_wall_ratio * p.wall_thickness_ed)
    z_hi = max(p.la_centre[2] + p.la_semi_axes[2], p.ra_centre[2] + p.ra_semi_axes[2])
    m = _HEART_MARGIN_MM
    return np.array([a_lo - m, -b_hi - m, z_lo - m]), np.array([a_hi + m, b_hi + m, z_hi + m])


def rasterise_tissue(local: np.ndarray, p: HeartParameters, state: CycleState) -> np.ndarray:
    """Tissue codes (:data:`TISSUE`) at points ``local`` ``(M, 3)`` (a, b, z mm) at every frame: ``(T, M)`` uint8.

    Points at ``z ≤ 0`` are tested against the ventricular shapes only, points above the base
    plane against the atria only.
    """
    quadrics = ellipsoid_quadrics(p, state)  # (T, 6, 7)
    n_t = quadrics.shape[0]
    a, b, z = local[:, 0], local[:, 1], local[:, 2]
    features = np.stack([a * a, b * b, z * z, a, b, z, np.ones_like(a)])  # (7, M)
    below = z <= 0.0
    # envelopes: the epicardium and the RV are largest at ED (frame of least emptying), the atria
    # at the largest emptying (they scale about a point inside themselves)
    t_ed, t_es = int(np.argmin(state.emptying)), int(np.argmax(state.emptying))
    inside_ed = quadrics[t_ed, [1, 3]] @ features <= 0.0
    inside_es = quadrics[t_es, [4, 5]] @ features <= 0.0
    idx_below = np.flatnonzero(below & inside_ed.any(axis=0))
    idx_above = np.flatnonzero(~below & inside_es.any(axis=0))
    f_below, f_above = features[:, idx_below], features[:, idx_above]
    septal = a[idx_below] >= p.rv_septal_cut
    tissue = np.zeros((n_t, local.shape[0]), dtype=np.uint8)
    for t0 in range(0, n_t, _FRAME_CHUNK):
        t1 = min(t0 + _FRAME_CHUNK, n_t)
        q = quadrics[t0:t1]
        inside = (q[:, :4].reshape(-1, 7) @ f_below).reshape(t1 - t0, 4, -1) <= 0.0
        endo, epi = inside[:, 0], inside[:, 1]
        rv = inside[:, 2] & septal & ~epi
        rv_wall = inside[:, 3] & septal & ~epi
        out = np.where(rv_wall, np.uint8(TISSUE["rv_wall"]), np.uint8(0))
        out[epi] = TISSUE["lv_myocardium"]
        out[endo] = TISSUE["lv_blood"]
        out[rv] = TISSUE["rv_blood"]
        tissue[t0:t1, idx_below] = out
        inside = (q[:, 4:].reshape(-1, 7) @ f_above).reshape(t1 - t0, 2, -1) <= 0.0
        out = np.where(inside[:, 0], np.uint8(TISSUE["la"]), np.uint8(0))
        out[inside[:, 1]] = TISSUE["ra"]
        tissue[t0:t1, idx_above] = out
    return tissue


@dataclass(frozen=True)
class Intensities:
    """bSSFP-like signal levels (arbitrary scanner units) and the noise level of one subject."""

    blood: float
    myocardium: float
    body: float
    fat: float
    lung: float
    liver: float
    bone: float
    csf: float
    noise_sigma: float
    body_semi_axes: tuple[float, float]
    # (kx, ky, kz, phase, amplitude) of cosine modulations; the first is the smooth coil bias
    texture_waves: tuple[tuple[float, float, float, float, float], ...]


def sample_intensities(rng: np.random.Generator) -> Intensities:
    """Signal levels: blood bright (≈ 800–950), myocardium dark (≈ 90–140), muscle ≈ 300, fat bright,
    lungs dark; noise σ 10–18."""
    waves = []
    # (wavelength mm, amplitude): coil bias, coarse and fine tissue texture
    scales = ((rng.uniform(300, 500), 0.18), (rng.uniform(40, 70), 0.07), (rng.uniform(20, 35), 0.05))
    for wavelength, amplitude in scales:
        k = rng.standard_normal(3)
        k *= 2 * np.pi / wavelength / np.linalg.norm(k)
        waves.append((float(k[0]), float(k[1]), float(k[2]), float(rng.uniform(0, 2 * np.pi)), amplitude))
    return Intensities(
        blood=float(rng.uniform(800, 950)),
        myocardium=float(rng.uniform(90, 140)),
        body=float(rng.uniform(260, 330)),
        fat=float(rng.uniform(520, 620)),
        lung=float(rng.uniform(20, 35)),
        liver=float(rng.uniform(240, 290)),
        bone=float(rng.uniform(80, 110)),
        csf=float(rng.uniform(450, 550)),
        noise_sigma=float(rng.uniform(10.0, 18.0)),
        body_semi_axes=(float(rng.uniform(160, 185)), float(rng.uniform(110, 130))),
        texture_waves=tuple(waves),
    )


def _background(
    world: np.ndarray, local: np.ndarray, p: HeartParameters, s: Intensities
) -> tuple[np.ndarray, np.ndarray]:
    """Static torso: body with a fat rim, lungs, liver, spine, descending and ascending aorta.

    Returns the image ``(X, Y, Z)`` float32 (modulated by a smooth coil bias and a fine tissue
    texture) and the bias alone ``(X, Y, Z)`` float32 (≈ 1 ± 0.2), which also modulates the heart.
    """
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    rx, ry = s.body_semi_axes
    rb = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    img = np.where(rb <= 1.0, np.float32(s.body), np.float32(0.0))
    img[(rb > 1.0 - 18.0 / ry) & (rb <= 1.0)] = s.fat
    for cx in (-80.0, 80.0):
        lung = ((x - cx) / 70.0) ** 2 + ((y + 10.0) / 85.0) ** 2 + ((z - 60.0) / 120.0) ** 2 <= 1.0
        img[lung] = s.lung
    img[((x - 45.0) / 120.0) ** 2 + ((y - 10.0) / 95.0) ** 2 + ((z + 110.0) / 70.0) ** 2 <= 1.0] = s.liver
    spine_r2 = x**2 + (y + ry - 40.0) ** 2
    img[spine_r2 <= 16.0**2] = s.bone
    img[spine_r2 <= 6.0**2] = s.csf
    img[(x + 22.0) ** 2 + (y + ry - 62.0) ** 2 <= 11.0**2] = 0.92 * s.blood
    # ascending aorta, from the aortic root just below the base plane
    root = np.array([p.aorta_root[0], p.aorta_root[1], -4.0], dtype=np.float32)
    d = _unit(np.array([0.25, 0.45, 1.0])).astype(np.float32)
    rel = local - root
    along = rel @ d
    radial2 = np.einsum("...i,...i->...", rel, rel) - along**2
    in_tube = (along >= 0.0) & (along <= 75.0)
    img[in_tube & (radial2 <= (p.aorta_radius + 2.0) ** 2)] = s.myocardium * 1.3
    img[in_tube & (radial2 <= p.aorta_radius**2)] = 0.95 * s.blood
    waves = [
        np.float32(amplitude) * np.cos(np.float32(kx) * x + np.float32(ky) * y + np.float32(kz) * z + np.float32(phase))
        for kx, ky, kz, phase, amplitude in s.texture_waves
    ]
    bias = 1.0 + waves[0]
    return img * (bias + sum(waves[1:])), bias


def _blur_xy(x: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1]/4 smoothing along the last two axes (Y, X; edges replicated): mild partial volume."""
    out = ndimage.correlate1d(x, _BLUR_KERNEL, axis=-2, mode="nearest")
    return ndimage.correlate1d(out, _BLUR_KERNEL, axis=-1, mode="nearest", output=out)


def render_view(
    view: ViewGeometry, p: HeartParameters, state: CycleState, s: Intensities, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Image and tissue map of one view at every frame.

    Computed in (T, Z, Y, X) C order and returned as its transpose, so the results are
    Fortran-ordered ``(X, Y, Z, T)`` arrays (NIfTI's on-disk order: writing needs no reordering).

    Returns:
        image ``(X, Y, Z, T)`` float32 with integer values (Rician magnitude noise, ≥ 0) and
        tissue ``(X, Y, Z, T)`` uint8 (:data:`TISSUE` codes, exact at voxel centres).
    """
    n_t = state.emptying.shape[0]
    local = local_coordinates(view, p).transpose(2, 1, 0, 3)  # (Z, Y, X, 3)
    world = world_coordinates(view).transpose(2, 1, 0, 3).astype(np.float32)
    background, bias = _background(world, local.astype(np.float32), p, s)  # (Z, Y, X)

    lo, hi = heart_box(p)
    in_box = np.all((local >= lo) & (local <= hi), axis=-1)
    tissue = np.zeros((n_t, *background.shape), dtype=np.uint8)
    image = np.empty((n_t, *background.shape), dtype=np.float32)
    image[:] = _blur_xy(background)
    if in_box.any():
        jj = np.flatnonzero(in_box.any(axis=(0, 2)))
        ii = np.flatnonzero(in_box.any(axis=(0, 1)))
        box = (slice(None), slice(jj[0], jj[-1] + 1), slice(ii[0], ii[-1] + 1))
        crop_local = local[box]
        crop_tissue = rasterise_tissue(crop_local.reshape(-1, 3), p, state).reshape(n_t, *crop_local.shape[:3])
        tissue[(slice(None), *box)] = crop_tissue
        lut = np.array([0.0, s.blood, s.myocardium, s.blood, s.blood, s.blood, s.myocardium], dtype=np.float32)
        crop_image = np.where(crop_tissue == 0, background[box], lut[crop_tissue] * bias[box])
        image[(slice(None), *box)] = _blur_xy(crop_image)

    sigma = np.float32(s.noise_sigma)
    n_vox = background.size
    pool = rng.standard_normal((2, 2 * n_vox), dtype=np.float32) * sigma
    offsets = rng.integers(0, n_vox, size=(n_t, 2))
    flat = image.reshape(n_t, n_vox)
    for t in range(n_t):
        real = flat[t] + pool[0, offsets[t, 0] : offsets[t, 0] + n_vox]
        imag = pool[1, offsets[t, 1] : offsets[t, 1] + n_vox]
        np.rint(np.sqrt(real * real + imag * imag), out=flat[t])
    return image.T, tissue.T
