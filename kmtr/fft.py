"""Centred, orthonormal 2D FFTs over the last two axes (H, W) in torch, on any device.

Same convention as the store's ``fft_convention`` attribute::

    fft2c(x)  = fftshift(fft2(ifftshift(x), norm="ortho"))
    ifft2c(k) = fftshift(ifft2(ifftshift(k), norm="ortho"))

Both are unitary (Parseval holds) and exact inverses of each other.
"""

from __future__ import annotations

import torch

__all__ = ["fft2c", "ifft2c"]

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Image ``(..., H, W)`` (real or complex) → centred k-space ``(..., H, W)`` complex, DC at (H//2, W//2)."""
    if not torch.is_complex(x):
        x = x.to(torch.complex64 if x.dtype != torch.float64 else torch.complex128)
    return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS), norm="ortho"), dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred k-space ``(..., H, W)`` complex → complex image ``(..., H, W)``."""
    if not torch.is_complex(k):
        k = k.to(torch.complex64 if k.dtype != torch.float64 else torch.complex128)
    return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS), norm="ortho"), dim=_DIMS)
