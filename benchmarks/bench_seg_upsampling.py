"""Benchmark: the segmentation decoder's logit upsampling, per-frame bilinear against trilinear.

    OMP_NUM_THREADS=1 python benchmarks/bench_seg_upsampling.py [--repeats 5] [--width 64]

At ``heads.seg_out_stride = 2`` (the tiny preset) :class:`kmtr.models.segmentation.SegmentationDecoder`
upsamples its (B·S, 6, T, H/2, W/2) logits to full resolution. Timed, forward + backward, best of
``--repeats``, on the tiny preset's shapes (batch 2 × 9 views, 6 classes, 5 frames, 64 × 64 → 128 × 128):

* ``trilinear``: ``F.interpolate(x, scale_factor=(1, 2, 2), mode="trilinear")`` (before);
* ``bilinear``: :func:`kmtr.models.segmentation.upsample_frames` (now; equal values and
  gradients);
* ``decoder step``: a whole training step of the tiny preset's decoder (its width, ``--width`` to
  change it; 3 feature levels, random token features) with MONAI's Dice + cross-entropy, with each
  upsampling.

Prints seconds and the ratio trilinear / bilinear (target: the step faster, the values equal).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from benchmarks._timing import best_of, print_ratio_table
from kmtr.config import preset
from kmtr.models import segmentation as seg
from kmtr.models.tokenizer import TokenGrid


def trilinear(x: torch.Tensor, factor: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=(1, factor, factor), mode="trilinear", align_corners=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=preset("tiny", 3, "segmentation").heads.seg_width,
                    help="the decoder's width (default: the tiny preset's)")
    args = ap.parse_args()
    torch.manual_seed(0)
    b, s, c, t, h, w = 2, 9, 6, 5, 128, 128
    x = torch.randn(b * s, c, t, h // 2, w // 2, requires_grad=True)
    g = torch.randn(b * s, c, t, h, w)

    def op(fn):
        return lambda: torch.autograd.grad(fn(x, 2), x, g)

    equal = torch.equal(seg.upsample_frames(x, 2), trilinear(x, 2))
    rows = [("upsampling alone", best_of(op(trilinear), args.repeats), best_of(op(seg.upsample_frames), args.repeats))]

    from monai.losses import DiceCELoss

    grid = TokenGrid(s, t, h, w, (5, 16, 16))
    dec = seg.SegmentationDecoder(grid, width=96, n_features=3, dec_width=args.width, num_classes=c, temporal_kernel=1,
                                  out_stride=2)
    feats = [torch.randn(b, grid.num_tokens, 96) for _ in range(3)]
    keep = torch.ones(b, grid.num_tokens, dtype=torch.bool)
    target = torch.randint(0, c, (b * s, 1, t, h, w))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)

    def step() -> None:
        out = dec(feats, keep).flatten(0, 1)
        loss_fn(out, target).backward()

    times = {}
    for name, fn in (("trilinear", trilinear), ("bilinear", seg.upsample_frames)):
        original = seg.upsample_frames
        seg.upsample_frames = fn  # the decoder looks the function up at call time
        try:
            step()
            times[name] = best_of(step, args.repeats)
        finally:
            seg.upsample_frames = original
    rows.append((f"decoder step (width {args.width})", times["trilinear"], times["bilinear"]))

    print(f"threads {torch.get_num_threads()}; logits {tuple(x.shape)} → ×2; values equal: {equal}")
    print_ratio_table(rows, "trilinear s", "bilinear s", name_width=26)


if __name__ == "__main__":
    main()
