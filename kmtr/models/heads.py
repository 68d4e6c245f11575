"""Light heads on encoder outputs: 2-layer MLPs (stage II projectors, stage III task heads) and
attention pooling of the encoder's tokens."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLPHead", "MultiHead", "AttentionPool"]


class MLPHead(nn.Module):
    """``Linear(in, hidden) → GELU → Linear(hidden, out)``: (B, in) → (B, out).

    The paper's projectors (``out = 128``, hidden = the encoder width) and its regression and
    classification heads (``hidden = 256``) are of this form.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MultiHead(nn.Module):
    """One independent :class:`MLPHead` per output (e.g. one logit per disease): (B, in) → (B, n)."""

    def __init__(self, in_dim: int, hidden: int, n: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(MLPHead(in_dim, hidden, 1) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(x) for h in self.heads], dim=1)


class AttentionPool(nn.Module):
    """Multi-head attention pooling of tokens with learned probe queries (SigLIP's "MAP" head,
    V-JEPA's attentive probe): (B, L, D) → (B, D).

    Each head's query picks its own weighting of the tokens, which carry their (slice, t, h, w)
    code, so the pooled vector can read position-specific features (e.g. the energy of particular
    k-space bands). A mean over tokens cannot: it mixes every position with the same weight.
    ``queries`` probes are attended with shared weights and averaged; the result goes through a
    LayerNorm and a residual MLP, as in SigLIP.
    """

    def __init__(self, width: int, heads: int, queries: int = 1, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.zeros(1, queries, width))
        nn.init.trunc_normal_(self.probe, std=0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, int(width * mlp_ratio)), nn.GELU(), nn.Linear(int(width * mlp_ratio), width))

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L, D); valid (B, L) bool (False = padding, ignored) or None → (B, D)."""
        q = self.probe.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        pad = None if valid is None else ~valid
        x, _ = self.attn(q, tokens, tokens, key_padding_mask=pad, need_weights=False)
        x = x + self.mlp(self.norm(x))
        return x.mean(dim=1)
