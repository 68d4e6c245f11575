"""Smooth synthetic B0 phase maps.

Magnitude-only cine images get a plausible, smooth, static phase per slice before the FFT, as in
the k-MTR paper ("synthetic phase from a Gaussian-smoothed B0 field variation"): white noise is
low-pass filtered with a periodic Gaussian kernel (applied in the Fourier domain: exact, and 5x
faster than a truncated spatial kernel of σ ≈ 19 px), centred and scaled so that the phase has the
requested peak amplitude, plus an optional random linear ramp (an off-centre shift).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import fourier_gaussian

__all__ = ["smooth_phase_map", "phase_factor", "apply_phase"]


def smooth_phase_map(
    shape: tuple[int, int],
    rng: np.random.Generator,
    amplitude: float = np.pi,
    smoothness: float = 0.15,
    ramp: float = 0.5,
) -> np.ndarray:
    """One smooth phase map ``(H, W)`` float32 in radians.

    Args:
        shape: (H, W).
        rng: the generator (seed it per subject and slice).
        amplitude: peak |phase| of the smooth field (rad).
        smoothness: Gaussian kernel σ as a fraction of the mean image side (0.15 → σ ≈ 19 px at 128).
        ramp: peak phase (rad) of an added random linear ramp; 0 disables it.
    """
    if amplitude < 0 or smoothness <= 0 or ramp < 0:
        raise ValueError("amplitude and ramp must be >= 0 and smoothness > 0")
    h, w = shape
    sigma = smoothness * 0.5 * (h + w)
    noise = rng.standard_normal((h, w))
    field = np.fft.irfft2(fourier_gaussian(np.fft.rfft2(noise), sigma=sigma, n=w), s=(h, w))  # periodic Gaussian
    field -= field.mean()
    peak = np.abs(field).max()
    field = field * (amplitude / peak) if peak > 0 else field
    if ramp > 0:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
        field = field + ramp * (np.cos(angle) * yy + np.sin(angle) * xx)
    return field.astype(np.float32)


def phase_factor(phase: np.ndarray) -> np.ndarray:
    """``exp(i phase)`` of ``(S, H, W)`` radians as ``(S, 1, H, W)`` complex64 (static over time)."""
    return np.exp(1j * phase.astype(np.float32)).astype(np.complex64)[:, None]


def apply_phase(magnitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Complex image ``magnitude * exp(i phase)``.

    Args:
        magnitude: ``(S, T, H, W)`` float32.
        phase: ``(S, H, W)`` radians, static over time.

    Returns:
        ``(S, T, H, W)`` complex64.
    """
    return magnitude.astype(np.float32) * phase_factor(phase)
