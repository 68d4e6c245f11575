"""Benchmark: the memory layout of the segmentation decoder's token volumes on CPU.

    python benchmarks/bench_seg_layout.py [--repeats 5] [--threads 2]

:class:`kmtr.models.segmentation.SegmentationDecoder` turns each encoder feature (B, L, D) into
(B·S, D, nt, nh, nw) volumes by a reshape and a permute. As a view, that volume has channels-last
strides; oneDNN's convolutions then keep channels-last through the whole decoder, and PyTorch's
CPU ``GroupNorm`` (the decoder's instance norm) is several times slower on channels-last input,
its backward most. The decoder now makes each volume contiguous (one copy of a small token map).
Timed, best of ``--repeats``, on the tiny preset's shapes (batch 2 × 9 views, 5 frames, 128 × 128,
width 96, 3 feature levels, its decoder width and out_stride):

* ``GroupNorm`` forward + backward on the decoder's largest activation (18, 8, 5, 64, 64), in
  channels-last and contiguous layout;
* ``decoder step``: forward + backward of the decoder with MONAI's Dice + cross-entropy, the
  volumes as strided views (before) and contiguous (now).

Prints seconds, the ratio before / now (target > 1) and the largest difference of the logits
(float rounding only: the same arithmetic in another order).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks._timing import best_of, print_ratio_table
from kmtr.config import preset
from kmtr.models import segmentation as seg
from kmtr.models.tokenizer import TokenGrid


class StridedVolumes(seg.SegmentationDecoder):
    """The decoder as it was: token volumes passed on as permuted views (channels-last strides)."""

    def _volume(self, feat: torch.Tensor, keep: torch.Tensor, level: int, rows: torch.Tensor | None = None
                ) -> torch.Tensor:
        b, _, d = feat.shape
        s, nt, nh, nw = self.grid.counts
        x = torch.where(keep[..., None], feat, self.fill[level].to(feat.dtype)).reshape(b * s, nt, nh, nw, d)
        return (x if rows is None else x.index_select(0, rows)).permute(0, 4, 1, 2, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    heads = preset("tiny", 3, "segmentation").heads
    b, s, c, t, h, w = 2, 9, 6, 5, 128, 128

    norm = torch.nn.GroupNorm(8, 8)
    x = torch.randn(b * s, 8, t, h // 2, w // 2)
    gx = torch.randn_like(x)
    rows = []
    times = []
    for layout in (torch.channels_last_3d, torch.contiguous_format):
        xi = x.contiguous(memory_format=layout).requires_grad_()
        times.append(best_of(lambda xi=xi: torch.autograd.grad(norm(xi), xi, gx), args.repeats))
    rows.append(("GroupNorm (18, 8, 5, 64, 64)", *times))

    from monai.losses import DiceCELoss

    grid = TokenGrid(s, t, h, w, (5, 16, 16))
    kwargs = {"width": 96, "n_features": 3, "dec_width": heads.seg_width, "num_classes": c,
              "temporal_kernel": heads.seg_temporal_kernel, "out_stride": heads.seg_out_stride}
    now = seg.SegmentationDecoder(grid, **kwargs)
    before = StridedVolumes(grid, **kwargs)
    before.load_state_dict(now.state_dict())
    feats = [torch.randn(b, grid.num_tokens, 96) for _ in range(3)]
    keep = torch.rand(b, grid.num_tokens) > 0.1
    target = torch.randint(0, c, (b * s, 1, t, h, w))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    with torch.no_grad():
        diff = (before(feats, keep) - now(feats, keep)).abs().max().item()

    def step(dec: seg.SegmentationDecoder) -> None:
        dec.zero_grad(set_to_none=True)
        loss_fn(dec(feats, keep).flatten(0, 1), target).backward()

    times = []
    for dec in (before, now):
        step(dec)
        times.append(best_of(lambda dec=dec: step(dec), args.repeats))
    rows.append((f"decoder step (width {heads.seg_width})", *times))

    print(f"threads {torch.get_num_threads()}; largest logit difference, strided vs contiguous volumes: {diff:.2e}")
    print_ratio_table(rows, "before s", "now s")


if __name__ == "__main__":
    main()
