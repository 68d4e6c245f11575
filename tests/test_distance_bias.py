"""The distance attention bias (``arch.distance_bias``, kmtr.models.distance_bias): its values, that
it follows the tokens through the encoder's packing and padding, and that it is what lets a small
MAE learn to interpolate hidden tokens in a short run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kmtr.config import MAEConfig, preset
from kmtr.models.distance_bias import SLICE_GAP, DistanceBias, head_slopes
from kmtr.models.mae import ImageMAE, MaskedAutoencoder
from kmtr.models.tokenizer import TokenGrid

torch.set_num_threads(1)


def test_bias_is_minus_slope_times_token_distance_with_a_slice_gap():
    grid = TokenGrid(2, 10, 32, 32, patch=(5, 8, 8))  # 2 slices × 2 t × 4 h × 4 w tokens
    bias = DistanceBias(grid, heads=3)()
    assert bias.shape == (1, 3, 1 + 64, 1 + 64)
    slopes = head_slopes(3)
    assert torch.equal(slopes, torch.tensor([1.0, 0.5, 0.0]))  # the last head global
    assert torch.all(bias[:, :, 0, :] == 0) and torch.all(bias[:, :, :, 0] == 0)  # class token
    tok = lambda s, t, h, w: 1 + ((s * 2 + t) * 4 + h) * 4 + w  # noqa: E731 (sequence position)
    for h in range(3):
        b = bias[0, h]
        assert b[tok(0, 0, 0, 0), tok(0, 0, 0, 0)] == 0
        assert b[tok(0, 0, 0, 0), tok(0, 0, 0, 1)] == pytest.approx(-slopes[h])  # next w
        assert b[tok(0, 0, 1, 1), tok(0, 1, 1, 1)] == pytest.approx(-slopes[h])  # next t
        assert b[tok(0, 0, 0, 0), tok(0, 0, 3, 3)] == pytest.approx(-slopes[h] * 18 ** 0.5)
        assert b[tok(0, 0, 2, 1), tok(1, 0, 2, 1)] == pytest.approx(-slopes[h] * SLICE_GAP)  # other slice
        assert b[tok(1, 1, 0, 2), tok(0, 1, 3, 2)] == pytest.approx(-slopes[h] * (3 + SLICE_GAP))
    assert torch.equal(bias, bias.transpose(-1, -2))


def test_packed_bias_is_the_full_bias_restricted_to_the_kept_tokens():
    grid = TokenGrid(3, 5, 64, 64, patch=(5, 16, 16))
    db = DistanceBias(grid, heads=4)
    full = db()[0]
    order = torch.stack([torch.randperm(grid.num_tokens)[:7].sort().values for _ in range(2)])
    packed = db(order)
    for i in range(2):
        idx = torch.cat([torch.zeros(1, dtype=torch.long), order[i] + 1])
        assert torch.equal(packed[i], full[:, idx][:, :, idx])


def _mae(grid: TokenGrid, on: bool, **sizes: int) -> MaskedAutoencoder:
    cfg = MAEConfig(patch=grid.patch, width=32, depth=2, heads=4, dec_width=32, dec_depth=1, dec_heads=4,
                    distance_bias=on, **sizes)
    torch.manual_seed(0)
    return MaskedAutoencoder(grid, (0,) * grid.s, cfg, grid.patch_dim, grid.patch_dim).eval()


def _padded_batch() -> tuple[MaskedAutoencoder, torch.Tensor, torch.Tensor]:
    """A biased MAE and two samples keeping 6 and 3 of 32 tokens (so the batch is padded)."""
    grid = TokenGrid(2, 5, 32, 32, patch=(5, 8, 8))
    model = _mae(grid, True)  # seeds torch: the tokens below are the same every run
    tokens = torch.randn(2, grid.num_tokens, grid.patch_dim)
    keep = torch.zeros(2, grid.num_tokens, dtype=torch.bool)
    keep[0, [1, 4, 5, 9, 20, 31]] = True
    keep[1, [0, 2, 17]] = True
    return model, tokens, keep


def test_padded_batches_encode_like_each_sample_alone():
    """Samples keeping different numbers of tokens (the k-space MAE's case) are padded; the padding
    must stay invisible with the bias on (the bias and the padding mask combine)."""
    model, tokens, keep = _padded_batch()
    with torch.no_grad():
        both, valid = model.encode(tokens, keep)
        assert valid is not None and not bool(valid.all())
        for i in range(2):
            alone, _ = model.encode(tokens[i : i + 1], keep[i : i + 1])
            n = alone.shape[1]
            torch.testing.assert_close(both[i, :n], alone[0], rtol=1e-5, atol=1e-5)
            cls, full, _ = model.encode_features(tokens[i : i + 1], keep[i : i + 1])
            torch.testing.assert_close(cls[0], alone[0, 0], rtol=1e-5, atol=1e-5)


def test_encode_stages_lays_every_stage_on_the_grid_like_encode_features():
    """``encode_stages`` (the retrieval probe's view of the encoder) on a padded batch: one (cls, grid)
    pair per stage (embedding, each block, final norm); the last equals ``encode_features``, the
    blocks equal its ``layers`` output, tokens a sample did not keep (or padding) are zeros, and the
    embedded class token is the learned one for every sample."""
    model, tokens, keep = _padded_batch()
    with torch.no_grad():
        stages = model.encode_stages(tokens, keep)
        cls, full, feats = model.encode_features(tokens, keep, layers=(1, 2))
    assert len(stages) == 1 + 2 + 1
    torch.testing.assert_close(stages[-1][0], cls)
    torch.testing.assert_close(stages[-1][1], full)
    for (_, got), want in zip(stages[1:3], feats):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(stages[0][0], model.cls_token[0].expand(2, -1))
    for _, on_grid in stages:
        assert bool((on_grid[~keep] == 0).all()) and bool((on_grid[keep].abs().sum(-1) > 0).all())


def test_the_bias_changes_the_encoder_only_when_on():
    grid = TokenGrid(1, 5, 32, 32, patch=(5, 8, 8))
    tokens = torch.randn(1, grid.num_tokens, grid.patch_dim)
    keep = torch.ones(1, grid.num_tokens, dtype=torch.bool)
    off, on = _mae(grid, False), _mae(grid, True)
    on.load_state_dict(off.state_dict())  # no parameters of its own: the same weights load
    with torch.no_grad():
        assert not torch.allclose(off.encode(tokens, keep)[0], on.encode(tokens, keep)[0])


def _smooth_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, 5, 64, 64) complex: smooth random fields (white noise low-passed in k-space), a
    stand-in for images whose hidden patches are predictable from their neighbours."""
    k = torch.randn(n, 1, 5, 64, 64, dtype=torch.complex64, generator=generator)
    f = torch.fft.fftfreq(64)
    k = k * torch.exp(-(f[:, None] ** 2 + f[None, :] ** 2) / (2 * 0.015**2))
    x = torch.fft.ifft2(k)
    return x / x.abs().pow(2).mean().sqrt()


@pytest.mark.slow
def test_with_the_bias_a_small_image_mae_learns_to_interpolate_in_a_short_run():
    """What the option is for: in a short run the MAE without it stays near the level of predicting
    the mean token; with it, it learns from the visible neighbours (measured: hidden-token MSE 0.428
    without, 0.268 with)."""
    grid = TokenGrid(1, 5, 64, 64, patch=(5, 8, 8))  # 64 tokens
    g = torch.Generator().manual_seed(0)
    train, val = _smooth_images(64, g), _smooth_images(16, g)
    losses = {}
    for on in (False, True):
        sizes = {f.name: getattr(preset("tiny").arch, f.name) for f in dataclasses.fields(MAEConfig)}
        cfg = MAEConfig(**{**sizes, "patch": grid.patch, "distance_bias": on})
        torch.manual_seed(0)
        model = ImageMAE(grid, (0,), cfg, 0.7)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
        for step in range(150):
            torch.manual_seed(step)
            out = model(train[torch.randint(64, (4,), generator=g)])
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
        torch.manual_seed(99)
        with torch.no_grad():
            losses[on] = float(model.eval()(val)["loss"])
    assert losses[True] < 0.7 * losses[False], losses


def test_a_batch_where_one_sample_keeps_every_token_and_another_does_not():
    """The whole-grid bias is reused only when every sample keeps every token; here sample 0 keeps
    all and sample 1 a few (its sequence is padded with its hidden tokens): each must still encode
    as it does alone."""
    grid = TokenGrid(1, 5, 32, 32, patch=(5, 8, 8))
    model = _mae(grid, True)
    tokens = torch.randn(2, grid.num_tokens, grid.patch_dim)
    keep = torch.ones(2, grid.num_tokens, dtype=torch.bool)
    keep[1, 3:] = False
    keep[1, 9] = True
    with torch.no_grad():
        both, _ = model.encode(tokens, keep)
        for i in range(2):
            alone, _ = model.encode(tokens[i : i + 1], keep[i : i + 1])
            torch.testing.assert_close(both[i, : alone.shape[1]], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("models, image_on, kspace_on", [("both", True, True), ("image", True, False), ("kspace", False, True)])
def test_distance_bias_models_selects_which_mae_takes_the_bias(models, image_on, kspace_on):
    from kmtr.train.maes import build_stage1_model, validate_config

    cfg = preset("tiny", 1)
    cfg.arch.distance_bias, cfg.arch.distance_bias_models = True, models
    m = build_stage1_model(cfg, validate_config(cfg, (9, 5, 128, 128)), tuple(range(9)))
    for mae, on in ((m.image, image_on), (m.kspace, kspace_on)):
        assert (mae.distance_bias is not None) == on
        assert (mae.decoder.distance_bias is not None) == on
    cfg.arch.distance_bias = False  # the option off: no MAE takes it, whatever the selection
    m = build_stage1_model(cfg, validate_config(cfg, (9, 5, 128, 128)), tuple(range(9)))
    assert m.image.distance_bias is None and m.kspace.distance_bias is None


def test_an_unknown_distance_bias_selection_is_refused():
    from kmtr.errors import ConfigError
    from kmtr.train.maes import validate_config

    cfg = preset("tiny", 1)
    cfg.arch.distance_bias_models = "images"
    with pytest.raises(ConfigError, match="distance_bias_models"):
        validate_config(cfg, (9, 5, 128, 128))
