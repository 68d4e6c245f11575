"""Centred, orthonormal 2D Fourier transforms over the last two axes (H, W).

Convention (pinned in the store's attributes and in the tests)::

    fft2c(x)  = fftshift(fft2(ifftshift(x), norm="ortho"))
    ifft2c(k) = fftshift(ifft2(ifftshift(k), norm="ortho"))

For even H and W divisible by 4 the shifts reduce to a checkerboard modulation,
``fft2c(x) = c * fft2(c * x)`` with ``c[i, j] = (-1) ** (i + j)``, which avoids the two
array-copying shifts; other sizes fall back to the shifted definition. The transform is
unitary: ``sum(|x|**2) == sum(|fft2c(x)|**2)`` and ``ifft2c(fft2c(x)) == x``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft

__all__ = ["fft2c", "fft2c_modulated", "ifft2c", "FFT_CONVENTION"]

FFT_CONVENTION = (
    "centred orthonormal 2D DFT over (H, W): fftshift(fft2(ifftshift(x), norm='ortho')); "
    "phase-encoding direction W"
)


@lru_cache(maxsize=16)
def _checkerboard(h: int, w: int, dtype: str) -> np.ndarray:
    i = np.arange(h)[:, None]
    j = np.arange(w)[None, :]
    return np.where((i + j) % 2 == 0, 1, -1).astype(dtype)


def _fast_path(x: np.ndarray) -> bool:
    h, w = x.shape[-2:]
    return h % 4 == 0 and w % 4 == 0


def _as_complex(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if np.iscomplexobj(x):
        return x
    return x.astype(np.complex128 if x.dtype == np.float64 else np.complex64)


def _transform(x: np.ndarray, inverse: bool, workers: int | None, overwrite: bool = False) -> np.ndarray:
    was_complex = np.iscomplexobj(x)
    x = _as_complex(x)
    fn = scipy.fft.ifft2 if inverse else scipy.fft.fft2
    if _fast_path(x):
        c = _checkerboard(x.shape[-2], x.shape[-1], x.real.dtype.name)
        if overwrite and was_complex:
            x *= c
        else:
            x = x * c
        y = fn(x, axes=(-2, -1), norm="ortho", workers=workers, overwrite_x=True)
        y *= c
        return y
    axes = (-2, -1)
    y = fn(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho", workers=workers)
    return np.fft.fftshift(y, axes=axes)


def fft2c(x: np.ndarray, workers: int | None = None, overwrite: bool = False) -> np.ndarray:
    """Centred orthonormal FFT over the last two axes.

    Args:
        x: real or complex array ``(..., H, W)``; float32 input gives complex64 output.
        workers: threads for ``scipy.fft`` (None = 1).
        overwrite: the input (if complex) may be destroyed, saving a copy of it.

    Returns:
        Complex k-space ``(..., H, W)`` with the DC sample at ``(H // 2, W // 2)``.
    """
    return _transform(x, inverse=False, workers=workers, overwrite=overwrite)


def fft2c_modulated(x: np.ndarray, factor: np.ndarray, workers: int | None = None) -> np.ndarray:
    """``fft2c(x * factor)`` for a real ``x`` and a small complex ``factor``, with one temporary.

    The simulator's phase step: ``x`` is the magnitude ``(S, T, H, W)`` float32, ``factor`` the
    static ``exp(i phase)`` ``(S, 1, H, W)`` complex64. On the fast path the checkerboard is
    folded into ``factor`` (exact: it is ±1), the product is written straight into the array
    that the FFT then transforms in place, so the result equals ``fft2c(x * factor)`` bit for bit.

    Returns:
        ``(..., H, W)`` complex64 (complex128 for float64 inputs).
    """
    x = np.asarray(x)
    factor = np.asarray(factor)
    dtype = np.result_type(x.dtype, factor.dtype, np.complex64)
    out = np.empty(np.broadcast_shapes(x.shape, factor.shape), dtype=dtype)
    if not _fast_path(out):
        np.multiply(x, factor, out=out)
        return _transform(out, inverse=False, workers=workers, overwrite=True)
    c = _checkerboard(out.shape[-2], out.shape[-1], out.real.dtype.name)
    np.multiply(x, factor * c, out=out)
    y = scipy.fft.fft2(out, axes=(-2, -1), norm="ortho", workers=workers, overwrite_x=True)
    y *= c
    return y


def ifft2c(k: np.ndarray, workers: int | None = None) -> np.ndarray:
    """Inverse of :func:`fft2c` over the last two axes: ``(..., H, W)`` complex → image."""
    return _transform(k, inverse=True, workers=workers)
