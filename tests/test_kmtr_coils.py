"""kmtr.coils (torch) against the numpy reference kspace_sim.acquisition.coil_kspace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmtr.coils import coil_kspace as torch_coil_kspace
from kmtr.coils import noise_cholesky, standard_complex_noise
from kspace_sim.acquisition import coil_kspace
from kspace_sim.coils import subject_coil_geometries, subject_coil_maps
from kspace_sim.fft import fft2c, ifft2c
from kspace_sim.noise import correlation_matrix, noise_sigma, seeded_white_noise

B, S, T, H, W, C = 2, 2, 3, 32, 32, 4


def batch(H=H, W=W):
    """Two subjects: smooth complex images, their coil-free k-space, maps and heart regions."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:H, :W]
    v, u = (y - H / 2) / (H / 2), (x - W / 2) / (W / 2)
    disc = (u**2 + v**2 < 0.6).astype(np.float32)
    ks, maps, regions = [], [], []
    for b in range(B):
        amp = rng.uniform(0.5, 1.0, size=(S, T, 1, 1)).astype(np.float32)
        image = amp * disc * np.exp(1j * (0.5 + b) * u).astype(np.complex64)
        ks.append(fft2c(image.astype(np.complex64)))
        maps.append(subject_coil_maps(subject_coil_geometries(0, f"10000{b}", S, C), (H, W)))  # (C, S, H, W)
        regions.append(np.broadcast_to(disc > 0, (S, T, H, W)))
    return np.stack(ks), np.stack(maps), regions


@pytest.mark.parametrize("size", [32, 30])  # checkerboard path (multiple of 4) and shifted path
def test_noise_free_torch_equals_numpy(size):
    k, maps, _ = batch(size, size)
    out = torch_coil_kspace(torch.from_numpy(k), torch.from_numpy(maps))
    assert out.shape == (B, C, S, T, size, size) and out.dtype == torch.complex64
    for b in range(B):
        ref = coil_kspace(k[b], maps[b][:, :, None])
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=0, atol=2e-5 * np.abs(ref).max())


@pytest.mark.parametrize("rho", [None, 0.4])
def test_noisy_torch_equals_numpy_with_the_same_white_noise(rho):
    k, maps, regions = batch()
    cov = None if rho is None else correlation_matrix(C, rho)
    seeds = [11, 12]
    sigmas, white, refs = [], [], []
    for b in range(B):
        sigma = noise_sigma(ifft2c(k[b]), 20, regions[b])
        refs.append(coil_kspace(k[b], maps[b][:, :, None], snr_db=20, noise_cov=cov, seed=seeds[b], region=regions[b]))
        sigmas.append(sigma)
        white.append(seeded_white_noise(seeds[b], C, (S, T, H, W)))  # coil_kspace's draw for the seed
    out = torch_coil_kspace(
        torch.from_numpy(k), torch.from_numpy(maps), sigma=torch.tensor(sigmas),
        noise_cov=None if cov is None else torch.from_numpy(cov), white_noise=torch.from_numpy(np.stack(white)),
    )
    for b in range(B):
        np.testing.assert_allclose(out[b].numpy(), refs[b], rtol=0, atol=2e-5 * np.abs(refs[b]).max())


def test_torch_draw_is_seeded_and_at_the_requested_sigma():
    k, maps, _ = batch()
    kt, mt = torch.from_numpy(k), torch.from_numpy(maps)
    clean = torch_coil_kspace(kt, mt)
    a = torch_coil_kspace(kt, mt, sigma=0.2, generator=torch.Generator().manual_seed(3))
    b = torch_coil_kspace(kt, mt, sigma=0.2, generator=torch.Generator().manual_seed(3))
    c = torch_coil_kspace(kt, mt, sigma=0.2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float((a - clean).abs().pow(2).mean().sqrt()) == pytest.approx(0.2, rel=0.03)
    n = standard_complex_noise((200_000,), torch.Generator().manual_seed(0))
    assert float(n.abs().pow(2).mean()) == pytest.approx(1.0, rel=0.01)


def test_torch_bad_input():
    k, maps, _ = batch()
    kt, mt = torch.from_numpy(k), torch.from_numpy(maps)
    with pytest.raises(ValueError, match="not positive definite"):
        torch_coil_kspace(kt, mt, sigma=0.1, noise_cov=torch.full((C, C), 2.0) - torch.eye(C))
    with pytest.raises(ValueError, match="not Hermitian"):
        noise_cholesky(torch.tensor([[1.0, 0.3], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="finite"):
        torch_coil_kspace(kt, mt, sigma=float("nan"))
    with pytest.raises(ValueError, match=r"\(B, C, S, H, W\)"):
        torch_coil_kspace(kt, mt[:, :, :1])
    with pytest.raises(ValueError, match="white noise"):
        torch_coil_kspace(kt, mt, sigma=0.1, white_noise=torch.zeros(1, dtype=torch.complex64))


def test_per_slice_sigma_torch_equals_numpy():
    k, maps, _ = batch()
    sigmas = np.array([[0.1, 0.3], [0.2, 0.05]])  # (B, S)
    white = [seeded_white_noise(20 + b, C, (S, T, H, W)) for b in range(B)]
    out = torch_coil_kspace(torch.from_numpy(k), torch.from_numpy(maps), sigma=torch.from_numpy(sigmas),
                            white_noise=torch.from_numpy(np.stack(white)))
    clean = torch_coil_kspace(torch.from_numpy(k), torch.from_numpy(maps))
    for b in range(B):
        ref = coil_kspace(k[b], maps[b][:, :, None], sigma=sigmas[b][:, None, None, None], seed=20 + b)
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=0, atol=2e-5 * np.abs(ref).max())
        for s in range(S):  # each slice's noise at its own level
            level = float((out[b, :, s] - clean[b, :, s]).abs().pow(2).mean().sqrt())
            assert level == pytest.approx(sigmas[b, s], rel=0.05)
    with pytest.raises(ValueError, match="sigma must be"):
        torch_coil_kspace(torch.from_numpy(k), torch.from_numpy(maps), sigma=torch.ones(3))
