"""Stage III reconstruction decodes k-space, as the stage-I k-space decoder does (REFERENCES.md:
"reconstruction decoder like the stage-I k-space decoder"): the head predicts the fully sampled
k-space patch of every token and the image is its centred inverse FFT."""

from __future__ import annotations

import torch
from kmtr_fixtures import TINY_OVERRIDES

from kmtr.fft import fft2c, ifft2c
from kmtr.methods import build_task_model
from kmtr.models.tokenizer import complex_channels, patchify
from kmtr.pipeline import stage_config

torch.set_num_threads(1)


def test_reconstruction_image_is_the_inverse_fft_of_the_decoded_kspace_patches():
    cfg = stage_config("tiny", 3, "reconstruction", {**TINY_OVERRIDES, "init": "scratch"})
    shape, views = (3, 5, 16, 16), (0, 0, 1)
    model = build_task_model(cfg, shape, views, {"out_dim": 0, "names": []})
    net = model.net
    g = torch.Generator().manual_seed(0)
    image = torch.complex(torch.randn(2, *shape, generator=g), torch.randn(2, *shape, generator=g))
    kspace = fft2c(image)
    mask = torch.zeros(2, 3, 5, 16, dtype=torch.bool)
    mask[..., ::4] = True
    grid = net.encoder.grid
    assert net.head.head.out_features == grid.patch_dim  # one k-space patch (re, im) per token

    class Fixed(torch.nn.Module):
        def __init__(self, k: torch.Tensor) -> None:
            super().__init__()
            self.values = patchify(complex_channels(k), grid)

        def forward(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            return self.values

    # a head that returns the fully sampled k-space patches reconstructs the image exactly
    net.head = Fixed(kspace)
    out = net(kspace, mask)
    assert out.shape == image.shape and out.is_complex()
    torch.testing.assert_close(out, image, rtol=1e-4, atol=1e-4)
    # ... and one that returns the zero-filled k-space gives the zero-filled image
    net.head = Fixed(kspace * mask[..., None, :])
    torch.testing.assert_close(net(kspace, mask), ifft2c(kspace * mask[..., None, :]), rtol=1e-4, atol=1e-4)


def test_reconstruction_decoder_width_is_heads_rec_width_or_the_stage1_decoders():
    """``heads.rec_width`` sets the reconstruction decoder's width (its output layer maps it to a token's k-space
    values); 0 keeps the stage-I decoders' ``arch.dec_width``; a width the decoder's heads do not divide is refused."""
    import pytest

    from kmtr.errors import ConfigError
    from kmtr.tasks.reconstruction import Reconstruction

    shape, views = (3, 5, 16, 16), (0, 0, 1)
    for rec_width, width in (("0", 32), ("48", 48)):
        cfg = stage_config("tiny", 3, "reconstruction", {**TINY_OVERRIDES, "init": "scratch",
                                                         "heads.rec_width": rec_width})
        head = build_task_model(cfg, shape, views, {"out_dim": 0, "names": []}).net.head
        assert head.embed.out_features == width and head.head.in_features == width
        assert all(block.norm1.normalized_shape == (width,) for block in head.blocks.blocks)
    for bad in ("31", "-4"):  # arch.dec_heads = 2
        cfg = stage_config("tiny", 3, "reconstruction", {**TINY_OVERRIDES, "init": "scratch", "heads.rec_width": bad})
        with pytest.raises(ConfigError, match="heads.rec_width"):
            Reconstruction().targets(cfg, None)
        with pytest.raises(ConfigError, match="heads.rec_width"):
            build_task_model(cfg, shape, views, {"out_dim": 0, "names": []})
