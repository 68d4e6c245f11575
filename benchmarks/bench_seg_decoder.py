"""Benchmark: what the segmentation decoder's training step costs on CPU, two choices against what they replaced.

    python benchmarks/bench_seg_decoder.py [--repeats 5] [--threads 2]

On the tiny preset's shapes (batch 2 × 9 views, 5 frames, 128 × 128, width 96, 3 feature levels, its
decoder width and out_stride; 8 of the 9 views labelled, as in the demo: the 3ch view has no ground
truth), best of ``--repeats``, forward + backward with MONAI's Dice + cross-entropy:

* **Layout.** :class:`kmtr.models.segmentation.SegmentationDecoder` turns each encoder feature
  (B, L, D) into (B·S, D, nt, nh, nw) volumes by a reshape and a permute. As a view, that volume has
  channels-last strides; oneDNN's convolutions keep channels-last through the whole decoder, and
  PyTorch's CPU ``GroupNorm`` (the decoder's instance norm) is several times slower on channels-last
  input, its backward most. The decoder makes each volume contiguous (a copy of a small token map).
  Rows: ``GroupNorm`` alone on the decoder's largest activation (18, 8, 5, 64, 64), channels-last
  against contiguous; the decoder step with strided volumes (before) against contiguous ones (now).
* **Views.** The decoder decodes each view on its own, so training asks it for the labelled views
  only (``views``; :meth:`kmtr.tasks.segmentation.Segmentation.training_outputs`). Row: the step
  decoding all 9 views and indexing the labelled ones in the loss (before) against decoding the 8
  labelled ones (now).

Prints seconds and the ratio before / now (target > 1) and the largest difference of the outputs
(float rounding only: the same arithmetic in another order or memory layout).
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
    norm_times = []
    for layout in (torch.channels_last_3d, torch.contiguous_format):
        xi = x.contiguous(memory_format=layout).requires_grad_()
        norm_times.append(best_of(lambda xi=xi: torch.autograd.grad(norm(xi), xi, gx), args.repeats))

    from monai.losses import DiceCELoss

    grid = TokenGrid(s, t, h, w, (5, 16, 16))
    kwargs = {"width": 96, "n_features": 3, "dec_width": heads.seg_width, "num_classes": c,
              "temporal_kernel": heads.seg_temporal_kernel, "out_stride": heads.seg_out_stride}
    now = seg.SegmentationDecoder(grid, **kwargs)
    strided = StridedVolumes(grid, **kwargs)
    strided.load_state_dict(now.state_dict())
    feats = [torch.randn(b, grid.num_tokens, 96) for _ in range(3)]
    keep = torch.rand(b, grid.num_tokens) > 0.1
    present = torch.ones(b, s, dtype=torch.bool)
    present[:, 7] = False  # the 3ch view
    target = torch.randint(0, c, (b, s, 1, t, h, w))[present]
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    with torch.no_grad():
        full = now(feats, keep)
        layout_diff = (strided(feats, keep) - full).abs().max().item()
        views_diff = (now(feats, keep, present) - full[present]).abs().max().item()

    def step(dec: seg.SegmentationDecoder, views: bool) -> None:
        dec.zero_grad(set_to_none=True)
        out = dec(feats, keep, present) if views else dec(feats, keep)[present]
        loss_fn(out, target).backward()

    def timed(dec: seg.SegmentationDecoder, views: bool) -> float:
        step(dec, views)
        return best_of(lambda: step(dec, views), args.repeats)

    rows = [("GroupNorm (18, 8, 5, 64, 64)", *norm_times),
            ("step: strided → contiguous", timed(strided, False), timed(now, False)),
            ("step: 9 views → 8 labelled", timed(now, False), timed(now, True))]
    print(f"threads {torch.get_num_threads()}; decoder width {heads.seg_width}; largest output difference: "
          f"strided vs contiguous volumes {layout_diff:.1e}, labelled views vs all views indexed {views_diff:.1e}")
    print_ratio_table(rows, "before s", "now s")


if __name__ == "__main__":
    main()
