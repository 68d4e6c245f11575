"""UNETR-style segmentation decoder from ViT token features (after UNETR, Hatamizadeh et al. 2022).

The encoder's features live on the token grid ``(S, nt, nh, nw)``; each slice is decoded on its
own as a 3-D volume ``(T, H, W)``::

    deepest feature ─ conv block ─ up ─ cat ─ conv block ─ up ─ cat ─ ... ─ conv block ─ 1×1×1 conv
                                         │                       │
                      shallower feature ─ PrUp      shallower feature ─ PrUp

* ``up`` is a transposed convolution with kernel = stride = ``(pt, 2, 2)`` at the first stage (T
  reaches full resolution there) and ``(1, 2, 2)`` afterwards, until H and W are at full
  resolution (``log2(max(ph, pw))`` stages; a dimension already at full resolution gets stride 1).
* ``PrUp`` (UNETR's progressive up-sampling) brings a shallower feature to the stage's
  resolution by the same chain of transposed convolutions (linear, no norm between them).
* Skips are assigned deep → shallow from the coarsest stage on: with encoder features
  ``f_1 … f_n`` (shallow → deep), the bottleneck is ``f_n``, stage 1 takes ``f_{n-1}``, stage 2
  ``f_{n-2}`` and so on; extra stages reuse ``f_1``; if there are more shallow features than
  stages only the deepest are used.
* Conv blocks (:class:`ConvBlock`) are two 3×3×3 convs with instance norm and LeakyReLU, as
  MONAI's ``UnetrBasicBlock``. Channel widths halve per stage from ``dec_width`` (at least 8).
* Tokens the encoder did not see (``keep`` False, e.g. k-space blocks with no sampled line) are
  replaced by a learned embedding, one per feature level, before decoding.
* ``out_stride`` s > 1 (an option for CPUs; 1 in the paper preset) leaves out the last
  ``log2(s)`` stages, which work at the highest resolutions and cost most (at s = 2 the last stage
  alone is ~3/4 of the decoder's convolutions), and upsamples the logits from (H/s, W/s) to (H, W)
  bilinearly, frame by frame (:func:`upsample_frames`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kmtr.models.tokenizer import TokenGrid

__all__ = ["ConvBlock", "SegmentationDecoder", "upsample_frames", "upsampling_strides"]

_MIN_CHANNELS = 8


def _log2_exact(n: int) -> int | None:
    """``log2(n)`` for a power of two ``n ≥ 1``, else None."""
    return n.bit_length() - 1 if n >= 1 and n & (n - 1) == 0 else None


def upsampling_strides(patch: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Per-stage (t, h, w) strides taking a token map to full resolution.

    ``ph`` and ``pw`` must be powers of two (not both 1); the first stage also upsamples T by
    ``pt``. E.g. ``(5, 8, 8) → [(5, 2, 2), (1, 2, 2), (1, 2, 2)]``.
    """
    pt, ph, pw = patch
    lh, lw = _log2_exact(ph), _log2_exact(pw)
    if lh is None or lw is None:
        raise ValueError(
            f"SegmentationDecoder needs the patch's H and W sizes to be powers of two (upsampling is by ×2 "
            f"per stage), got patch {patch} (ph={ph}, pw={pw})"
        )
    n = max(lh, lw)
    if n == 0:
        raise ValueError(f"SegmentationDecoder needs ph or pw ≥ 2 (at least one upsampling stage), got patch {patch}")
    return [(pt if i == 0 else 1, 2 if i < lh else 1, 2 if i < lw else 1) for i in range(n)]


def _transposed(c_in: int, c_out: int, stride: tuple[int, int, int]) -> nn.ConvTranspose3d:
    return nn.ConvTranspose3d(c_in, c_out, kernel_size=stride, stride=stride)


class ConvBlock(nn.Sequential):
    """(kt×3×3 conv → InstanceNorm → LeakyReLU(0.01)) × 2: (N, c_in, T, H, W) → (N, c_out, T, H, W).

    ``kt = 3`` (default) mixes neighbouring frames; ``kt = 1`` convolves each frame in 2-D (about
    3× cheaper; the tiny CPU preset uses it).

    The layout of MONAI's ``UnetrBasicBlock`` / nnU-Net's basic block; the instance norm is
    ``GroupNorm(c, c)`` (per-channel, per-sample statistics with an affine map), which is faster than
    ``InstanceNorm3d`` on CPU. The convolutions have no bias (the norm removes it).
    """

    def __init__(self, c_in: int, c_out: int, kt: int = 3) -> None:
        if kt < 1 or kt % 2 == 0:
            raise ValueError(f"temporal kernel must be odd and ≥ 1, got {kt}")
        layers: list[nn.Module] = []
        for c in (c_in, c_out):
            layers += [
                nn.Conv3d(c, c_out, kernel_size=(kt, 3, 3), padding=(kt // 2, 1, 1), bias=False),
                nn.GroupNorm(c_out, c_out),
                nn.LeakyReLU(0.01, inplace=True),
            ]
        super().__init__(*layers)


class SegmentationDecoder(nn.Module):
    """Token features → per-slice segmentation logits (see module docstring).

    Args:
        grid: token grid of the encoder's input (S, T, H, W), patch (pt, ph, pw).
        width: encoder width D.
        n_features: number of feature maps passed to :meth:`forward` (shallow → deep).
        dec_width: channels of the first (coarsest) decoder stage; halved per stage, ≥ 8.
        num_classes: output channels (logits) per voxel.
        temporal_kernel: temporal size of the conv blocks' kernels (3, or 1 for per-frame 2-D convs).
        out_stride: decode to (H / out_stride, W / out_stride) and upsample the logits bilinearly
            (a power of two; 1 = every stage at full resolution).
    """

    def __init__(
        self, grid: TokenGrid, width: int, n_features: int, dec_width: int = 576, num_classes: int = 6,
        temporal_kernel: int = 3, out_stride: int = 1,
    ) -> None:
        super().__init__()
        if n_features < 1:
            raise ValueError(f"n_features must be ≥ 1, got {n_features}")
        self.grid, self.width, self.n_features, self.num_classes = grid, width, n_features, num_classes
        strides = upsampling_strides(grid.patch)
        dropped = _log2_exact(out_stride)
        if dropped is None or dropped >= len(strides) or any(s[1:] != (2, 2) for s in strides[len(strides) - dropped:]):
            raise ValueError(f"out_stride must be a power of two whose stages upsample H and W by 2 and leave at least "
                             f"one stage, got {out_stride} for patch {grid.patch} ({len(strides)} stages)")
        self.out_stride = out_stride
        strides = strides[: len(strides) - dropped]
        channels = [max(dec_width // 2**k, _MIN_CHANNELS) for k in range(len(strides) + 1)]
        # Feature level feeding each stage's skip (deep → shallow, clamped at the shallowest).
        n_shallow = max(n_features - 1, 1)
        self.skip_levels = [max(n_shallow - 1 - j, 0) for j in range(len(strides))]
        self.used_levels = sorted({n_features - 1, *self.skip_levels})

        self.fill = nn.Parameter(torch.zeros(n_features, width))
        nn.init.trunc_normal_(self.fill, std=0.02)
        self.bottleneck = ConvBlock(width, channels[0], temporal_kernel)
        self.ups = nn.ModuleList(_transposed(channels[j], channels[j + 1], s) for j, s in enumerate(strides))
        self.skips = nn.ModuleList(
            nn.Sequential(
                _transposed(width, channels[j + 1], strides[0]),
                *(_transposed(channels[j + 1], channels[j + 1], s) for s in strides[1 : j + 1]),
            )
            for j in range(len(strides))
        )
        self.blocks = nn.ModuleList(
            ConvBlock(2 * channels[j + 1], channels[j + 1], temporal_kernel) for j in range(len(strides))
        )
        self.head = nn.Conv3d(channels[-1], num_classes, kernel_size=1)

    def _volume(self, feat: torch.Tensor, keep: torch.Tensor, level: int, rows: torch.Tensor | None = None
                ) -> torch.Tensor:
        """(B, L, D) → (B·S, D, nt, nh, nw) with unseen tokens set to the level's fill embedding (only the
        slices ``rows`` of B·S when given), contiguous: as a permuted view its channels-last strides would
        carry through oneDNN's convolutions into the instance norms, several times slower on CPU in that
        layout (``benchmarks/bench_seg_decoder.py``)."""
        b, _, d = feat.shape
        s, nt, nh, nw = self.grid.counts
        x = torch.where(keep[..., None], feat, self.fill[level].to(feat.dtype)).reshape(b * s, nt, nh, nw, d)
        if rows is not None:
            x = x.index_select(0, rows)
        return x.permute(0, 4, 1, 2, 3).contiguous()

    def forward(self, feats: list[torch.Tensor], keep: torch.Tensor, views: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Decode.

        Args:
            feats: ``n_features`` tensors (B, L, D) over the full token grid in token order,
                shallow → deep (the last is the encoder's final output); values at unseen tokens
                are ignored.
            keep: (B, L) bool, True = token seen by the encoder.
            views: optional (B, S) bool: decode only these slices. Each slice is decoded on its own, so
                the result is the full output indexed by ``views`` (up to float rounding), for the
                decoder's work on the selected slices only (training decodes the labelled views).

        Returns:
            logits (B, S, num_classes, T, H, W); with ``views``, (n, num_classes, T, H, W) for the n
            selected slices in (b, s) order.
        """
        if len(feats) != self.n_features:
            raise ValueError(f"expected {self.n_features} feature maps, got {len(feats)}")
        b = keep.shape[0]
        rows = None if views is None else views.reshape(-1).nonzero().squeeze(1)
        vols = {lvl: self._volume(feats[lvl], keep, lvl, rows) for lvl in self.used_levels}
        x = self.bottleneck(vols[self.n_features - 1])
        for up, skip, block, lvl in zip(self.ups, self.skips, self.blocks, self.skip_levels):
            x = block(torch.cat([up(x), skip(vols[lvl])], dim=1))
        out = self.head(x)  # (B·S, C, T, H / out_stride, W / out_stride)
        if self.out_stride > 1:
            out = upsample_frames(out, self.out_stride)
        return out if views is not None else out.reshape(b, self.grid.s, *out.shape[1:])


def upsample_frames(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear ×``factor`` upsampling of every frame: (N, C, T, h, w) → (N, C, T, h·factor, w·factor).

    The values and gradients of ``F.interpolate(x, scale_factor=(1, factor, factor),
    mode="trilinear", align_corners=False)`` (at a temporal scale of 1 the trilinear weights along T
    are 1 and 0; equal up to float rounding, ~1e-7, and bit for bit on the decoder's 64 × 64 frames),
    computed as 2-D bilinear upsampling of the (N, C·T, h, w) view: ~1.8× faster on CPU (forward +
    backward; ``benchmarks/bench_seg_upsampling.py``).
    """
    n, c, t, h, w = x.shape
    up = F.interpolate(x.reshape(n, c * t, h, w), scale_factor=factor, mode="bilinear", align_corners=False)
    return up.reshape(n, c, t, h * factor, w * factor)
