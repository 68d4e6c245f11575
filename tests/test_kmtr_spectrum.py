"""The k-space radial power spectrum read by the regression and classification heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kmtr.models.spectrum import KSpaceSpectrum, ring_index, spectrum_features, spectrum_statistics


def _random_kspace(rng: np.random.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy((rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64))


def _direct(k: np.ndarray, m: np.ndarray, rings: np.ndarray, n: int) -> np.ndarray:
    """The descriptor by explicit loops over subjects, views, frames and rings."""
    b, s, t, h, w = k.shape
    out = []
    for i in range(b):
        static, dynamic = [], []
        for v in range(s):
            for r in range(n):
                sel = [(f, y, x) for f in range(t) for y in range(h) for x in range(w) if rings[y, x] == r and m[i, v, f, x]]
                p = np.mean([abs(k[i, v, f, y, x]) ** 2 for f, y, x in sel]) if sel else 0.0
                static.append(np.log(p + 1e-8))
            for f in range(1, t):
                for r in range(n):
                    sel = [(y, x) for y in range(h) for x in range(w) if rings[y, x] == r and m[i, v, f, x] and m[i, v, 0, x]]
                    p = np.mean([abs(k[i, v, f, y, x] - k[i, v, 0, y, x]) ** 2 for y, x in sel]) if sel else 0.0
                    dynamic.append(np.log(p + 1e-8))
        out.append(static + dynamic)
    return np.array(out)


def test_ring_index_is_radial_with_the_centre_alone_in_ring_zero():
    rings = ring_index(16, 12, 5)
    assert rings.shape == (16, 12) and rings.dtype == torch.int64
    assert rings[8, 6] == 0 and int((rings == 0).sum()) == 1  # the DC sample of fft2c
    assert set(rings.unique().tolist()) == set(range(5))
    ky, kx = torch.meshgrid(torch.arange(16) - 8, torch.arange(12) - 6, indexing="ij")
    radius = torch.sqrt((ky**2 + kx**2).double()).flatten()
    order = torch.argsort(radius)
    assert torch.all(torch.diff(rings.flatten()[order]) >= 0)  # rings grow with the radius
    with pytest.raises(ValueError, match="at least 2 rings"):
        ring_index(8, 8, 1)


def test_spectrum_features_match_the_direct_formula():
    rng = np.random.default_rng(0)
    k = _random_kspace(rng, (2, 2, 3, 8, 8))
    m = torch.from_numpy(rng.random((2, 2, 3, 8)) < 0.5)
    m[0, 1, :, 4] = False  # no frame sampled at DC for one view: an empty ring gives log(eps)
    rings = ring_index(8, 8, 4)
    got = spectrum_features(k, m, rings, 4).numpy()
    want = _direct(k.numpy(), m.numpy(), rings.numpy(), 4)
    assert got.shape == (2, 2 * 4 + 2 * 2 * 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unsampled_points_do_not_count_and_static_tissue_cancels_in_the_dynamic_part():
    rng = np.random.default_rng(1)
    static = _random_kspace(rng, (1, 1, 1, 16, 16)).expand(1, 1, 4, 16, 16).clone()
    m = torch.from_numpy(rng.random((1, 1, 4, 16)) < 0.6)
    m[..., 8] = True
    rings = ring_index(16, 16, 6)
    a = spectrum_features(static, m, rings, 6)
    changed = static.clone()
    changed[..., ~m[0, 0, 0]] = 100.0  # values on lines not sampled in frame 0 …
    changed[0, 0, 1:] = static[0, 0, 1:]  # … (only in frame 0)
    assert torch.allclose(spectrum_features(changed, m, rings, 6), a)
    dynamic = a[0, 6:]
    assert torch.all(dynamic == torch.log(torch.tensor(1e-8)))  # nothing moved since frame 0
    moving = static.clone()
    moving[0, 0, 2] *= 1.5
    d = spectrum_features(moving, m, rings, 6)[0, 6:].reshape(3, 6)  # frames 1, 2, 3 against frame 0
    floor = float(torch.log(torch.tensor(1e-8)))
    assert float(d[1].max()) > floor + 10  # frame 2 differs from frame 0 …
    assert torch.all(d[0] == floor) and torch.all(d[2] == floor)  # … frames 1 and 3 do not


def test_module_standardises_with_its_statistics_and_ignores_autocast():
    rng = np.random.default_rng(2)
    spec = KSpaceSpectrum((2, 3, 8, 8), 4)
    assert spec.n_features == 2 * 4 * 3
    samples = [(_random_kspace(rng, (2, 3, 8, 8)) * (i + 1), torch.ones(2, 3, 8, dtype=torch.bool)) for i in range(5)]
    mean, std = spectrum_statistics(spec, samples, batch=2)
    # per-subject normalisation: the scale of a subject's k-space does not change its features
    assert mean.shape == std.shape == (spec.n_features,) and np.all(std > 0)
    spec.set_statistics(mean, std)
    from kmtr.normalise import normalise, subject_scale

    k = torch.stack([normalise(kk, subject_scale(kk, mm)) for kk, mm in samples])
    m = torch.stack([mm for _, mm in samples])
    z = spec(k, m)
    np.testing.assert_allclose(z.mean(0).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, unbiased=False).numpy(), 1.0, atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert spec(k, m).dtype == torch.float32 and torch.allclose(spec(k, m), z)
    assert {"mean", "std", "rings"} <= set(spec.state_dict())
