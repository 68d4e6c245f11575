import numpy as np
import pytest

from kspace_sim.fft import fft2c, ifft2c


def _shifted(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)


#: sizes of every class mod 4, non-square: the checkerboard fast path is exact only when both H and W
#: are multiples of 4 (H ≡ 2 with W ≡ 0 (mod 4), or the reverse, flips the sign of every sample)
SHAPES = [(3, 128, 128), (2, 5, 32, 48), (16, 12), (2, 18, 18), (15, 17), (6, 10), (16, 10), (12, 16), (10, 14),
          (2, 10, 16), (14, 8), (9, 16), (16, 9)]


@pytest.mark.parametrize("shape", SHAPES)
def test_equals_shifted_definition(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    np.testing.assert_allclose(fft2c(x), _shifted(x), atol=1e-10)
    ax = (-2, -1)
    inv = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)
    np.testing.assert_allclose(ifft2c(x), inv, atol=1e-10)


@pytest.mark.parametrize("shape", [(4, 128, 128), (7, 9)])
def test_round_trip_and_energy(shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    k = fft2c(x)
    assert k.dtype == np.complex64
    np.testing.assert_allclose(ifft2c(k), x, atol=1e-5)
    np.testing.assert_allclose(np.sum(np.abs(k) ** 2), np.sum(np.abs(x) ** 2), rtol=1e-5)


def test_dc_at_centre_and_real_input():
    x = np.ones((128, 128), dtype=np.float32)
    k = fft2c(x)
    assert k.dtype == np.complex64
    assert np.argmax(np.abs(k)) == 64 * 128 + 64
    assert abs(k[64, 64] - 128.0) < 1e-3  # orthonormal: DC = sum / sqrt(H W)
    assert np.abs(k).sum() - abs(k[64, 64]) < 1e-2


def test_input_not_modified():
    x = np.random.default_rng(2).standard_normal((8, 8)).astype(np.complex64)
    y = x.copy()
    fft2c(x)
    ifft2c(x)
    np.testing.assert_array_equal(x, y)


def test_overwrite_gives_the_same_result():
    x = np.random.default_rng(3).standard_normal((2, 16, 16)).astype(np.complex64)
    ref = fft2c(x)
    np.testing.assert_array_equal(fft2c(x.copy(), overwrite=True), ref)


@pytest.mark.parametrize("shape", SHAPES)
def test_equals_sigpy(shape):
    """The simulator's transform is sigpy's centred orthonormal FFT (``sigpy.fft``) over (H, W)."""
    import sigpy

    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    np.testing.assert_allclose(fft2c(x), sigpy.fft(x, axes=(-2, -1)), atol=1e-10)
    np.testing.assert_allclose(ifft2c(x), sigpy.ifft(x, axes=(-2, -1)), atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 3, 16, 12), (2, 3, 10, 6), (2, 3, 16, 10), (2, 3, 10, 16), (2, 3, 14, 10)])
def test_fft2c_modulated_equals_fft2c_of_the_product(shape):  # fast path and the shifted fallback
    from kspace_sim.fft import fft2c_modulated
    from kspace_sim.phase import apply_phase, phase_factor

    rng = np.random.default_rng(3)
    mag = rng.random(shape).astype(np.float32)
    phase = rng.uniform(-np.pi, np.pi, (shape[0], *shape[2:]))
    got = fft2c_modulated(mag, phase_factor(phase))
    want = fft2c(apply_phase(mag, phase))
    assert got.dtype == want.dtype == np.complex64
    np.testing.assert_array_equal(got, want)  # bit for bit: the checkerboard is folded exactly
    np.testing.assert_allclose(got, _shifted(mag * np.exp(1j * phase)[:, None]), atol=1e-4)
