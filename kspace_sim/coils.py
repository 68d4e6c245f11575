"""Receive-coil sensitivity maps per subject and slice, defined compactly by a few parameters.

Two models, both normalised at every pixel of the field of view so that ``sum_c |S_c|^2 = 1``:

* ``"birdcage"`` (default): sigpy's birdcage model (:func:`sigpy.mri.birdcage_maps`, C coils
  evenly spaced on a ring of relative radius ``radius``, each ``exp(i phi) / distance``) with a
  per-slice geometry: the ring is rotated by ``rotation`` (rad) and its centre moved by
  ``(offset_y, offset_x)`` (fractions of the half field of view). The formula is evaluated
  directly at each pixel's position in the ring's frame (``COILS_VERSION`` 2; version 1 read an
  extended sigpy grid by cubic-spline interpolation, within 2e-3 of it and ~100x slower).
* ``"random_field"``: C smooth complex Gaussian random fields, each the inverse FFT of complex
  white noise on the lowest spatial frequencies weighted by a Gaussian of standard deviation
  ``1 / (2 pi smoothness)`` cycles per field of view (``smoothness``: correlation length as a
  fraction of the field of view), drawn from ``seed``.

"Body" in the normalisation is the whole field of view: maps are normalised pointwise everywhere,
so they depend only on their parameters (not on the image) and regenerate deterministically from
them (:func:`coil_maps_from_params`); inside the object this is the same as normalising over the
body. The compact form stored per slice is :class:`CoilGeometry` (:meth:`CoilGeometry.to_array`:
7 float64 numbers), a few bytes against ``C * H * W`` complex samples of the maps.

Coordinates follow sigpy: normalised ``u = (x - W/2) / (W/2)``, ``v = (y - H/2) / (H/2)`` with the
image centre at pixel ``(H // 2, W // 2)`` (the FFT's DC position). Pure numpy / scipy;
no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft

from kspace_sim.seeding import derive_rng, derive_seed

__all__ = [
    "COILS_VERSION",
    "COIL_MODELS",
    "CoilGeometry",
    "CoilGeometryRanges",
    "coil_maps_from_params",
    "draw_coil_geometry",
    "normalise_maps",
    "subject_coil_geometries",
    "subject_coil_maps",
    "validate_n_coils",
]

#: Bumped whenever the maps generated from given parameters change.
COILS_VERSION = "2"

COIL_MODELS = ("birdcage", "random_field")
_MODEL_CODE = {name: float(i) for i, name in enumerate(COIL_MODELS)}

# Bound on the ring's centre offset (version 1 evaluated the ring on a grid this many half fields
# of view wide): |offset| <= _EXTENT / sqrt(2) - 1 = 0.237 half fields of view per axis.
_EXTENT = 1.75


def validate_n_coils(n_coils: object) -> int:
    """``n_coils`` as an int >= 1, else ``ValueError`` with one line."""
    if isinstance(n_coils, bool) or not isinstance(n_coils, (int, np.integer)) or int(n_coils) < 1:
        raise ValueError(f"number of coils must be an integer >= 1, got {n_coils!r}")
    return int(n_coils)


@dataclass(frozen=True)
class CoilGeometry:
    """Everything that defines one slice's coil maps (with the image shape).

    Attributes:
        n_coils: C >= 1.
        model: ``"birdcage"`` or ``"random_field"``.
        radius: birdcage ring radius in half fields of view (sigpy's ``r``; > 1, the coils sit
            outside the field of view).
        rotation: rotation of the ring about its centre, rad.
        offset_y, offset_x: centre of the ring relative to the image centre, fractions of the half
            field of view along H and W.
        smoothness: random-field correlation length as a fraction of the field of view (> 0).
        seed: random-field seed (63-bit, from :func:`kspace_sim.seeding.derive_seed`); unused by
            the birdcage.
    """

    n_coils: int
    model: str = "birdcage"
    radius: float = 1.5
    rotation: float = 0.0
    offset_y: float = 0.0
    offset_x: float = 0.0
    smoothness: float = 0.3
    seed: int = 0

    def validate(self) -> None:
        validate_n_coils(self.n_coils)
        if self.model not in COIL_MODELS:
            raise ValueError(f"unknown coil model {self.model!r}; choose one of {', '.join(COIL_MODELS)}")
        values = (self.radius, self.rotation, self.offset_y, self.offset_x, self.smoothness)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"coil geometry has a non-finite value: {self}")
        if self.model == "birdcage":
            reach = math.sqrt(2.0) * (1.0 + max(abs(self.offset_y), abs(self.offset_x)))
            if reach > _EXTENT:
                limit = _EXTENT / math.sqrt(2) - 1
                raise ValueError(f"coil centre offset too large: |offset| <= {limit:.3f}, got {self}")
            if self.radius * math.sqrt(0.5) <= 1.0 + max(abs(self.offset_y), abs(self.offset_x)):
                raise ValueError(f"birdcage radius {self.radius} puts a coil inside the field of view")
        if self.model == "random_field" and self.smoothness <= 0:
            raise ValueError(f"random-field smoothness must be > 0, got {self.smoothness}")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_array(self) -> np.ndarray:
        """``(7,)`` float64: model code, n_coils, radius, rotation, offset_y, offset_x, smoothness.

        The random-field seed is not in the array (it is derived from the global seed, the subject
        id and the slice; see :func:`subject_coil_geometries`).
        """
        return np.array(
            [_MODEL_CODE[self.model], self.n_coils, self.radius, self.rotation, self.offset_y, self.offset_x,
             self.smoothness],
            dtype=np.float64,
        )

    @classmethod
    def from_array(cls, values: np.ndarray, seed: int = 0) -> CoilGeometry:
        """Inverse of :meth:`to_array` (``seed`` supplied separately)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.shape != (7,):
            raise ValueError(f"a coil geometry array has 7 values, got shape {np.shape(values)}")
        radius, rotation, off_y, off_x, smoothness = (float(x) for x in v[2:])
        return cls(int(v[1]), COIL_MODELS[int(v[0])], radius, rotation, off_y, off_x, smoothness, int(seed))


@dataclass(frozen=True)
class CoilGeometryRanges:
    """Uniform ranges the per-slice geometry is drawn from.

    Defaults: ring radius 1.6–2.0 half fields of view (sigpy's default is 1.5), any rotation,
    centre offset up to ±0.05 half fields of view per axis (±3 pixels at 128): every coil then
    stays at least 0.11 half fields of view (7 pixels at 128) outside the rotated, shifted field
    of view. Random-field correlation length 0.25–0.5 of the field of view.
    """

    radius: tuple[float, float] = (1.6, 2.0)
    rotation: tuple[float, float] = (0.0, 2.0 * math.pi)
    offset: float = 0.05
    smoothness: tuple[float, float] = (0.25, 0.5)


def draw_coil_geometry(
    rng: np.random.Generator, n_coils: int, model: str = "birdcage", ranges: CoilGeometryRanges = CoilGeometryRanges()
) -> CoilGeometry:
    """One slice's geometry drawn from ``rng`` (a fixed number of draws, whatever the model)."""
    n_coils = validate_n_coils(n_coils)
    radius = float(rng.uniform(*ranges.radius))
    rotation = float(rng.uniform(*ranges.rotation))
    off_y, off_x = (float(v) for v in rng.uniform(-ranges.offset, ranges.offset, size=2))
    smoothness = float(rng.uniform(*ranges.smoothness))
    seed = int(rng.integers(0, 2**63 - 1))
    geometry = CoilGeometry(n_coils, model, radius, rotation, off_y, off_x, smoothness, seed)
    geometry.validate()
    return geometry


def subject_coil_geometries(
    global_seed: int,
    subject_id: str,
    n_slices: int,
    n_coils: int,
    model: str = "birdcage",
    ranges: CoilGeometryRanges = CoilGeometryRanges(),
) -> list[CoilGeometry]:
    """Per-slice geometries of one subject; slice ``s`` uses ``derive_rng(global_seed, subject_id, "coils", s)``.

    Independent of worker count and order, like every other draw of the simulator.
    """
    return [
        draw_coil_geometry(derive_rng(global_seed, subject_id, "coils", s), n_coils, model, ranges)
        for s in range(n_slices)
    ]


def normalise_maps(maps: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """``maps / sqrt(sum_c |maps_c|^2)`` pointwise; ``maps`` ``(C, ..., H, W)`` complex.

    Pixels where every coil is exactly zero stay zero (and ``eps`` is added to the root sum of
    squares if given).
    """
    rss = np.sqrt(np.sum(np.abs(maps) ** 2, axis=0)) + eps
    return np.divide(maps, rss, out=np.zeros_like(maps), where=rss > 0)


def _normalised_coords(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    v = (np.arange(h, dtype=np.float64) - h / 2.0) / (h / 2.0)
    u = (np.arange(w, dtype=np.float64) - w / 2.0) / (w / 2.0)
    return np.meshgrid(v, u, indexing="ij")


def _birdcage(geometry: CoilGeometry, shape: tuple[int, int]) -> np.ndarray:
    """sigpy's birdcage formula evaluated directly at each pixel's position in the ring's frame.

    Coil ``c`` sits at ``r (cos a_c, sin a_c)``, ``a_c = 2 pi c / C``, in the ring's frame; its map at
    ``q = R(-theta)(p - o)`` is ``exp(i (atan2(q_x - r cos a_c, -(q_y - r sin a_c)) - a_c)) / |q - coil_c|``,
    as in :func:`sigpy.mri.birdcage_maps` (which evaluates it at ``q = p``). Returns ``(C, H, W)`` complex128.
    """
    v, u = _normalised_coords(shape)
    c, s = math.cos(geometry.rotation), math.sin(geometry.rotation)
    dv, du = v - geometry.offset_y, u - geometry.offset_x
    # Position in the ring's frame: R(-theta) (p - o), p = (u, v) as (x, y).
    u_ring = c * du + s * dv
    v_ring = -s * du + c * dv
    angle = 2.0 * math.pi * np.arange(geometry.n_coils, dtype=np.float64) / geometry.n_coils
    x_co = u_ring[None] - (geometry.radius * np.cos(angle))[:, None, None]
    y_co = v_ring[None] - (geometry.radius * np.sin(angle))[:, None, None]
    # exp(i atan2(x, -y)) = (-y + i x) / |(x, y)|, so the map is (-y + i x) exp(-i a_c) / |(x, y)|^2:
    # no transcendental function per pixel
    out = (-y_co + 1j * x_co) * np.exp(-1j * angle)[:, None, None]
    out /= x_co * x_co + y_co * y_co
    return out


def _random_field(geometry: CoilGeometry, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    rng = np.random.default_rng(derive_seed(geometry.seed, "random-field"))
    white = rng.standard_normal((geometry.n_coils, h, w, 2))
    white = (white[..., 0] + 1j * white[..., 1]) / math.sqrt(2.0)
    fy = scipy.fft.fftfreq(h)[:, None] * h  # cycles per field of view
    fx = scipy.fft.fftfreq(w)[None, :] * w
    sd = 1.0 / (2.0 * math.pi * geometry.smoothness)  # Gaussian of correlation length `smoothness` FOV
    weight = np.exp(-(fy**2 + fx**2) / (2.0 * sd**2))
    return scipy.fft.ifft2(white * weight, axes=(-2, -1), norm="forward")


def coil_maps_from_params(geometry: CoilGeometry, shape: tuple[int, int]) -> np.ndarray:
    """The coil maps of one slice, ``(C, H, W)`` complex64, ``sum_c |S_c|^2 = 1`` at every pixel.

    Deterministic: the same geometry and shape give bit-identical maps.

    Args:
        geometry: the slice's :class:`CoilGeometry`.
        shape: ``(H, W)`` image shape (square for the birdcage model).
    """
    geometry.validate()
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"shape must be (H, W) with H, W >= 2, got {shape}")
    shape = (int(shape[0]), int(shape[1]))
    raw = _birdcage(geometry, shape) if geometry.model == "birdcage" else _random_field(geometry, shape)
    return normalise_maps(raw).astype(np.complex64)


def subject_coil_maps(geometries: list[CoilGeometry], shape: tuple[int, int]) -> np.ndarray:
    """Maps of all slices of a subject, ``(C, S, H, W)`` complex64 (coil axis first, as :func:`coil_kspace`)."""
    if not geometries:
        raise ValueError("no coil geometries given")
    return np.stack([coil_maps_from_params(g, shape) for g in geometries], axis=1)
