"""Smooth synthetic B0 phase maps: amplitude, smoothness, seeding, and the kernel they use."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from kspace_sim.phase import apply_phase, phase_factor, smooth_phase_map


def test_amplitude_and_seeding():
    a = smooth_phase_map((64, 48), np.random.default_rng(1), amplitude=2.0, ramp=0.0)
    assert a.shape == (64, 48) and a.dtype == np.float32
    assert np.abs(a).max() == pytest.approx(2.0, rel=1e-6) and abs(float(a.mean())) < 1e-5
    np.testing.assert_array_equal(a, smooth_phase_map((64, 48), np.random.default_rng(1), amplitude=2.0, ramp=0.0))
    assert not np.array_equal(a, smooth_phase_map((64, 48), np.random.default_rng(2), amplitude=2.0, ramp=0.0))
    with_ramp = smooth_phase_map((64, 48), np.random.default_rng(1), amplitude=2.0, ramp=0.5)
    assert np.abs(with_ramp - a).max() <= 0.5 * np.sqrt(2) + 1e-5  # a ramp of peak 0.5 along a random direction


def test_field_is_gaussian_smoothed_noise():
    """The Fourier-domain kernel equals scipy's periodic spatial Gaussian filter of the same noise
    (up to that filter's 4σ truncation), and the field's power sits at low spatial frequencies."""
    h, w, smooth = 128, 128, 0.15
    got = smooth_phase_map((h, w), np.random.default_rng(7), amplitude=1.0, smoothness=smooth, ramp=0.0)
    noise = np.random.default_rng(7).standard_normal((h, w))
    ref = gaussian_filter(noise, sigma=smooth * 0.5 * (h + w), mode="wrap")
    ref -= ref.mean()
    ref /= np.abs(ref).max()
    np.testing.assert_allclose(got, ref, atol=2e-3)
    power = np.abs(np.fft.fftshift(np.fft.fft2(got))) ** 2
    centre = power[h // 2 - 4 : h // 2 + 5, w // 2 - 4 : w // 2 + 5].sum()
    assert centre / power.sum() > 0.99


def test_bad_parameters():
    with pytest.raises(ValueError):
        smooth_phase_map((8, 8), np.random.default_rng(0), smoothness=0)
    with pytest.raises(ValueError):
        smooth_phase_map((8, 8), np.random.default_rng(0), amplitude=-1)


def test_apply_phase_keeps_the_magnitude():
    mag = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    phase = np.random.default_rng(1).uniform(-np.pi, np.pi, (2, 8, 8))
    x = apply_phase(mag, phase)
    assert x.dtype == np.complex64 and phase_factor(phase).shape == (2, 1, 8, 8)
    np.testing.assert_allclose(np.abs(x), mag, rtol=1e-6)
    np.testing.assert_allclose(np.angle(x[:, 0]), np.angle(np.exp(1j * phase)), atol=1e-5)
