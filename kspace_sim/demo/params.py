"""Sampling one subject's heart parameters, with disease effects.

Effects (applied to the "any time" disease flags of :class:`ParticipantRecord`):
- hypertension: wall +1.6 mm (LVM ≈ +25 %), LA +10 %; high blood pressure without a hypertension
  code: wall +0.6 mm.
- CAD: LVEF −6 points, RVEF −3; infarct (⊂ CAD): LVEF a further −9, LVEDV +12 %, LA +10 %.
- diabetes: wall +0.4 mm, LVEF −1.5. stroke: LA +25 %, LA emptying reduced.
- Men have larger hearts and thicker walls; age lowers the heart rate slightly.

The RV ejection fraction is sampled (≈ N(57 %, 5)) and the RV free-wall shortening is solved for
it; every other shape follows from the sampled volumes, EF, wall thickness and proportions.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kspace_sim.demo.participants import ParticipantRecord
from kspace_sim.demo.phantom import N_FRAMES, HeartParameters, cycle_state, heart_ellipsoids, rv_volume_mm3
from kspace_sim.seeding import derive_rng

__all__ = ["MAX_EPICARDIAL_LENGTH_MM", "sample_heart_parameters", "random_rotation"]

MAX_EPICARDIAL_LENGTH_MM = 98.0
_ATRIAL_GAP_MM = 5.0


def random_rotation(rng: np.random.Generator, sd_deg: float) -> np.ndarray:
    """A ``(3, 3)`` rotation about a uniformly random axis by an angle ~ N(0, sd_deg)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.normal(0.0, sd_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _truncated_ellipsoid_fraction(eta: float) -> float:
    """Volume of the unit ball above ``v = −eta`` divided by ``4π/3``."""
    return (2.0 + 3.0 * eta - eta**3) / 4.0


def sample_heart_parameters(record: ParticipantRecord, seed: int = 0) -> HeartParameters:
    """Sample the heart of ``record`` (deterministic in ``(seed, record.eid)``)."""
    rng = derive_rng(seed, record.eid, "demo", "heart")
    has = record.has
    male = record.sex == 1

    heart_rate = float(np.clip(rng.normal(70.0 - 0.1 * (record.age_at_imaging - 60), 9.0), 48.0, 105.0))
    es_frame = int(rng.integers(round(0.34 * N_FRAMES), round(0.40 * N_FRAMES) + 1))  # 34-40 % of the cycle
    early = float(rng.uniform(0.6, 0.8))

    edv = rng.normal(155.0, 22.0) if male else rng.normal(125.0, 18.0)
    ef = rng.normal(0.61, 0.045)
    wall = rng.normal(6.3, 0.55) if male else rng.normal(5.5, 0.5)
    rvef = rng.normal(0.57, 0.05)
    la_volume = rng.normal(68.0, 12.0)
    la_min_ratio = rng.uniform(0.36, 0.5)
    if has["hypertension"]:
        wall += 1.6
        la_volume *= 1.1
    elif has["high_blood_pressure"]:
        wall += 0.6
    if has["CAD"]:
        ef -= 0.06
        rvef -= 0.03
    if has["infarct"]:
        ef -= 0.09
        edv *= 1.12
        la_volume *= 1.1
    if has["diabetes"]:
        wall += 0.4
        ef -= 0.015
    if has["stroke"]:
        la_volume *= 1.25
        la_min_ratio += 0.08
    edv = float(np.clip(edv, 80.0, 240.0))
    ef = float(np.clip(ef, 0.2, 0.75))
    wall = float(np.clip(wall, 4.0, 11.0))
    kappa = float(rng.uniform(0.7, 0.9))

    sphericity = rng.uniform(3.1, 3.6)  # L / r at ED
    radius = (3.0 * edv * 1000.0 / (2.0 * np.pi * sphericity)) ** (1.0 / 3.0)
    length = sphericity * radius
    if length + kappa * wall > MAX_EPICARDIAL_LENGTH_MM:  # large hearts are more spherical
        length = MAX_EPICARDIAL_LENGTH_MM - kappa * wall
        radius = float(np.sqrt(3.0 * edv * 1000.0 / (2.0 * np.pi * length)))
    epi_radius = radius + wall

    rv_cut = float(rng.uniform(0.08, 0.18) * epi_radius)
    rv_depth = float(rng.uniform(0.95, 1.15) * epi_radius)
    rv_width = float(rng.uniform(1.22, 1.38) * epi_radius)
    rv_length = float(rng.uniform(0.8, 0.9) * (length + kappa * wall))
    rv_width_short = float(rng.uniform(0.06, 0.12))
    rv_length_short = float(rng.uniform(0.12, 0.18))

    la_eta = float(rng.uniform(0.5, 0.7))  # centre height / semi-axis along z
    la_elong = float(rng.uniform(1.2, 1.45))
    la_rho = (la_volume * 1000.0 / (4.0 / 3.0 * np.pi * la_elong * _truncated_ellipsoid_fraction(la_eta))) ** (1 / 3)
    la_semi = (la_rho * rng.uniform(0.95, 1.05), la_rho * rng.uniform(0.95, 1.05), la_rho * la_elong)
    la_centre = (-rng.uniform(0.05, 0.15) * epi_radius, rng.normal(0.0, 2.5), la_eta * la_semi[2])
    ra_volume = rng.normal(70.0, 13.0) * (1.1 if has["hypertension"] else 1.0)
    ra_eta = float(rng.uniform(0.5, 0.7))
    ra_elong = float(rng.uniform(1.2, 1.45))
    ra_rho = (ra_volume * 1000.0 / (4.0 / 3.0 * np.pi * ra_elong * _truncated_ellipsoid_fraction(ra_eta))) ** (1 / 3)
    ra_semi = (ra_rho * rng.uniform(0.9, 1.0), ra_rho * rng.uniform(1.0, 1.1), ra_rho * ra_elong)
    ra_a = la_centre[0] + la_semi[0] + _ATRIAL_GAP_MM + ra_semi[0]
    ra_centre = (ra_a, rng.normal(0.0, 2.5), ra_eta * ra_semi[2])

    aorta_angle = np.deg2rad(rng.uniform(50.0, 60.0))
    aorta_dist = 0.78 * epi_radius
    aorta_root = (float(aorta_dist * np.cos(aorta_angle)), float(aorta_dist * np.sin(aorta_angle)))

    u0 = np.array([0.5, -0.35, 0.75])
    u = random_rotation(rng, 7.0) @ (u0 / np.linalg.norm(u0))
    toward_rv = np.array([0.45, 0.85, 0.1])
    a = toward_rv - (toward_rv @ u) * u
    a /= np.linalg.norm(a)
    spin = np.deg2rad(rng.normal(0.0, 8.0))
    a = np.cos(spin) * a + np.sin(spin) * np.cross(u, a)
    base = np.array([15.0, 15.0, 30.0]) + rng.normal(0.0, 6.0, 3)

    params = HeartParameters(
        heart_rate_bpm=heart_rate,
        es_frame=es_frame,
        early_filling_fraction=early,
        lv_edv_ml=edv,
        lv_ef=ef,
        lv_radius_ed=float(radius),
        lv_length_ed=float(length),
        wall_thickness_ed=wall,
        apex_wall_ratio=kappa,
        long_axis_exponent=float(rng.uniform(0.15, 0.25)),
        rv_septal_cut=rv_cut,
        rv_depth_ed=rv_depth,
        rv_half_width_ed=rv_width,
        rv_length_ed=rv_length,
        rv_depth_shortening=0.4,  # solved below for the sampled RVEF
        rv_width_shortening=rv_width_short,
        rv_length_shortening=rv_length_short,
        rv_wall_thickness=float(rng.uniform(2.5, 3.5)),
        la_centre=tuple(float(v) for v in la_centre),
        la_semi_axes=tuple(float(v) for v in la_semi),
        la_min_volume_ratio=float(np.clip(la_min_ratio, 0.3, 0.7)),
        ra_centre=tuple(float(v) for v in ra_centre),
        ra_semi_axes=tuple(float(v) for v in ra_semi),
        ra_min_volume_ratio=float(rng.uniform(0.4, 0.55)),
        aorta_root=aorta_root,
        aorta_radius=float(rng.uniform(11.0, 14.0)),
        base_centre_world=tuple(float(v) for v in base),
        long_axis_world=tuple(float(v) for v in u),
        septal_axis_world=tuple(float(v) for v in a),
    )
    return _with_rv_ejection_fraction(params, float(np.clip(rvef, 0.3, 0.7)))


def _rv_ejection_fraction(p: HeartParameters, depth_shortening: float) -> float:
    """RV ejection fraction of ``p`` with the given free-wall shortening (coarse quadrature)."""
    q = replace(p, rv_depth_shortening=depth_shortening)
    state = cycle_state(q, np.array([0, q.es_frame]))
    volumes = []
    for t in (0, 1):
        shapes = heart_ellipsoids(q, state, t)
        volumes.append(rv_volume_mm3(shapes["rv"], shapes["lv_epi"], q.rv_septal_cut, n=120))
    return 1.0 - volumes[1] / volumes[0]


def _with_rv_ejection_fraction(p: HeartParameters, rvef: float) -> HeartParameters:
    """``p`` with the RV free-wall (depth) shortening solved (secant steps) so that the RV ejection
    fraction is ``rvef`` (to ≈ 0.5 points; shortening clipped to [0.05, 0.95])."""
    x0, x1 = 0.3, 0.6
    f0, f1 = _rv_ejection_fraction(p, x0) - rvef, _rv_ejection_fraction(p, x1) - rvef
    for _ in range(3):
        if abs(f1) < 1e-3 or f1 == f0:
            break
        x0, f0, x1 = x1, f1, float(np.clip(x1 - f1 * (x1 - x0) / (f1 - f0), 0.05, 0.95))
        f1 = _rv_ejection_fraction(p, x1) - rvef
    return replace(p, rv_depth_shortening=x1)
