"""Tokeniser, masking and the two MAEs."""

from __future__ import annotations

import pytest
import torch

from kmtr.models.mae import ImageMAE, KSpaceMAE, MAEConfig, kspace_token_keep, random_keep
from kmtr.models.tokenizer import TokenGrid, patchify, unpatchify
from kmtr.models.vit import Attention

torch.set_num_threads(1)

GRID = TokenGrid(3, 10, 16, 16, (5, 8, 8))
VIEWS = (0, 0, 1)
CFG = MAEConfig(patch=(5, 8, 8), width=32, depth=2, heads=4, dec_width=16, dec_depth=1, dec_heads=2)


def _kspace(b: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(b, 3, 10, 16, 16, generator=g), torch.randn(b, 3, 10, 16, 16, generator=g))


def test_patchify_unpatchify_exact_inverse():
    x = torch.randn(2, 3, 10, 16, 16, 2)
    tok = patchify(x, GRID)
    assert tok.shape == (2, GRID.num_tokens, GRID.patch_dim) == (2, 3 * 2 * 2 * 2, 5 * 8 * 8 * 2)
    assert torch.equal(unpatchify(tok, GRID), x)
    # token (s=1, t=1, h=0, w=1) holds exactly that block
    idx = ((1 * 2 + 1) * 2 + 0) * 2 + 1
    assert torch.equal(tok[0, idx].reshape(5, 8, 8, 2), x[0, 1, 5:10, 0:8, 8:16])


def test_grid_and_width_errors():
    with pytest.raises(ValueError, match="does not divide"):
        TokenGrid(9, 50, 128, 128, (7, 16, 16))
    with pytest.raises(ValueError, match="divisible"):
        Attention(30, 4)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.7, 0.9])
def test_random_masking_ratio(ratio):
    keep = random_keep(4, 200, ratio, "cpu")
    hidden = (~keep).sum(dim=1)
    assert torch.all(hidden == int(200 * ratio))
    assert not torch.equal(keep[0], keep[1]) or ratio == 0.0


def test_image_mae_loss_only_on_hidden_tokens():
    torch.manual_seed(0)
    model = ImageMAE(GRID, VIEWS, CFG, mask_ratio=0.7)
    out = model(ifft2c_like := _kspace())  # any complex input
    keep = out["keep"]
    assert ((~keep).float().mean(dim=1) - 0.7).abs().max() < 1.0 / GRID.num_tokens + 1e-6
    err = ((out["pred"] - out["target"]) ** 2).mean(-1)
    assert torch.allclose(out["loss"], err[~keep].mean(), rtol=1e-5)
    assert ifft2c_like.shape == (2, 3, 10, 16, 16)


def test_image_mae_magnitude_ignores_phase():
    """With ``magnitude`` the image MAE reads and predicts |x| (half the values per token), so
    its representation does not change under any phase map; its reconstruction is real."""
    torch.manual_seed(0)
    model = ImageMAE(GRID, VIEWS, CFG, magnitude=True).eval()
    x = _kspace()
    tok = model.tokens(x)
    assert tok.shape == (2, GRID.num_tokens, GRID.patch_dim // 2)
    assert torch.allclose(tok, patchify(x.abs()[..., None], GRID))
    phase = torch.exp(1j * 3.0 * torch.rand(x.shape, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(model.encode_image(x), model.encode_image(x * phase), atol=1e-5)
    complex_mae = ImageMAE(GRID, VIEWS, CFG).eval()
    assert not torch.allclose(complex_mae.tokens(x), complex_mae.tokens(x * phase))
    out = model(x)
    assert out["pred"].shape == tok.shape
    rec = model.reconstruct(out)
    assert torch.allclose(rec["target"].real, x.abs(), atol=1e-6)
    assert torch.equal(rec["output"].imag, torch.zeros_like(x.real))


def test_kspace_token_keep():
    mask = torch.zeros(1, 3, 10, 16, dtype=torch.bool)
    mask[0, 0, 0, 3] = True  # slice 0, t-block 0, w-block 0
    keep = kspace_token_keep(mask, GRID).reshape(1, 3, 2, 2, 2)
    assert keep.sum() == 2  # both h-blocks of (s0, t0, w0)
    assert keep[0, 0, 0, :, 0].all()


def test_kspace_mae_sees_only_sampled_data():
    torch.manual_seed(0)
    model = KSpaceMAE(GRID, VIEWS, CFG).eval()
    k = _kspace(2)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 3, 10, 16, generator=g) < 0.3
    mask[1, :, :, :8] = False  # sample 1: whole token columns unsampled -> dropped, padding used
    tokens, keep = model.encoder_inputs(k, mask)
    assert keep.sum(1)[0] > keep.sum(1)[1]
    lat_a, _ = model.encode(tokens, keep)
    unsampled = ~mask[..., None, :].expand_as(k)
    k2 = k.clone()
    k2[unsampled] = k2[unsampled] * 100 + 7
    lat_b, _ = model.encode(*model.encoder_inputs(k2, mask))
    assert torch.equal(lat_a, lat_b)
    # gradient of the encoder output w.r.t. the full k-space is zero off the mask
    kr = torch.view_as_real(k).clone().requires_grad_(True)
    lat, valid = model.encode(*model.encoder_inputs(torch.view_as_complex(kr), mask))
    lat.sum().backward()
    gmag = kr.grad.abs().sum(-1)
    assert float(gmag[unsampled].abs().max()) == 0.0
    assert float(gmag[~unsampled].abs().max()) > 0.0
    # each sample's encoding does not depend on its batch partner (padding is never attended)
    lat0, _ = model.encode(*model.encoder_inputs(k[:1], mask[:1]))
    assert torch.allclose(lat0[0], lat_a[0, : lat0.shape[1]], atol=1e-5)


def test_kspace_mae_forward_and_loss_terms():
    torch.manual_seed(0)
    model = KSpaceMAE(GRID, VIEWS, CFG, rel_weight=0.5, rel_eps=0.1, signed_log_c=0.05)
    k = _kspace(2)
    mask = torch.rand(2, 3, 10, 16) < 0.3
    out = model(k, mask)
    assert out["pred"].shape == (2, GRID.num_tokens, GRID.patch_dim)
    assert torch.allclose(out["loss"], out["mse"] + 0.5 * out["rel"])
    rec = model.reconstruct(out)
    assert torch.allclose(rec["target"], k, rtol=1e-4, atol=1e-4)
    assert torch.allclose(rec["input"], k * mask[..., None, :], rtol=1e-4, atol=1e-4)
    out["loss"].backward()
    assert model.decoder.mask_token.grad is not None


def test_kspace_mae_magnitude_channel():
    """With ``magnitude_c`` every token gets a third channel log1p(|k|/c) of the undersampled
    k-space; the encoder still sees only sampled data and the decoder still predicts re/im."""
    torch.manual_seed(0)
    model = KSpaceMAE(GRID, VIEWS, CFG, magnitude_c=0.1).eval()
    k = _kspace(2)
    mask = torch.rand(2, 3, 10, 16, generator=torch.Generator().manual_seed(3)) < 0.4
    tokens, keep = model.encoder_inputs(k, mask)
    assert tokens.shape == (2, GRID.num_tokens, GRID.patch_dim * 3 // 2)
    chans = tokens.reshape(2, GRID.num_tokens, -1, 3)
    under = patchify(torch.view_as_real(k * mask[..., None, :]), GRID).reshape(2, GRID.num_tokens, -1, 2)
    assert torch.allclose(chans[..., :2], under)
    assert torch.allclose(chans[..., 2], torch.log1p(torch.linalg.vector_norm(under, dim=-1) / 0.1), atol=1e-5)
    unsampled = ~mask[..., None, :].expand_as(k)
    k2 = k.clone()
    k2[unsampled] = k2[unsampled] * 100 + 7
    assert torch.equal(model.encode(tokens, keep)[0], model.encode(*model.encoder_inputs(k2, mask))[0])
    out = model(k, mask)
    assert out["pred"].shape == (2, GRID.num_tokens, GRID.patch_dim)
    assert torch.allclose(model.reconstruct(out)["input"], k * mask[..., None, :], rtol=1e-4, atol=1e-4)
