"""Coil maps, thermal noise and the numpy multi-coil reference (kspace_sim.coils / noise / acquisition)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sigpy.mri

from kspace_sim.acquisition import coil_images, coil_kspace
from kspace_sim.coils import (
    CoilGeometry,
    coil_maps_from_params,
    draw_coil_geometry,
    subject_coil_geometries,
    subject_coil_maps,
    validate_n_coils,
)
from kspace_sim.fft import fft2c, ifft2c
from kspace_sim.noise import (
    coil_noise,
    correlation_matrix,
    noise_sigma,
    standard_complex_noise,
    validate_noise_cov,
    validate_snr_db,
)

SHAPE = (64, 64)


def smooth_image(shape=SHAPE, seed=0) -> np.ndarray:
    """A smooth complex test object: a disc with a brighter ellipse and a linear phase."""
    h, w = shape
    y, x = np.mgrid[:h, :w]
    v, u = (y - h / 2) / (h / 2), (x - w / 2) / (w / 2)
    mag = 0.5 * (u**2 + v**2 < 0.7) + 0.5 * ((u - 0.1) ** 2 / 0.1 + (v + 0.1) ** 2 / 0.05 < 1)
    return (mag * np.exp(1j * (0.8 * u - 0.5 * v))).astype(np.complex64)


# ----------------------------------------------------------------------------------------- maps
def test_identity_geometry_is_sigpys_birdcage():
    maps = coil_maps_from_params(CoilGeometry(8, radius=1.5), SHAPE)
    ref = sigpy.mri.birdcage_maps((8, *SHAPE), r=1.5)
    assert maps.shape == (8, *SHAPE) and maps.dtype == np.complex64
    np.testing.assert_allclose(maps, ref, atol=2e-6)


def test_rotation_by_one_coil_spacing_permutes_the_coils():
    base = coil_maps_from_params(CoilGeometry(8, radius=1.8), SHAPE)
    turned = coil_maps_from_params(CoilGeometry(8, radius=1.8, rotation=2 * math.pi / 8), SHAPE)
    for c in range(8):
        nxt = base[(c + 1) % 8]
        phase = np.vdot(nxt, turned[c])
        phase /= abs(phase)
        assert np.abs(turned[c] - nxt * phase).max() < 2e-3
    assert np.abs(turned - base).max() > 0.1  # the rotation does change each coil's map


def test_offset_moves_the_ring():
    base = coil_maps_from_params(CoilGeometry(4, radius=1.8), SHAPE)
    moved = coil_maps_from_params(CoilGeometry(4, radius=1.8, offset_x=0.05), SHAPE)
    # Shifting the ring by 0.05 half-FOV = 1.6 pixels right: the new map at column j+1.6 ≈ old at j.
    assert np.abs(moved - base).max() > 1e-2
    shifted = np.abs(moved[:, :, 10:50])
    interp = 0.4 * np.abs(base[:, :, 8:48]) + 0.6 * np.abs(base[:, :, 9:49])
    assert np.abs(shifted - interp).max() < 5e-3


@pytest.mark.parametrize("model", ["birdcage", "random_field"])
def test_maps_are_normalised_everywhere(model):
    geoms = subject_coil_geometries(3, "1000123", n_slices=3, n_coils=8, model=model)
    maps = subject_coil_maps(geoms, SHAPE)
    assert maps.shape == (8, 3, *SHAPE)
    np.testing.assert_allclose(np.sum(np.abs(maps) ** 2, axis=0), 1.0, atol=1e-5)


def test_random_field_is_smooth_and_seeded():
    g = CoilGeometry(8, "random_field", smoothness=0.3, seed=11)
    maps = coil_maps_from_params(g, SHAPE)
    assert np.array_equal(maps, coil_maps_from_params(g, SHAPE))
    other = coil_maps_from_params(CoilGeometry(8, "random_field", smoothness=0.3, seed=12), SHAPE)
    assert np.abs(maps - other).max() > 0.1
    spectrum = np.abs(fft2c(maps)) ** 2
    h, w = SHAPE
    ky, kx = np.mgrid[:h, :w]
    low = (ky - h // 2) ** 2 + (kx - w // 2) ** 2 <= 8**2  # within 8 cycles per field of view
    assert spectrum[:, low].sum() / spectrum.sum() > 0.99


def test_geometries_are_deterministic_per_subject_and_slice():
    a = subject_coil_geometries(0, "1000001", 9, 8)
    assert a == subject_coil_geometries(0, "1000001", 9, 8)
    assert a != subject_coil_geometries(0, "1000002", 9, 8)
    assert a != subject_coil_geometries(1, "1000001", 9, 8)
    assert len({g.rotation for g in a}) == 9  # a fresh draw per slice
    # the compact form regenerates the maps bit for bit
    for g in a[:2]:
        back = CoilGeometry.from_array(g.to_array(), seed=g.seed)
        assert back == g
        assert np.array_equal(coil_maps_from_params(back, SHAPE), coil_maps_from_params(g, SHAPE))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8", None])
def test_bad_coil_count(bad):
    with pytest.raises(ValueError, match="number of coils must be an integer >= 1"):
        validate_n_coils(bad)
    with pytest.raises(ValueError, match="number of coils"):
        draw_coil_geometry(np.random.default_rng(0), bad)


def test_bad_geometry():
    with pytest.raises(ValueError, match="offset too large"):
        coil_maps_from_params(CoilGeometry(8, offset_x=0.3), SHAPE)
    with pytest.raises(ValueError, match="inside the field of view"):
        coil_maps_from_params(CoilGeometry(8, radius=1.2), SHAPE)
    with pytest.raises(ValueError, match="unknown coil model"):
        coil_maps_from_params(CoilGeometry(8, model="helmet"), SHAPE)


# ---------------------------------------------------------------------------------------- noise
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "loud", None, True])
def test_snr_must_be_finite(bad):
    with pytest.raises(ValueError, match="SNR must be a finite number of dB"):
        validate_snr_db(bad)
    if bad is None:  # coil_kspace's snr_db=None means noise-free
        return
    with pytest.raises(ValueError, match="SNR must be a finite number of dB"):
        coil_kspace(fft2c(smooth_image()), np.ones((1, *SHAPE), np.complex64), snr_db=bad)


def test_correlation_matrices_and_bad_covariances():
    psi = correlation_matrix(4, 0.5)
    np.testing.assert_allclose(psi[0], [1, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(correlation_matrix(3, 0.2, "constant"), [[1, 0.2, 0.2], [0.2, 1, 0.2], [0.2, 0.2, 1]])
    with pytest.raises(ValueError, match="not positive definite"):
        correlation_matrix(8, -0.5, "constant")  # PD only for rho > -1/7
    with pytest.raises(ValueError, match="not positive definite"):
        correlation_matrix(4, 1.0)
    with pytest.raises(ValueError, match="not Hermitian"):
        validate_noise_cov(np.array([[1.0, 0.5], [0.1, 1.0]]), 2)
    with pytest.raises(ValueError, match=r"must be \(3, 3\)"):
        validate_noise_cov(np.eye(2), 3)
    with pytest.raises(ValueError, match="not positive definite"):
        coil_kspace(fft2c(smooth_image()), np.ones((2, *SHAPE), np.complex64) / math.sqrt(2), snr_db=20,
                    noise_cov=np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_standard_noise_and_orthonormal_fft_keep_sigma():
    rng = np.random.default_rng(0)
    n = standard_complex_noise(rng, (4, 128, 128))
    assert n.dtype == np.complex64
    assert abs(np.mean(np.abs(n) ** 2) - 1) < 0.02
    assert abs(np.var(n.real) - 0.5) < 0.01 and abs(np.var(n.imag) - 0.5) < 0.01
    noise = coil_noise(np.random.default_rng(1), (4, 128, 128), sigma=0.3)
    assert abs(np.sqrt(np.mean(np.abs(noise) ** 2)) - 0.3) < 0.005
    image_noise = ifft2c(noise)  # k-space sigma == image sigma
    assert abs(np.sqrt(np.mean(np.abs(image_noise) ** 2)) - 0.3) < 0.005


def test_correlated_noise_has_the_requested_covariance():
    psi = correlation_matrix(4, 0.6)
    noise = coil_noise(np.random.default_rng(2), (4, 256, 256), sigma=2.0, cov=psi).reshape(4, -1)
    emp = noise @ noise.conj().T / noise.shape[1]
    np.testing.assert_allclose(emp, 4.0 * psi, atol=0.05 * 4.0)


# ---------------------------------------------------------------------------- numpy reference
def test_noise_free_coil_kspace_is_the_forward_model():
    image = smooth_image()
    k = fft2c(image)
    maps = coil_maps_from_params(CoilGeometry(8, radius=1.7, rotation=0.3), SHAPE)
    kc = coil_kspace(k, maps)
    assert kc.shape == (8, *SHAPE) and kc.dtype == np.complex64
    np.testing.assert_allclose(kc, fft2c(coil_images(image, maps)), atol=1e-5)
    # SENSE-1 with the true maps gives the coil-free image back (sum |S|^2 = 1)
    combined = np.sum(np.conj(maps) * ifft2c(kc), axis=0)
    np.testing.assert_allclose(combined, image, atol=1e-5)
    # one coil of modulus one is today's single-coil k-space
    np.testing.assert_allclose(coil_kspace(k, np.ones((1, *SHAPE), np.complex64))[0], k, atol=1e-5)


def test_coil_kspace_broadcasts_maps_over_frames():
    frames = np.stack([smooth_image(), 0.5 * smooth_image()])[None]  # (S=1, T=2, H, W)
    k = fft2c(frames)
    maps = coil_maps_from_params(CoilGeometry(4, radius=1.7), SHAPE)[:, None, None]  # (C, S, 1, H, W)
    kc = coil_kspace(k, maps)
    assert kc.shape == (4, 1, 2, *SHAPE)
    np.testing.assert_allclose(kc[:, 0, 1], 0.5 * kc[:, 0, 0], atol=1e-5)
    with pytest.raises(ValueError, match="do not broadcast"):
        coil_kspace(k, maps[:, :, :, :32])


def test_noise_is_deterministic_and_at_the_requested_level():
    image = smooth_image()
    k = fft2c(image)
    maps = coil_maps_from_params(CoilGeometry(8, radius=1.7), SHAPE)
    region = np.abs(image) > 0
    a = coil_kspace(k, maps, snr_db=20, seed=5, region=region)
    assert np.array_equal(a, coil_kspace(k, maps, snr_db=20, seed=5, region=region))
    assert not np.array_equal(a, coil_kspace(k, maps, snr_db=20, seed=6, region=region))
    sigma = noise_sigma(image, 20, region)
    assert sigma == pytest.approx(np.abs(image)[region].mean() / 10)
    noise = a - coil_kspace(k, maps)
    assert np.sqrt(np.mean(np.abs(noise) ** 2)) == pytest.approx(sigma, rel=0.02)
    # sigma given directly is the same draw
    assert np.array_equal(a, coil_kspace(k, maps, sigma=sigma, seed=5))
    # the noise is exactly sigma * L n with n the first standard draw of the generator
    psi = correlation_matrix(8, 0.3)
    b = coil_kspace(k, maps, sigma=sigma, seed=5, noise_cov=psi)
    n = standard_complex_noise(np.random.default_rng(5), (8, *SHAPE))
    expected = sigma * np.tensordot(np.linalg.cholesky(psi), n, axes=(1, 0))
    np.testing.assert_allclose(b - coil_kspace(k, maps), expected, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        coil_kspace(k, maps, snr_db=20, sigma=0.1)
    with pytest.raises(ValueError, match="region is empty"):
        coil_kspace(k, maps, snr_db=20, region=np.zeros(SHAPE, bool))


def test_bad_sigma():
    k = fft2c(smooth_image())
    maps = np.ones((1, *SHAPE), np.complex64)
    with pytest.raises(ValueError, match="finite and >= 0"):
        coil_kspace(k, maps, sigma=-0.1)
    with pytest.raises(ValueError, match="does not broadcast"):
        coil_kspace(k, maps, sigma=np.ones(3))
