"""The ``coils/*`` arrays of a store with coils (format version 2): writing and reading them.

A subject task writes its row of ``coils/maps`` (complex64, or float16 (real, imaginary) pairs in
float16-storage stores); the build's client alone writes the small per-subject arrays
(:class:`CoilTable`, buffered like the subject table). Readers get a subject's maps, sigma and
noise seed back (:func:`read_subject_coils`) and its coil k-space (:func:`subject_coil_kspace`,
the numpy reference :func:`kspace_sim.acquisition.coil_kspace` on the stored values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from kspace_sim.acquisition import coil_kspace
from kspace_sim.noise import NOISE_RULE_VERSION

__all__ = ["COIL_CHECKSUM_PATHS", "CoilTable", "StoredCoils", "coil_checksum_rows", "decode_maps", "encode_maps", "has_coils",
           "read_subject_coils", "stored_coil_checksum_rows", "subject_coil_kspace"]

#: the ``coils/*`` arrays a subject's checksum covers, in the order :func:`coil_checksum_rows` gives them
COIL_CHECKSUM_PATHS = ("coils/maps", "coils/geometry", "coils/field_seed", "coils/noise_seed", "coils/noise_sigma")


def has_coils(group: zarr.Group) -> bool:
    """The store was built with coils (its ``coils`` attribute and ``coils/maps`` exist)."""
    return "coils" in group.attrs and "coils/maps" in group


def encode_maps(maps: np.ndarray, storage: str) -> np.ndarray:
    """Maps ``(K, S, H, W)`` complex as stored: complex64, or float16 (real, imag) pairs ``(..., 2)``
    (``|S| <= 1``, so no scale)."""
    if storage == "float16":
        return np.stack([maps.real, maps.imag], axis=-1).astype(np.float16)
    return np.asarray(maps, dtype=np.complex64)


def decode_maps(stored: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_maps`: complex64 maps."""
    if stored.dtype == np.float16:
        pairs = np.asarray(stored, dtype=np.float32)
        return (pairs[..., 0] + 1j * pairs[..., 1]).astype(np.complex64)
    return np.asarray(stored, dtype=np.complex64)


@dataclass
class StoredCoils:
    """One subject's coil content as read from a store.

    Attributes:
        maps: ``(K, S, H, W)`` complex64.
        noise_sigma: ``(S,)`` float32.
        noise_seed: the seed of the stored noise draw.
        noise_cov: ``(K, K)`` complex128 correlation (units of sigma^2).
        geometry: ``(S, 7)`` float64.
        field_seed: ``(S,)`` uint64.
        noise_rule_version: the store's ``coils.noise_rule_version`` (1 when absent: a store built
            before sub-streams per view and frame).
    """

    maps: np.ndarray
    noise_sigma: np.ndarray
    noise_seed: int
    noise_cov: np.ndarray
    geometry: np.ndarray
    field_seed: np.ndarray
    noise_rule_version: int = NOISE_RULE_VERSION


def _noise_cov(attrs: dict[str, Any]) -> np.ndarray:
    cov = attrs["noise_cov"]
    return np.asarray(cov["real"], dtype=np.float64) + 1j * np.asarray(cov["imag"], dtype=np.float64)


def coil_checksum_rows(
    stored_maps: np.ndarray, geometry: np.ndarray, field_seed: np.ndarray, noise_seed: int, noise_sigma: np.ndarray
) -> tuple[np.ndarray, ...]:
    """One subject's ``coils/*`` rows in the order and dtypes they are stored, for its checksum
    (:func:`kspace_sim.store.checksum.subject_checksum` ``extra``): ``maps`` as stored ((K, S, H, W)
    complex64 or (K, S, H, W, 2) float16), ``geometry`` (S, 7) float64, ``field_seed`` (S,) uint64,
    ``noise_seed`` () uint64, ``noise_sigma`` (S,) float32."""
    return (
        np.asarray(stored_maps),
        np.asarray(geometry, dtype=np.float64),
        np.asarray(field_seed, dtype=np.uint64),
        np.asarray(np.uint64(noise_seed)),
        np.asarray(noise_sigma, dtype=np.float32),
    )


def stored_coil_checksum_rows(group: zarr.Group, row: int, maps: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """:func:`coil_checksum_rows` of row ``row`` as read back from a store with coils; ``maps``: its
    ``coils/maps`` row when the caller has read it already (not read again)."""
    return coil_checksum_rows(
        group["coils/maps"][row] if maps is None else maps, group["coils/geometry"][row],
        group["coils/field_seed"][row], int(group["coils/noise_seed"][row]), group["coils/noise_sigma"][row],
    )


def read_subject_coils(group: zarr.Group, row: int) -> StoredCoils:
    """Read row ``row``'s coil content from a store with coils (``KeyError`` if it has none)."""
    if not has_coils(group):
        raise KeyError("the store has no coils")
    return StoredCoils(
        maps=decode_maps(group["coils/maps"][row]),
        noise_sigma=np.asarray(group["coils/noise_sigma"][row], dtype=np.float32),
        noise_seed=int(group["coils/noise_seed"][row]),
        noise_cov=_noise_cov(group.attrs["coils"]),
        geometry=np.asarray(group["coils/geometry"][row]),
        field_seed=np.asarray(group["coils/field_seed"][row]),
        noise_rule_version=int(group.attrs["coils"].get("noise_rule_version", 1)),
    )


def subject_coil_kspace(
    kspace: np.ndarray,
    coils: StoredCoils,
    noise: bool = True,
    workers: int | None = None,
    views: np.ndarray | list[int] | None = None,
    frames: np.ndarray | list[int] | None = None,
) -> np.ndarray:
    """A subject's coil k-space ``(K, S', T', H, W)`` complex64 by the store's rule (docs/store-format.md):
    :func:`kspace_sim.acquisition.coil_kspace` with the stored maps, per-view sigma, correlation and seed.

    Args:
        kspace: the subject's whole coil-free ``(S, T, H, W)`` complex k-space (decoded).
        coils: :func:`read_subject_coils` of the same row.
        noise: add the stored noise draw (False: the noise-free coil k-space).
        views, frames: the views and frames to synthesise (None = all); their noise is drawn alone
            and equals the same views and frames of the whole subject's (one sub-stream per view and frame).

    Raises:
        ValueError: the store's noise follows another noise rule version than this simulator's.
    """
    sigma = coils.noise_sigma.astype(np.float64)[:, None, None, None]
    identity = np.array_equal(coils.noise_cov, np.eye(coils.noise_cov.shape[0]))
    with_noise = noise and bool(np.any(sigma > 0))
    if with_noise and coils.noise_rule_version != NOISE_RULE_VERSION:
        raise ValueError(
            f"the store's noise follows noise rule version {coils.noise_rule_version} (an unreleased format-2 "
            f"draw of one stream per subject); this simulator draws version {NOISE_RULE_VERSION}: rebuild the store"
        )
    shape = np.shape(kspace)
    v = np.arange(shape[0]) if views is None else np.asarray(views, dtype=np.int64).reshape(-1)
    t = np.arange(shape[1]) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
    part = np.asarray(kspace)
    if views is not None or frames is not None:
        part = part[np.ix_(v, t)]
    return coil_kspace(
        part,
        coils.maps[:, v, None],
        sigma=sigma[v] if with_noise else None,
        noise_cov=None if identity else coils.noise_cov,
        seed=coils.noise_seed,
        workers=workers,
        noise_index=(v, t),
        noise_shape=shape,
    )


class CoilTable:
    """In-memory copy of the small ``coils/*`` arrays, written by the build's client only."""

    _PATHS = ("geometry", "field_seed", "noise_seed", "noise_sigma")

    def __init__(self, group: zarr.Group) -> None:
        self.group = group
        self.arrays = {k: group[f"coils/{k}"][:] for k in self._PATHS}
        self.dirty = False

    def record(self, row: int, geometry: np.ndarray, field_seed: np.ndarray, noise_seed: int, noise_sigma: np.ndarray) -> None:
        self.arrays["geometry"][row] = geometry
        self.arrays["field_seed"][row] = field_seed
        self.arrays["noise_seed"][row] = np.uint64(noise_seed)
        self.arrays["noise_sigma"][row] = noise_sigma
        self.dirty = True

    def flush(self) -> None:
        """Write every array (call before the subject table's flush, which marks subjects done)."""
        if not self.dirty:
            return
        for key, arr in self.arrays.items():
            self.group[f"coils/{key}"][...] = arr
        self.dirty = False
