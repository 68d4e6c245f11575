"""Light heads on encoder class tokens: 2-layer MLPs (stage II projectors, stage III task heads)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLPHead", "MultiHead"]


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
