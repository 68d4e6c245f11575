"""3D-patch tokeniser over (T, H, W), per slice: 2 channels (real, imaginary), or 2·C for C coils.

Token order is row-major over (slice, t-patch, h-patch, w-patch): ``L = S · nt · nh · nw``
tokens of ``P = pt · ph · pw · 2`` values each (values ordered (pt, ph, pw, re/im)). Coil k-space
(B, C, S, T, H, W) gives ``2·C`` channels ordered (coil, re/im) (:func:`complex_channels`), so
``P = pt · ph · pw · 2C``; C = 1 is exactly the single-coil layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "sincos_1d", "TokenGrid", "patchify", "unpatchify",
    "PatchEmbed", "PositionalCode", "complex_channels", "channels_complex", "undersample",
]


def complex_channels(k: torch.Tensor) -> torch.Tensor:
    """Complex k-space → real channels last: (B, S, T, H, W) → (B, S, T, H, W, 2) (re, im);
    coil k-space (B, C, S, T, H, W) → (B, S, T, H, W, 2C) ordered (coil, re/im)."""
    if k.ndim == 5:
        return torch.view_as_real(k)
    return torch.view_as_real(k.movedim(1, -1)).flatten(-2)


def channels_complex(x: torch.Tensor, coils: int | None) -> torch.Tensor:
    """Inverse of :func:`complex_channels`: (…, 2) → (B, S, T, H, W) for ``coils`` None (single-coil
    input), (…, 2C) → (B, C, S, T, H, W) for ``coils`` = C."""
    if coils is None:
        return torch.view_as_complex(x.contiguous())
    return torch.view_as_complex(x.unflatten(-1, (coils, 2)).contiguous()).movedim(-1, 1)


def undersample(k: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``k · mask``: mask (B, S, T, W) repeated along H (and the coil axis of (B, C, S, T, H, W) input)."""
    m = mask[..., None, :] if k.ndim == 5 else mask[:, None, ..., None, :]
    return k * m.to(k.dtype)


@dataclass(frozen=True)
class TokenGrid:
    """Geometry of the token grid for inputs (S, T, H, W) and patch (pt, ph, pw)."""

    s: int
    t: int
    h: int
    w: int
    patch: tuple[int, int, int]

    def __post_init__(self) -> None:
        pt, ph, pw = self.patch
        sizes = (("T", self.t, pt), ("H", self.h, ph), ("W", self.w, pw))
        bad = [f"{name}={size} % {p}" for name, size, p in sizes if size % p]
        if bad:
            raise ValueError(
                f"patch {self.patch} does not divide the data shape (T, H, W) = ({self.t}, {self.h}, {self.w}): "
                f"{', '.join(bad)} != 0"
            )

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """(S, nt, nh, nw)."""
        pt, ph, pw = self.patch
        return self.s, self.t // pt, self.h // ph, self.w // pw

    @property
    def num_tokens(self) -> int:
        s, nt, nh, nw = self.counts
        return s * nt * nh * nw

    @property
    def patch_dim(self) -> int:
        pt, ph, pw = self.patch
        return pt * ph * pw * 2


def patchify(x: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """(B, S, T, H, W, C) → tokens (B, L, pt·ph·pw·C)."""
    b, c = x.shape[0], x.shape[-1]
    s, nt, nh, nw = grid.counts
    pt, ph, pw = grid.patch
    x = x.reshape(b, s, nt, pt, nh, ph, nw, pw, c)
    x = x.permute(0, 1, 2, 4, 6, 3, 5, 7, 8)
    return x.reshape(b, s * nt * nh * nw, pt * ph * pw * c)


def unpatchify(tokens: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """Exact inverse of :func:`patchify`: (B, L, pt·ph·pw·C) → (B, S, T, H, W, C)."""
    b = tokens.shape[0]
    s, nt, nh, nw = grid.counts
    pt, ph, pw = grid.patch
    c = tokens.shape[-1] // (pt * ph * pw)
    x = tokens.reshape(b, s, nt, nh, nw, pt, ph, pw, c)
    x = x.permute(0, 1, 2, 5, 3, 6, 4, 7, 8)
    return x.reshape(b, s, nt * pt, nh * ph, nw * pw, c)


class PatchEmbed(nn.Module):
    """Linear embedding of patch tokens: (B, L, P) → (B, L, D)."""

    def __init__(self, patch_dim: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(patch_dim, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)


def sincos_1d(n: int, dim: int) -> torch.Tensor:
    """(n, dim) sine-cosine code of positions 0..n-1 (``dim`` even; MAE / Transformer style)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / max(dim // 2, 1))
    angles = torch.arange(n, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


class PositionalCode(nn.Module):
    """Code over (slice, t, h, w) plus a view code (0 = SAX, 1 = LAX).

    The width is split into four equal even chunks holding fixed sine-cosine codes of the slice,
    t-patch, h-patch and w-patch index (any remainder of ``width`` is zero), as MAE's fixed 2D
    code; a learned view embedding is added to every token of a slice:
    ``code[(s, t, h, w)] = [sc(s) | sc(t) | sc(h) | sc(w) | 0] + E_view[view(s)]``.
    With ``learned=True`` the four axis codes are learned, factorised embeddings instead.
    """

    def __init__(self, grid: TokenGrid, width: int, view_ids: tuple[int, ...], learned: bool = False) -> None:
        super().__init__()
        s, nt, nh, nw = grid.counts
        if len(view_ids) != s:
            raise ValueError(f"view_ids has {len(view_ids)} entries for S = {s} slices")
        self.counts = (s, nt, nh, nw)
        self.view = nn.Parameter(torch.zeros(2, width))
        nn.init.trunc_normal_(self.view, std=0.02)
        self.register_buffer("view_ids", torch.tensor(view_ids, dtype=torch.long), persistent=False)
        self.learned = learned
        if learned:
            self.axes = nn.ParameterList(nn.Parameter(torch.zeros(n, width)) for n in (s, nt, nh, nw))
            for p in self.axes:
                nn.init.trunc_normal_(p, std=0.02)
        else:
            d = (width // 8) * 2
            codes = []
            for axis, n in enumerate((s, nt, nh, nw)):
                c = torch.zeros(n, width)
                c[:, axis * d : (axis + 1) * d] = sincos_1d(n, d)
                codes.append(c)
            for name, c in zip(("code_s", "code_t", "code_h", "code_w"), codes):
                self.register_buffer(name, c, persistent=False)

    def forward(self) -> torch.Tensor:
        """Returns the (L, D) code in token order."""
        s, nt, nh, nw = self.counts
        cs, ct, ch, cw = self.axes if self.learned else (self.code_s, self.code_t, self.code_h, self.code_w)
        per_slice = cs + self.view[self.view_ids]
        code = (
            per_slice[:, None, None, None] + ct[None, :, None, None] + ch[None, None, :, None] + cw[None, None, None, :]
        )
        return code.reshape(s * nt * nh * nw, -1)
