"""kmtr.fft / augment / normalise / data: conventions, exact k-space flips, the Dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from kmtr.augment import AugmentParams, augment_sample, flip_kspace, rotate_image
from kmtr.data import AugmentConfig, KSpaceDataset, frame_indices, prepare_batch, shared_sample_cache
from kmtr.fft import fft2c, ifft2c
from kmtr.normalise import denormalise, normalise, signed_log, signed_log_inverse, subject_scale
from kmtr.store import open_store
from kmtr_fixtures import store  # noqa: F401

torch.set_num_threads(1)


def _rand_complex(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)).to(torch.complex128)


@pytest.mark.parametrize("shape", [(3, 16, 16), (2, 12, 10), (2, 9, 7)])
def test_fft_convention_matches_numpy_and_is_unitary(shape):
    x = _rand_complex(*shape)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    k = fft2c(x)
    np.testing.assert_allclose(k.numpy(), ref, atol=1e-10)
    assert torch.allclose(ifft2c(k), x, atol=1e-10)
    assert torch.allclose((k.abs() ** 2).sum(), (x.abs() ** 2).sum())


@pytest.mark.parametrize("size", [16, 10, 9])
@pytest.mark.parametrize("dim", [-2, -1])
def test_flip_in_kspace_equals_flip_in_image(size, dim):
    x = _rand_complex(2, size, size + 2, seed=size)
    k = fft2c(x)
    expected = fft2c(torch.flip(x, dims=(dim,)))
    assert torch.allclose(flip_kspace(k, dim), expected, atol=1e-10)
    # a plain flip of k-space is *not* the right answer for even sizes
    if x.shape[dim] % 2 == 0:
        assert not torch.allclose(torch.flip(k, dims=(dim,)), expected, atol=1e-3)


def test_augment_sample_is_the_image_space_transform():
    x = _rand_complex(2, 3, 16, 16).to(torch.complex64)
    seg = (torch.rand(2, 3, 16, 16) > 0.5).to(torch.uint8)
    p = AugmentParams(flip_h=True, flip_w=True, angle=12.0)
    k_aug, seg_aug = augment_sample(fft2c(x), seg, p)
    expected = torch.flip(rotate_image(x, 12.0), dims=(-2, -1))
    assert torch.allclose(ifft2c(k_aug), expected, atol=1e-4)
    assert seg_aug.shape == seg.shape and seg_aug.dtype == torch.uint8
    assert torch.equal(rotate_image(x, 0.0), x)
    # 90 degrees on a square grid is an exact pixel permutation
    assert torch.allclose(rotate_image(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5) or \
        torch.allclose(rotate_image(x, 90.0), torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5)


def test_normalisation_is_invertible():
    k = _rand_complex(9, 5, 8, 8).to(torch.complex64) * 37.0
    s = subject_scale(k, torch.ones(9, 5, 8, dtype=torch.bool))
    kn = normalise(k, s)
    assert torch.allclose(torch.mean(kn.abs() ** 2), torch.tensor(1.0), atol=1e-5)
    assert torch.allclose(denormalise(kn, s), k, rtol=1e-5, atol=1e-4)


def test_scale_reads_only_the_sampled_lines():
    """The normalisation constant is the RMS of the sampled points: the unsampled lines, which a
    scanner never measures, cannot change it (issue 21)."""
    k = _rand_complex(3, 4, 8, 8).to(torch.complex64)
    mask = torch.rand(3, 4, 8, generator=torch.Generator().manual_seed(0)) < 0.4
    mask[..., 4] = True
    s = subject_scale(k, mask)
    sampled = k[mask[..., None, :].expand_as(k)]
    assert torch.allclose(s, torch.sqrt(torch.mean(sampled.abs() ** 2)), rtol=1e-6)
    changed = k.clone()
    changed[~mask[..., None, :].expand_as(k)] *= 1000.0
    assert torch.equal(subject_scale(changed, mask), s)
    y = torch.linspace(-50, 50, 101)
    assert torch.allclose(signed_log_inverse(signed_log(y, 0.1), 0.1), y, rtol=1e-5, atol=1e-5)


def test_frame_indices():
    assert frame_indices(50, 25).tolist() == list(range(0, 50, 2))
    assert frame_indices(50, 5).tolist() == [0, 10, 20, 30, 40]
    assert frame_indices(10, None).tolist() == list(range(10))
    assert len(frame_indices(50, 7)) == 7


def test_dataset_samples_and_batch_transform(store):  # noqa: F811
    ds = KSpaceDataset(store, "train", "vista_r4", frames=5)
    g = open_store(store)
    sample = ds[2]
    row = int(sample["row"])
    assert ds.shape == (9, 5, 32, 32)
    np.testing.assert_array_equal(sample["kspace"].numpy(), g["kspace"][row, :, ::2])
    np.testing.assert_array_equal(sample["mask"].numpy(), g["masks/vista_r4"][row, :, ::2])
    assert sample["seg"].shape == (9, 5, 32, 32) and sample["phenotypes"].shape == (18,)
    assert sample["diseases"].dtype == torch.int8 and sample["seg_present"].shape == (9,)
    loader = DataLoader(ds, batch_size=2, num_workers=2)  # workers open the store lazily (fork)
    batch = prepare_batch(next(iter(loader)), "cpu")
    assert batch["image"].shape == (2, 9, 5, 32, 32) and batch["scale"].shape == (2,)
    assert torch.allclose(fft2c(batch["image"]), batch["kspace"], atol=1e-5)
    raw = torch.from_numpy(g["kspace"][int(batch["row"][0]), :, ::2])
    assert torch.allclose(batch["kspace"][0] * batch["scale"][0], raw, rtol=1e-4, atol=1e-4)
    # the reconstructed image has the fixture's [0, 1] magnitude (after undoing the scale)
    mag = (batch["image"][0] * batch["scale"][0]).abs()
    assert float(mag.max()) <= 1.0 + 1e-4
    # the scale comes from the sampled lines alone: the unsampled ones can be anything
    raw_batch = next(iter(DataLoader(ds, batch_size=2)))
    noisy = dict(raw_batch, kspace=raw_batch["kspace"].clone())
    noisy["kspace"][~raw_batch["mask"][..., None, :].expand_as(noisy["kspace"])] *= 50.0
    assert torch.equal(prepare_batch(noisy, "cpu")["scale"], prepare_batch(raw_batch, "cpu")["scale"])


def test_dataset_augmentation_is_deterministic_per_epoch(store):  # noqa: F811
    aug = AugmentConfig(enabled=True, flip_p=0.5, max_angle=10, seed=3)
    ds = KSpaceDataset(store, "train", "vista_r4", augment=aug)
    a = ds[0]["kspace"]
    assert torch.equal(a, ds[0]["kspace"])
    changed = False
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        changed |= not torch.equal(a, ds[0]["kspace"])
    assert changed


def test_memory_cache_gives_identical_samples_without_rereading(store):  # noqa: F811
    aug = AugmentConfig(enabled=True, flip_p=0.5, seed=3)
    plain = KSpaceDataset(store, "train", "vista_r4", 5, aug)
    cached = KSpaceDataset(store, "train", "vista_r4", 5, aug, cache=True)
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
    assert len(cached._cache) == len(cached)
    cached._group = None  # a re-read would have to reopen the store: make that fail
    cached.location = "/nonexistent.zarr"
    assert torch.equal(cached[0]["mask"], plain[0]["mask"])


def test_shared_sample_cache_reads_each_subject_once_across_datasets_that_read_the_same(store, monkeypatch):  # noqa: F811
    """Inside shared_sample_cache, a second cached dataset of the same reads (a later stage of one
    kmtr train) takes the first one's samples without touching the store, and yields the same
    samples (its own augmentation still applied); other frames, masks or segmentation settings get
    caches of their own; outside the block, and after it, every dataset caches alone."""
    reads: list[tuple[str, int]] = []
    original = KSpaceDataset._read

    def counting(self, name, row):
        reads.append((name, row))
        return original(self, name, row)

    monkeypatch.setattr(KSpaceDataset, "_read", counting)
    aug = AugmentConfig(enabled=True, flip_p=0.5, seed=3)
    alone = KSpaceDataset(store, "train", "vista_r4", 5, aug, cache=True)
    expected = [alone[i] for i in range(len(alone))]
    reads.clear()
    with shared_sample_cache():
        first = KSpaceDataset(store, "train", "vista_r4", 5, aug, cache=True)
        _ = [first[i] for i in range(len(first))]
        n_first = len(reads)
        assert n_first == 3 * len(first)  # kspace, mask, seg of each subject
        with shared_sample_cache():  # nested: the same cache
            later = KSpaceDataset(store, "train", "vista_r4", 5, aug, cache=True)
            for i in range(len(later)):
                for k, v in later[i].items():
                    torch.testing.assert_close(v, expected[i][k], rtol=0, atol=0, equal_nan=True)
        assert len(reads) == n_first
        val = KSpaceDataset(store, "validation", "vista_r4", 5, cache=True)  # other rows of the same reads
        val[0]
        assert len(reads) == n_first + 3
        for other in (KSpaceDataset(store, "train", "vista_r4", 3, cache=True),
                      KSpaceDataset(store, "train", "vista_r4", 5, cache=True, with_seg=False),
                      KSpaceDataset(store, "train", "vista_r4", 5, cache=False)):
            before = len(reads)
            other[0]
            assert len(reads) > before
    reads.clear()
    again = KSpaceDataset(store, "train", "vista_r4", 5, aug, cache=True)
    again[0]
    assert len(reads) == 3


def test_phase_augmentation_redraws_only_the_phase(store):  # noqa: F811
    """The B0-phase augmentation keeps the magnitude image (anatomy, labels) and changes the phase
    by a smooth, slice-wise static map of the asked peak amplitude."""
    from kmtr.augment import smooth_phase

    rng = np.random.default_rng(0)
    big = smooth_phase(rng, (2, 64, 64), 2.0)
    assert np.allclose(np.abs(big).max(axis=(1, 2)), 2.0, rtol=1e-5)
    assert np.abs(np.diff(big, axis=-1)).max() < 0.3  # smooth (σ ≈ 10 px): small steps between neighbours
    phase = smooth_phase(rng, (2, 16, 16), 2.0)
    x = _rand_complex(2, 3, 16, 16).to(torch.complex64)
    k_aug, _ = augment_sample(fft2c(x), None, AugmentParams(phase=phase))
    y = ifft2c(k_aug)
    assert torch.allclose(y.abs(), x.abs(), atol=1e-5)
    dphi = torch.angle(y * x.conj())  # the added phase, the same in every frame
    assert torch.allclose(dphi, torch.from_numpy(phase)[:, None].expand_as(dphi), atol=1e-3)

    aug = AugmentConfig(enabled=True, flip_p=0.0, phase_amplitude=3.0, seed=1)
    ds = KSpaceDataset(store, "train", "vista_r4", augment=aug)
    plain = KSpaceDataset(store, "train", "vista_r4")
    a, b = ifft2c(ds[0]["kspace"]), ifft2c(plain[0]["kspace"])
    assert torch.allclose(a.abs(), b.abs(), atol=1e-4 * float(b.abs().max()))
    assert not torch.allclose(a, b, atol=1e-2 * float(b.abs().max()))
    assert torch.equal(ds[0]["kspace"], ds[0]["kspace"])  # deterministic per (seed, epoch, row)
