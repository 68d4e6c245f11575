"""A pre-norm ViT encoder on ``torch.nn.functional.scaled_dot_product_attention``."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["Attention", "Block", "Transformer"]


class Attention(nn.Module):
    """Multi-head self-attention; ``width`` must be divisible by ``heads``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(
        self, x: torch.Tensor, key_valid: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, L, D); key_valid (B, L) bool (False = padding, never attended to) or None; bias
        (B or 1, heads, L, L) added to the attention logits, or None."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = key_valid[:, None, None, :] if key_valid is not None else None
        if bias is not None:
            mask = bias.to(q.dtype) if mask is None else bias.to(q.dtype).masked_fill(~mask, float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(
        self, x: torch.Tensor, key_valid: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_valid, bias)
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """``depth`` blocks and a final LayerNorm; optional gradient checkpointing per block."""

    def __init__(
        self, width: int, depth: int, heads: int, mlp_ratio: float = 4.0, grad_checkpoint: bool = False
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.grad_checkpoint = grad_checkpoint

    def forward(
        self, x: torch.Tensor, key_valid: torch.Tensor | None = None, return_layers: Sequence[int] = (),
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, L, D) → (B, L, D) after the final norm; ``bias`` (B or 1, heads, L, L) is added to
        every block's attention logits (:mod:`kmtr.models.distance_bias`).

        With ``return_layers`` (1-based block indices), also returns those blocks' raw outputs
        (B, L, D), in the order asked: ``(out, [x_l for l in return_layers])``.
        """
        wanted = {int(i) for i in return_layers}
        bad = [i for i in wanted if not 1 <= i <= len(self.blocks)]
        if bad:
            raise ValueError(f"return_layers {sorted(bad)} outside 1..{len(self.blocks)}")
        collected: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks, start=1):
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, key_valid, bias, use_reentrant=False)
            else:
                x = blk(x, key_valid, bias)
            if i in wanted:
                collected[i] = x
        out = self.norm(x)
        if return_layers:
            return out, [collected[int(i)] for i in return_layers]
        return out
