"""Segmentation decoder (UNETR-style) and CNN baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kmtr.fft import fft2c, ifft2c
from kmtr.models.baselines import (
    INPUT_KINDS, ResNetBaseline, UNetBaseline, baseline_input, cs_reconstruct, resnet50, to_channels,
)
from kmtr.models.mae import count_parameters
from kmtr.models.segmentation import SegmentationDecoder, upsample_frames, upsampling_strides
from kmtr.models.tokenizer import TokenGrid

torch.set_num_threads(1)


def _feats(grid: TokenGrid, width: int, n: int, batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, grid.num_tokens, width, generator=g) for _ in range(n)]


def _keep(grid: TokenGrid, batch: int = 2, seed: int = 1) -> torch.Tensor:
    keep = torch.rand(batch, grid.num_tokens, generator=torch.Generator().manual_seed(seed)) > 0.4
    keep[:, 0] = False  # at least one unseen token
    return keep


def _finite_grads(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return bool(grads) and all(torch.isfinite(g).all() for g in grads)


# ---------------------------------------------------------------- segmentation decoder


@pytest.mark.parametrize(
    "dims, patch, n_features",
    [((2, 5, 32, 32), (5, 8, 8), 3), ((1, 10, 32, 64), (5, 16, 16), 2), ((1, 5, 16, 32), (5, 4, 8), 4)],
)
def test_decoder_output_shape(dims: tuple[int, ...], patch: tuple[int, int, int], n_features: int) -> None:
    grid = TokenGrid(*dims, patch=patch)
    dec = SegmentationDecoder(grid, width=16, n_features=n_features, dec_width=16, num_classes=4)
    out = dec(_feats(grid, 16, n_features), _keep(grid))
    s, t, h, w = dims
    assert out.shape == (2, s, 4, t, h, w)


def test_decoder_out_stride() -> None:
    """out_stride 2 drops the last (full-resolution) stage and upsamples the logits bilinearly."""
    torch.manual_seed(0)
    grid = TokenGrid(2, 5, 32, 32, (5, 8, 8))
    full = SegmentationDecoder(grid, width=16, n_features=3, dec_width=16, num_classes=4)
    half = SegmentationDecoder(grid, width=16, n_features=3, dec_width=16, num_classes=4, out_stride=2)
    assert len(half.blocks) == len(full.blocks) - 1 and half.skip_levels == full.skip_levels[:-1]
    assert count_parameters(half) < count_parameters(full)
    feats, keep = _feats(grid, 16, 3), _keep(grid)
    seen = []
    half.head.register_forward_hook(lambda mod, inp, outp: seen.append(outp))
    out = half(feats, keep)
    assert out.shape == (2, 2, 4, 5, 32, 32)
    assert seen[0].shape == (4, 4, 5, 16, 16)  # the head works at half resolution
    assert torch.equal(out.flatten(0, 1), upsample_frames(seen[0], 2))  # = trilinear (next test)
    for bad in (3, 8, 16):  # not a power of two; no stage left (3 stages: 8 would drop all)
        with pytest.raises(ValueError, match="out_stride"):
            SegmentationDecoder(grid, width=16, n_features=3, out_stride=bad)


def test_upsample_frames_equals_trilinear_in_values_and_gradients() -> None:
    """The per-frame bilinear upsampling is the trilinear one at temporal scale 1: equal up to float
    rounding on small frames, bit for bit on the tiny preset's 64 × 64 logit frames."""
    torch.manual_seed(0)
    for shape, factor, exact in (((3, 4, 5, 6, 7), 2, False), ((3, 4, 5, 6, 7), 4, False),
                                 ((2, 6, 5, 64, 64), 2, True)):
        x = torch.randn(*shape, requires_grad=True)
        g = torch.randn(*shape[:3], shape[3] * factor, shape[4] * factor)
        ref = F.interpolate(x, scale_factor=(1, factor, factor), mode="trilinear", align_corners=False)
        (ref_grad,) = torch.autograd.grad(ref, x, g)
        out = upsample_frames(x, factor)
        (grad,) = torch.autograd.grad(out, x, g)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-5)
        if exact:
            assert torch.equal(out, ref) and torch.equal(grad, ref_grad)


def test_upsampling_strides_and_skip_assignment() -> None:
    assert upsampling_strides((5, 8, 8)) == [(5, 2, 2), (1, 2, 2), (1, 2, 2)]
    assert upsampling_strides((5, 8, 4)) == [(5, 2, 2), (1, 2, 2), (1, 2, 1)]
    # paper: 4 features, 3 stages → skips f3, f2, f1 (UNETR); tiny: 3 features, 4 stages → f2, f1, f1, f1
    paper = TokenGrid(9, 5, 128, 128, (5, 8, 8))
    assert SegmentationDecoder(paper, 32, 4, dec_width=16).skip_levels == [2, 1, 0]
    tiny = TokenGrid(9, 5, 128, 128, (5, 16, 16))
    assert SegmentationDecoder(tiny, 32, 3, dec_width=16).skip_levels == [1, 0, 0, 0]
    # fewer stages than shallow features: the deepest ones
    assert SegmentationDecoder(TokenGrid(1, 5, 16, 16, (5, 4, 4)), 32, 6, dec_width=16).skip_levels == [4, 3]


def test_decoder_fill_embedding_replaces_unseen_tokens() -> None:
    grid = TokenGrid(2, 5, 32, 32, (5, 8, 8))
    dec = SegmentationDecoder(grid, width=16, n_features=3, dec_width=16).eval()
    feats, keep = _feats(grid, 16, 3), _keep(grid)
    zeroed = [f * keep[..., None] for f in feats]
    noisy = [f + 5.0 * torch.randn_like(f) * (~keep)[..., None] for f in feats]
    with torch.no_grad():
        ref = dec(zeroed, keep)
        assert torch.allclose(dec(noisy, keep), ref, atol=1e-5)  # values at unseen tokens are ignored
        dec.fill.add_(1.0)
        assert not torch.allclose(dec(zeroed, keep), ref, atol=1e-3)  # … the learned fill is used instead
        all_seen = torch.ones_like(keep)
        a = dec(feats, all_seen)
        dec.fill.add_(1.0)
        assert torch.allclose(dec(feats, all_seen), a)  # no unseen token → fill unused


def test_decoder_instance_norms_get_contiguous_input_whatever_the_token_layout() -> None:
    """The token volumes are a permute of (B, L, D): as a view they carry channels-last strides through
    oneDNN's convolutions into GroupNorm, several times slower there on CPU (benchmarks/bench_seg_decoder.py).
    The decoder makes them contiguous; the values are those of the strided volumes."""
    grid = TokenGrid(2, 5, 32, 32, (5, 8, 8))
    dec = SegmentationDecoder(grid, width=16, n_features=3, dec_width=16)
    feats, keep = _feats(grid, 16, 3), _keep(grid)
    layouts: list[bool] = []
    for m in dec.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.register_forward_pre_hook(lambda _m, args: layouts.append(args[0].is_contiguous()))
    out = dec(feats, keep)
    assert len(layouts) == 2 * (1 + len(dec.blocks)) and all(layouts)
    strided = dec._volume
    dec._volume = lambda *a: strided(*a).contiguous(memory_format=torch.channels_last_3d)  # the layout of the view
    layouts.clear()
    assert torch.allclose(dec(feats, keep), out, atol=1e-5) and not any(layouts)


def test_decoder_rejects_bad_patch() -> None:
    with pytest.raises(ValueError, match="powers of two"):
        SegmentationDecoder(TokenGrid(1, 5, 24, 24, (5, 12, 12)), 16, 2)
    with pytest.raises(ValueError, match="powers of two"):
        SegmentationDecoder(TokenGrid(1, 5, 24, 32, (5, 6, 8)), 16, 2)
    with pytest.raises(ValueError, match="ph or pw"):
        SegmentationDecoder(TokenGrid(1, 5, 4, 4, (5, 1, 1)), 16, 2)


def test_decoder_paper_size_parameters() -> None:
    grid = TokenGrid(9, 5, 128, 128, (5, 8, 8))
    n = count_parameters(SegmentationDecoder(grid, width=1024, n_features=4, dec_width=576))
    assert 30e6 < n < 70e6, n  # 47.7 M


def test_decoder_overfits_tiny_batch() -> None:
    torch.manual_seed(0)
    grid = TokenGrid(2, 5, 32, 32, (5, 8, 8))
    dec = SegmentationDecoder(grid, width=32, n_features=3, dec_width=32, num_classes=3)
    feats, keep = _feats(grid, 32, 3), _keep(grid)
    yy, xx = torch.meshgrid(torch.arange(32.0) - 15.5, torch.arange(32.0) - 15.5, indexing="ij")
    r = (yy**2 + xx**2).sqrt()
    labels = ((r < 12).long() + (r < 6).long()).expand(2, 2, 5, 32, 32)  # ring / disc "myocardium / cavity"
    opt = torch.optim.SGD(dec.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(20):
        logits = dec(feats, keep)  # (B, S, C, T, H, W)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(0, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert dec.fill.grad is not None and _finite_grads(dec)
    assert losses[-1] < 0.6 * losses[0], losses


# ---------------------------------------------------------------- baseline inputs


def _kspace_and_mask(b: int = 2, s: int = 2, t: int = 5, h: int = 32, w: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    k = torch.complex(torch.randn(b, s, t, h, w, generator=g), torch.randn(b, s, t, h, w, generator=g))
    mask = torch.rand(b, s, t, w, generator=g) < 0.3
    mask[..., w // 2] = True
    return k, mask


def test_baseline_input_kinds() -> None:
    k, mask = _kspace_and_mask()
    m = mask[..., None, :]
    assert torch.allclose(baseline_input(k, mask, "image"), ifft2c(k))
    zeroed = torch.where(m, k, torch.zeros_like(k))
    assert torch.allclose(baseline_input(k, mask, "image_under"), ifft2c(zeroed))
    under = baseline_input(k, mask, "kspace_under")
    assert torch.equal(under, zeroed)
    assert (under.masked_select(~m.expand_as(under)) == 0).all()
    compressed = baseline_input(k, mask, "kspace_under", signed_log_c=0.1)
    assert (compressed.masked_select(~m.expand_as(compressed)) == 0).all()
    assert torch.allclose(compressed.real, torch.sign(zeroed.real) * torch.log1p(zeroed.real.abs() / 0.1))
    with pytest.raises(ValueError, match="unknown baseline input kind"):
        baseline_input(k, mask, "sinogram")


def test_to_channels_order() -> None:
    k, _ = _kspace_and_mask(s=3)
    x = to_channels(k)
    assert x.shape == (2, 6, 5, 32, 32) and not x.is_complex()
    assert torch.equal(x[:, 2], k[:, 1].real) and torch.equal(x[:, 3], k[:, 1].imag)


# ---------------------------------------------------------------- baselines


def test_resnet50_sizes() -> None:
    assert 45e6 < count_parameters(resnet50(18, 1)) < 48e6  # 3-D ResNet-50, 18 input channels: 46.5 M
    assert abs(count_parameters(resnet50(3, 1000, spatial_dims=2)) - 25_557_032) < 0.01 * 25_557_032
    tiny = resnet50(18, 7, width=1 / 8)
    assert tiny.conv1.out_channels == 8 and tiny.fc.in_features == 64 * 4
    with torch.no_grad():
        assert tiny(torch.randn(2, 18, 5, 64, 64)).shape == (2, 7)


@pytest.mark.parametrize("kind, c, magnitude", [("image", None, False), ("image_under", None, False),
                                                ("kspace_under", 0.1, False), ("image", None, True)])
def test_resnet_baseline_step(kind: str, c: float | None, magnitude: bool) -> None:
    torch.manual_seed(0)
    k, mask = _kspace_and_mask()
    model = ResNetBaseline(kind, slices=2, out_dim=3, width=1 / 8, signed_log_c=c, magnitude=magnitude)
    assert model.net.conv1.in_channels == (2 if magnitude else 4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = F.mse_loss(model(k, mask), torch.randn(2, 3))
    loss.backward()
    assert torch.isfinite(loss) and _finite_grads(model)
    opt.step()


@pytest.mark.parametrize("kind", ["image", "image_under"])
@pytest.mark.parametrize("magnitude", [False, True])
def test_unet_baseline_step(kind: str, magnitude: bool) -> None:
    torch.manual_seed(0)
    k, mask = _kspace_and_mask(b=1, s=2, t=2)
    model = UNetBaseline(kind, num_classes=4, channels=(8, 16, 32), num_res_units=1, magnitude=magnitude)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    logits = model(k, mask)
    assert logits.shape == (1, 2, 4, 2, 32, 32)
    loss = F.cross_entropy(logits.flatten(0, 1), torch.randint(0, 4, (2, 2, 32, 32)))
    loss.backward()
    assert torch.isfinite(loss) and _finite_grads(model)
    opt.step()


def test_unet_baseline_rejects_kspace() -> None:
    with pytest.raises(ValueError, match="kspace_under"):
        UNetBaseline("kspace_under")
    assert set(INPUT_KINDS) == {"image", "image_under", "kspace_under"}


def test_cs_reconstruct_beats_zero_filling() -> None:
    pytest.importorskip("sigpy")
    h = w = 32
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    phantom = np.exp(-((xx - 0.1) ** 2 + yy**2) / 0.2) + 0.5 * ((xx**2 + (yy + 0.3) ** 2) < 0.1)
    image = np.broadcast_to(phantom.astype(np.complex64), (1, 2, h, w)).copy()
    mask = np.random.default_rng(0).random((1, 2, w)) < 0.4
    mask[..., w // 2 - 3 : w // 2 + 3] = True
    k_under = fft2c(torch.from_numpy(image)).numpy() * mask[:, :, None, :]
    zero_filled = ifft2c(torch.from_numpy(k_under)).numpy()
    recon = cs_reconstruct(k_under, mask, lamda=1e-2, max_iter=30)
    err = lambda x: np.linalg.norm(x - image) / np.linalg.norm(image)
    assert recon.shape == image.shape
    assert err(recon) < 0.9 * err(zero_filled)
