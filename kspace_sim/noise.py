"""Thermal receive noise: complex Gaussian at a requested SNR, optionally correlated across coils.

Definitions (docs/multicoil.md)::

    SNR_dB = 20 log10( mean_{p in region} |x(p)| / sigma )

* ``x`` is the noise-free coil-combined image. With maps normalised so that
  ``sum_c |S_c|^2 = 1`` (:mod:`kspace_sim.coils`), the SENSE-1 combination with the true maps
  ``sum_c conj(S_c) S_c x`` and the root-sum-of-squares ``sqrt(sum_c |S_c x|^2)`` both give back
  ``x`` (in magnitude), i.e. the single-coil image of today's store.
* ``region`` is the heart (segmentation labels > 0) when a segmentation is given, else the
  image's foreground, ``|x| >= 0.1 max |x|`` (:func:`foreground`).
* ``sigma`` is the standard deviation of the complex noise of one coil's image,
  ``E|n|^2 = sigma^2`` (real and imaginary parts independent, each of variance ``sigma^2 / 2``).
  Noise is added in k-space; the centred orthonormal FFT is unitary, so white k-space noise of
  standard deviation sigma is white image noise of the same sigma.

Coil correlation: the noise covariance is ``sigma^2 * Psi`` with ``Psi`` Hermitian positive
definite, by default the identity; :func:`correlation_matrix` builds ``Psi_ij = rho^|i-j|``
("exponential") or ``Psi_ij = rho`` for ``i != j`` ("constant"), unit diagonal. Correlated noise
is ``sigma * L n`` with ``Psi = L L^H`` (Cholesky) and ``n`` standard complex white noise.

Seeded draw (a store's evaluation noise, :func:`seeded_white_noise`): one independent numpy
sub-stream per image (e.g. per view and frame), so a consumer draws the images it reads and no others.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from kspace_sim.seeding import derive_seed

__all__ = [
    "FOREGROUND_FRACTION",
    "validate_snr_db",
    "foreground",
    "noise_sigma",
    "measured_snr_db",
    "correlation_matrix",
    "validate_noise_cov",
    "noise_cholesky",
    "standard_complex_noise",
    "NOISE_RULE_VERSION",
    "image_noise_generator",
    "seeded_white_noise",
    "colour_noise",
    "coil_noise",
    "noise_seed",
]

#: Foreground threshold (fraction of the image's maximum magnitude) when no region is given.
FOREGROUND_FRACTION = 0.1


def validate_snr_db(snr_db: object) -> float:
    """``snr_db`` as a finite float, else ``ValueError`` with one line."""
    try:
        value = float(snr_db)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"SNR must be a finite number of dB, got {snr_db!r}") from None
    if isinstance(snr_db, bool) or not math.isfinite(value):
        raise ValueError(f"SNR must be a finite number of dB, got {snr_db!r}")
    return value


def foreground(image: np.ndarray, fraction: float = FOREGROUND_FRACTION) -> np.ndarray:
    """Bool mask of ``|image| >= fraction * max |image|`` (same shape as ``image``)."""
    mag = np.abs(image)
    return mag >= fraction * float(mag.max()) if mag.size else np.zeros(mag.shape, dtype=bool)


def _region_mean(image: np.ndarray, region: np.ndarray | None) -> float:
    mag = np.abs(np.asarray(image))
    mask = foreground(mag) if region is None else np.broadcast_to(np.asarray(region, dtype=bool), mag.shape)
    if not mask.any():
        raise ValueError("the SNR region is empty (no heart label and no foreground)")
    mean = float(mag[mask].mean(dtype=np.float64))
    if not mean > 0:
        raise ValueError("the image is zero in the SNR region; no SNR can be defined")
    return mean


def noise_sigma(image: np.ndarray, snr_db: float, region: np.ndarray | None = None) -> float:
    """Noise standard deviation ``sigma`` of one coil (complex, ``E|n|^2 = sigma^2``) for an SNR.

    Args:
        image: noise-free coil-combined image ``(..., H, W)`` (real or complex; its magnitude is used),
            e.g. one subject's ``(S, T, H, W)``: one sigma for all of it.
        snr_db: requested SNR in dB (finite).
        region: bool mask broadcastable to ``image`` (e.g. segmentation labels > 0); None = the
            foreground (:func:`foreground`).

    Returns:
        ``mean_region |image| / 10 ** (snr_db / 20)``, in the image's units.
    """
    snr_db = validate_snr_db(snr_db)
    return _region_mean(image, region) / 10.0 ** (snr_db / 20.0)


def measured_snr_db(image: np.ndarray, sigma: float, region: np.ndarray | None = None) -> float:
    """``20 log10(mean_region |image| / sigma)``: the SNR definition applied to a measurement."""
    return 20.0 * math.log10(_region_mean(image, region) / float(sigma))


def correlation_matrix(
    n_coils: int, rho: float, kind: Literal["exponential", "constant"] = "exponential"
) -> np.ndarray:
    """Unit-diagonal coil noise correlation ``(C, C)`` float64.

    ``"exponential"``: ``Psi_ij = rho ** |i - j|`` (positive definite for ``|rho| < 1``);
    ``"constant"``: ``Psi_ij = rho`` for ``i != j`` (positive definite for ``-1/(C-1) < rho < 1``).
    The result is checked by :func:`validate_noise_cov` (``ValueError`` if not positive definite).
    """
    if isinstance(n_coils, bool) or not isinstance(n_coils, (int, np.integer)) or n_coils < 1:
        raise ValueError(f"number of coils must be an integer >= 1, got {n_coils!r}")
    if not math.isfinite(float(rho)):
        raise ValueError(f"noise correlation rho must be finite, got {rho!r}")
    i = np.arange(n_coils)
    if kind == "exponential":
        with np.errstate(divide="ignore"):
            psi = np.power(float(rho), np.abs(i[:, None] - i[None, :]).astype(np.float64))
    elif kind == "constant":
        psi = np.full((n_coils, n_coils), float(rho))
    else:
        raise ValueError(f"unknown correlation kind {kind!r}; choose exponential or constant")
    np.fill_diagonal(psi, 1.0)
    validate_noise_cov(psi, n_coils)
    return psi


def validate_noise_cov(cov: np.ndarray, n_coils: int) -> np.ndarray:
    """``cov`` as complex128 ``(C, C)`` if Hermitian positive definite, else one-line ``ValueError``."""
    cov = np.asarray(cov)
    if cov.shape != (n_coils, n_coils):
        raise ValueError(f"noise covariance must be ({n_coils}, {n_coils}) for {n_coils} coils, got shape {cov.shape}")
    cov = cov.astype(np.complex128)
    if not np.all(np.isfinite(cov)):
        raise ValueError("noise covariance has non-finite entries")
    scale = max(float(np.abs(cov).max()), np.finfo(float).tiny)
    if not np.allclose(cov, cov.conj().T, rtol=0.0, atol=1e-10 * scale):
        raise ValueError("noise covariance is not Hermitian")
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError("noise covariance is not positive definite") from None
    if float(np.linalg.eigvalsh(cov).min()) <= 0.0:
        raise ValueError("noise covariance is not positive definite")
    return cov


def noise_cholesky(cov: np.ndarray | None, n_coils: int) -> np.ndarray | None:
    """Lower-triangular ``L`` with ``cov = L L^H`` (complex128), or None for the identity."""
    if cov is None:
        return None
    return np.linalg.cholesky(validate_noise_cov(cov, n_coils))


def standard_complex_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard complex white Gaussian noise, ``E|n|^2 = 1``, complex64 of ``shape``.

    Real and imaginary parts are consecutive float32 draws of ``rng.standard_normal`` (scaled by
    ``1/sqrt(2)``), so the draw is a fixed function of the generator's state.
    """
    pairs = rng.standard_normal((*shape, 2), dtype=np.float32)
    pairs *= np.float32(1.0 / math.sqrt(2.0))
    return pairs.view(np.complex64)[..., 0]


#: Version of the seeded noise rule (:func:`seeded_white_noise`), recorded in a store's ``coils``
#: attribute as ``noise_rule_version``. 1 (never released): one stream for the whole subject,
#: ``default_rng(seed).standard_normal((C, *shape, 2), float32)``; 2: one sub-stream per image.
NOISE_RULE_VERSION = 2


def image_noise_generator(seed: int, index: tuple[int, ...]) -> np.random.Generator:
    """The generator of one image's noise under the seeded rule: ``Generator(PCG64(SeedSequence(seed,
    spawn_key=index)))`` (PCG64 named, not ``default_rng``, whose bit generator numpy may change).

    ``index`` is the image's position in the leading axes of the data, e.g. ``(view, frame)``; this is
    numpy's own tree of independent child streams: ``SeedSequence(seed).spawn(v + 1)[v].spawn(t + 1)[t]``
    has ``spawn_key == (v, t)`` (tested). With a spawn key, numpy pads the seed's entropy to its pool size
    before appending the key (numpy >= 1.19), so (seed, index) pairs cannot collide the way an entropy list
    ``[seed, v, t]`` can (a seed < 2**32 with ``(v, t)`` equals the seed ``+ v * 2**32`` with ``(t, 0)``).
    """
    seq = np.random.SeedSequence(int(seed), spawn_key=tuple(int(i) for i in index))
    return np.random.Generator(np.random.PCG64(seq))  # named: default_rng may change its bit generator


def seeded_white_noise(
    seed: int,
    n_coils: int,
    shape: tuple[int, ...],
    select: tuple[np.ndarray | list[int] | None, ...] | None = None,
) -> np.ndarray:
    """Standard complex white noise of ``n_coils`` coils over data ``shape = (*lead, H, W)``, drawn by the
    seeded rule (``NOISE_RULE_VERSION`` 2), one independent sub-stream per image:

        n[:, *i] = image_noise_generator(seed, i).standard_normal((C, H, W, 2), float32) * float32(1/sqrt(2)),
                   viewed as complex64,   for every index i of the leading axes (e.g. (view, frame))

    so any subset of images is drawn alone, bit-identical to the same images of the whole draw. For
    2D data (no leading axes) this is ``default_rng(seed)``'s draw of ``(C, H, W, 2)`` (numpy 2.x).

    Args:
        seed: the noise seed (e.g. a store's ``coils/noise_seed[i]``).
        n_coils: C.
        shape: the coil-free data's shape ``(*lead, H, W)`` (e.g. ``(S, T, H, W)``), whole.
        select: per leading axis, the indices to draw (None = all of that axis); None = everything.

    Returns:
        ``(C, *lead', H, W)`` complex64 (``lead'`` the selected lengths), ``E|n|^2 = 1``.
    """
    *lead, h, w = (int(v) for v in shape)
    sel = tuple(select) if select is not None else (None,) * len(lead)
    if len(sel) != len(lead):
        raise ValueError(f"select has {len(sel)} entries for {len(lead)} leading axes of {tuple(shape)}")
    picks = [np.arange(n) if s is None else np.asarray(s, dtype=np.int64).reshape(-1) for n, s in zip(lead, sel)]
    for n, pick in zip(lead, picks):
        if pick.size and (pick.min() < 0 or pick.max() >= n):
            raise ValueError(f"noise index out of range 0..{n - 1}")
    out = np.empty((n_coils, *(len(p) for p in picks), h, w), dtype=np.complex64)
    pairs = np.empty((n_coils, h, w, 2), dtype=np.float32)
    scale = np.float32(1.0 / math.sqrt(2.0))
    for pos in np.ndindex(*(len(p) for p in picks)):
        index = tuple(int(p[j]) for p, j in zip(picks, pos))
        image_noise_generator(seed, index).standard_normal(dtype=np.float32, out=pairs)
        pairs *= scale
        out[(slice(None), *pos)] = pairs.view(np.complex64)[..., 0]
    return out


def colour_noise(white: np.ndarray, sigma: float | np.ndarray, cov: np.ndarray | None = None) -> np.ndarray:
    """``sigma * L white`` for standard white noise ``(C, ...)`` complex64 (in place when possible).

    Args:
        white: ``(C, ...)`` standard complex white noise, coil axis first.
        sigma: per-coil standard deviation (>= 0, finite), a number or an array broadcastable to
            ``white.shape[1:]``.
        cov: ``(C, C)`` Hermitian positive-definite covariance in units of ``sigma^2`` (``cov = L L^H``);
            None = identity.
    """
    sig = _check_sigma(sigma)
    chol = noise_cholesky(cov, white.shape[0])
    if chol is not None:
        white = np.tensordot(chol.astype(np.complex64), white, axes=(1, 0))
    white *= sig.astype(np.float32)
    return white


def _check_sigma(sigma: float | np.ndarray) -> np.ndarray:
    sig = np.asarray(sigma, dtype=np.float64)
    if not np.all(np.isfinite(sig)) or np.any(sig < 0):
        raise ValueError(f"noise sigma must be finite and >= 0, got {sigma!r}")
    return sig


def coil_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | np.ndarray,
               cov: np.ndarray | None = None) -> np.ndarray:
    """Coil noise ``sigma * L n`` of ``shape = (C, ...)`` complex64 (``n``: :func:`standard_complex_noise`).

    Args:
        rng: the noise generator (e.g. ``np.random.default_rng(noise_seed(...))``).
        shape: ``(C, ...)``, coil axis first.
        sigma: per-coil standard deviation (>= 0, finite) for a coil with ``cov_cc = 1``: a number,
            or an array broadcastable to ``shape[1:]`` (e.g. ``(S, 1, 1, 1)``: one sigma per slice).
        cov: ``(C, C)`` Hermitian positive-definite covariance in units of ``sigma^2``; None = identity.
    """
    _check_sigma(sigma)
    noise_cholesky(cov, shape[0])  # checked before the draw
    return colour_noise(standard_complex_noise(rng, shape), sigma, cov)


def noise_seed(global_seed: int, subject_id: str, *keys: object) -> int:
    """The seed of a subject's coil noise: ``derive_seed(global_seed, subject_id, "coil-noise", *keys)``.

    The stored (evaluation) draw uses no extra keys (and :func:`seeded_white_noise`'s sub-streams per
    view and frame); a trainer's per-epoch augmentation adds the epoch.
    """
    return derive_seed(global_seed, subject_id, "coil-noise", *keys)
