"""Distance-based attention bias over the token grid (ALiBi, Press et al. ICLR 2022, in 2-D + t).

An optional positional scheme for the MAE encoders and decoders (``arch.distance_bias``; which
MAEs take it: ``arch.distance_bias_models``). The paper states no positional scheme and the paper
preset keeps MAE's fixed sine-cosine code alone; the tiny preset adds the bias to the image MAE
only. Each head ``h`` of ``H`` adds ``−m_h · d(i, j)`` to the attention logit of query token ``i``
and key token ``j``, with

* ``d`` = the Euclidean distance between the tokens' (t, h, w) patch indices (in tokens), plus
  :data:`SLICE_GAP` when they lie in different slices (views);
* slopes ``m_h = 2^(−h)`` for h = 0 … H−2 and ``m_{H−1} = 0``: from a local head (the logit
  falls by 1 per token of distance) to wider ones, and one global head; the class token is at
  distance 0 from every token.

Why it exists: on the tiny preset's 112 training subjects and ~500 steps, the image MAE without it
never leaves the "predict the subject's mean patch" plateau (hidden-token MSE 0.31, the level of
the subject's mean visible token, 0.32), although simply averaging each hidden token's visible
neighbours reaches 0.16 (patch 8) and normalised convolution of the visible pixels 0.18 (patch 16):
a small ViT has to *learn* locality from data, which needs far more steps. The bias gives it
locality from the first step and leaves every head free to attend anywhere by content. On the
tiny demo it makes stage I learn (validation loss −36 % instead of −25 %). In the k-space MAE
too it costs the segmentation fine-tuned from that encoder (short-axis LV Dice 0.76–0.78 against
0.81; README, "what to expect"): locality is an image-domain prior, so the tiny preset puts it in
the image MAE only.

Cost: a (B, H, n, n) float bias per forward (n = tokens in the sequence + the class token),
fine for the tiny grid (577 tokens); at the paper's 23,040 tokens per subject it would take
gigabytes, which is one more reason it is off there.
"""

from __future__ import annotations

import torch
from torch import nn

from kmtr.models.tokenizer import TokenGrid

__all__ = ["SLICE_GAP", "DistanceBias", "head_slopes", "token_coordinates"]

#: distance (in tokens) added between tokens of different slices or views
SLICE_GAP = 2.0


def head_slopes(heads: int) -> torch.Tensor:
    """(H,) slopes ``2^(−h)``, h = 0 … H−2, then 0 (a global head; a single head is global)."""
    return torch.tensor([2.0 ** (-h) for h in range(heads - 1)] + [0.0])


def token_coordinates(grid: TokenGrid) -> torch.Tensor:
    """(L, 4) float coordinates (slice, t, h, w) of every token, in token order (:func:`patchify`)."""
    s, nt, nh, nw = grid.counts
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (s, nt, nh, nw)), indexing="ij")
    return torch.stack([a.reshape(-1) for a in axes], dim=1)


class DistanceBias(nn.Module):
    """Attention bias ``−m_h · d(i, j)`` for a class token followed by a subset of the grid's tokens."""

    def __init__(self, grid: TokenGrid, heads: int) -> None:
        super().__init__()
        self.register_buffer("coords", token_coordinates(grid), persistent=False)
        self.register_buffer("slopes", head_slopes(heads), persistent=False)
        self._full: torch.Tensor | None = None  # the whole grid's bias, computed once per device

    def forward(self, order: torch.Tensor | None = None) -> torch.Tensor:
        """Bias for the sequence [class token, tokens ``order``].

        Args:
            order: (B, Lk) token indices of the sequence after the class token, or None for the
                whole grid in token order.

        Returns:
            (B, H, 1 + Lk, 1 + Lk) float (B = 1 when ``order`` is None), 0 on the class token's
            row and column.
        """
        if order is not None:
            return self._bias(self.coords[order])
        if self._full is None or self._full.device != self.coords.device:
            self._full = self._bias(self.coords[None])
        return self._full

    def _bias(self, c: torch.Tensor) -> torch.Tensor:
        """(B, Lk, 4) token coordinates → (B, H, 1 + Lk, 1 + Lk) bias."""
        plane = torch.cdist(c[..., 1:], c[..., 1:])  # (t, h, w) distance
        other_slice = (c[..., :, None, 0] != c[..., None, :, 0]).to(plane.dtype)
        d = nn.functional.pad(plane + SLICE_GAP * other_slice, (1, 0, 1, 0))
        return -self.slopes[None, :, None, None] * d[:, None]
