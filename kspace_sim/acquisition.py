"""Multi-coil k-space from the store's coil-free k-space: the numpy reference.

    k_c = FFT( S_c * IFFT(k) ) + sigma * (L n)_c ,   c = 1 … C

with the project's centred orthonormal FFT (:mod:`kspace_sim.fft`), maps ``S`` from
:mod:`kspace_sim.coils` and noise from :mod:`kspace_sim.noise`. The trainer's torch version
(``kmtr.coils.coil_kspace``) computes the same thing and is held equal to this one by a test.
"""

from __future__ import annotations

import numpy as np

from kspace_sim.coils import validate_n_coils
from kspace_sim.fft import fft2c, ifft2c
from kspace_sim.noise import colour_noise, noise_sigma, seeded_white_noise, validate_noise_cov

__all__ = ["coil_kspace", "coil_images"]


def _check_maps(maps: np.ndarray, data_shape: tuple[int, ...]) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim < 3 or not np.iscomplexobj(maps):
        raise ValueError(f"coil maps must be complex (C, ..., H, W), got {maps.dtype} {maps.shape}")
    validate_n_coils(maps.shape[0])
    try:
        np.broadcast_shapes(maps.shape[1:], data_shape)
    except ValueError:
        raise ValueError(
            f"coil maps {maps.shape} do not broadcast against data {data_shape} (after the coil axis)"
        ) from None
    if maps.shape[-2:] != data_shape[-2:]:
        raise ValueError(f"coil maps are {maps.shape[-2:]} in (H, W), the data {data_shape[-2:]}")
    return maps


def coil_images(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """``S_c * image``: ``(C, *image.shape)`` complex64 from an image ``(..., H, W)`` and maps ``(C, ..., H, W)``."""
    maps = _check_maps(maps, np.shape(image))
    return (maps * np.asarray(image)[None]).astype(np.complex64, copy=False)


def coil_kspace(
    kspace: np.ndarray,
    maps: np.ndarray,
    snr_db: float | None = None,
    noise_cov: np.ndarray | None = None,
    seed: int = 0,
    region: np.ndarray | None = None,
    sigma: float | np.ndarray | None = None,
    workers: int | None = None,
    noise_index: tuple[np.ndarray | list[int] | None, ...] | None = None,
    noise_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Coil k-space ``(C, *kspace.shape)`` complex64 from coil-free k-space.

    Args:
        kspace: fully sampled coil-free k-space ``(..., H, W)`` complex (e.g. one subject's
            ``(S, T, H, W)`` from the store).
        maps: coil maps ``(C, ..., H, W)`` complex, broadcastable against ``kspace`` after the
            coil axis (e.g. ``(C, S, 1, H, W)`` for per-slice maps over all frames).
        snr_db: requested SNR (dB, finite; see :mod:`kspace_sim.noise`); None and ``sigma`` None =
            noise-free.
        noise_cov: ``(C, C)`` Hermitian positive-definite noise covariance in units of sigma^2
            (None = independent coils of equal noise).
        seed: seed of the noise generator (``np.random.default_rng(seed)``), e.g.
            :func:`kspace_sim.noise.noise_seed`; the same seed gives bit-identical output.
        region: bool mask broadcastable to ``kspace`` defining the SNR's signal (e.g. the heart,
            segmentation labels > 0); None = the foreground of ``|IFFT(k)|``.
        sigma: the per-coil noise standard deviation itself (instead of ``snr_db``, e.g. read from
            a store): a number or an array broadcastable to ``kspace.shape`` (e.g. ``(S, 1, 1, 1)``,
            one per slice); give at most one of the two.
        workers: scipy.fft threads.
        noise_index: when ``kspace`` is a selection of a larger data set (e.g. some frames of a
            subject), per leading axis the indices of its entries in the whole (None = all of that
            axis), so that its noise is those images' noise of the whole draw; None = ``kspace`` is the whole.
        noise_shape: the whole data's shape ``(*lead, H, W)`` with ``noise_index`` (default ``kspace.shape``).

    Returns:
        ``(C, *kspace.shape)`` complex64. Noise: ``sigma * L n`` with ``cov = L L^H`` and ``n`` =
        :func:`kspace_sim.noise.seeded_white_noise` ``(seed, C, kspace.shape)``: one independent
        sub-stream per image (per index of the leading axes, e.g. ``(view, frame)``).
    """
    kspace = np.asarray(kspace)
    if kspace.ndim < 2 or not np.iscomplexobj(kspace):
        raise ValueError(f"k-space must be complex (..., H, W), got {kspace.dtype} {kspace.shape}")
    maps = _check_maps(maps, kspace.shape)
    n_coils = maps.shape[0]
    if snr_db is not None and sigma is not None:
        raise ValueError("give the SNR or the noise sigma, not both")
    image = ifft2c(kspace, workers=workers)
    if snr_db is not None:
        sigma = noise_sigma(image, snr_db, region)
    if sigma is not None:  # checked before the FFTs
        sig = np.asarray(sigma, dtype=np.float64)
        if not np.all(np.isfinite(sig)) or np.any(sig < 0):
            raise ValueError(f"noise sigma must be finite and >= 0, got {sigma!r}")
        try:
            np.broadcast_shapes(sig.shape, kspace.shape)
        except ValueError:
            raise ValueError(f"noise sigma of shape {sig.shape} does not broadcast against {kspace.shape}") from None
        if noise_cov is not None:
            validate_noise_cov(noise_cov, n_coils)
    out = np.empty((n_coils, *kspace.shape), dtype=np.complex64)
    for c in range(n_coils):
        out[c] = fft2c(maps[c] * image, workers=workers, overwrite=True)
    if sigma is not None:
        white = seeded_white_noise(seed, n_coils, noise_shape or kspace.shape, noise_index)
        if white.shape != out.shape:
            raise ValueError(f"noise_index selects {white.shape[1:]} images, the k-space is {kspace.shape}")
        out += colour_noise(white, sigma, noise_cov)
    return out
