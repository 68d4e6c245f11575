"""Registry of Cartesian undersampling patterns.

A pattern is a function ``fn(n_frames, n_lines, acceleration, seed, **options) -> (T, W) bool``
(True = phase-encoding line sampled in that frame). Register new patterns with
:func:`register_pattern`; :func:`make_mask` builds the (S, T, W) mask of one subject with a
per-slice seed derived from the subject seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from kspace_sim.seeding import derive_seed

__all__ = [
    "MaskPattern",
    "register_pattern",
    "available_patterns",
    "get_pattern",
    "make_mask",
    "mask_bank",
    "bank_member",
    "mask_name",
    "parse_mask_name",
    "achieved_acceleration",
    "acs_lines_mask",
    "acs_line_mask",
    "acs_block_start",
    "validate_mask_request",
]


class MaskPattern(Protocol):
    def __call__(
        self, n_frames: int, n_lines: int, acceleration: float, seed: int, **options: Any
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class _Entry:
    fn: MaskPattern
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_pattern(name: str, description: str = "") -> Callable[[MaskPattern], MaskPattern]:
    """Decorator registering a pattern function under ``name``."""

    def deco(fn: MaskPattern) -> MaskPattern:
        _REGISTRY[name] = _Entry(fn, description or (fn.__doc__ or "").strip().splitlines()[0])
        return fn

    return deco


def available_patterns() -> dict[str, str]:
    """``{name: one-line description}`` of every registered pattern."""
    return {k: v.description for k, v in sorted(_REGISTRY.items())}


def get_pattern(name: str) -> MaskPattern:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown mask pattern {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name].fn


def validate_mask_request(pattern: str, acceleration: float, n_frames: int, n_lines: int, **options: Any) -> None:
    """Raise ``ValueError`` before any work for an unknown pattern, an impossible R or options the
    pattern would reject.

    Besides the checks every pattern shares (W >= 2, T >= 1, 1 <= R <= W), a pattern function may
    carry a ``check_request(n_frames, n_lines, acceleration, **options)`` attribute raising
    ``ValueError`` for what it alone cannot do (VISTA and Poisson need R > 1 and T >= 2, the ACS
    patterns need the ACS block to fit in ``round(W / R)`` lines): cheap, no mask is computed.
    """
    fn = get_pattern(pattern)
    if n_lines < 2 or n_frames < 1:
        raise ValueError(f"mask needs W >= 2 lines and T >= 1 frames, got W={n_lines}, T={n_frames}")
    if not np.isfinite(acceleration) or acceleration < 1:
        raise ValueError(f"acceleration R must be >= 1, got {acceleration}")
    if acceleration > n_lines:
        raise ValueError(f"acceleration R={acceleration} exceeds the number of lines W={n_lines}")
    check = getattr(fn, "check_request", None)
    if check is not None:
        try:
            check(n_frames, n_lines, acceleration, **options)
        except TypeError as exc:  # an option the pattern does not take
            raise ValueError(f"mask pattern {pattern!r}: {exc}") from None


def acs_block_start(n_lines: int, acs_lines: int) -> int:
    """First line of the block of ``acs_lines`` central lines around k = 0 (index W // 2)."""
    return n_lines // 2 - acs_lines // 2


def acs_line_mask(n_lines: int, acs_lines: int) -> np.ndarray:
    """``(W,)`` bool: the ``acs_lines`` central lines around k = 0, as every pattern places them."""
    m = np.zeros(n_lines, dtype=bool)
    if acs_lines > 0:
        start = acs_block_start(n_lines, acs_lines)
        m[start : start + acs_lines] = True
    return m


def acs_lines_mask(pattern: str, n_lines: int, acceleration: float, **options: Any) -> np.ndarray:
    """``(W,)`` bool: the fully sampled central (ACS) lines a pattern adds in every frame.

    Uses ``options['acs_lines']`` when given, else the pattern function's ``default_acs_lines``
    attribute (``fn(W, R) -> int``), else none.
    """
    fn = get_pattern(pattern)
    n_acs = options.get("acs_lines")
    if n_acs is None:
        default = getattr(fn, "default_acs_lines", None)
        n_acs = default(n_lines, acceleration) if default is not None else 0
    return acs_line_mask(n_lines, int(n_acs))


def mask_name(pattern: str, acceleration: float) -> str:
    """Store key of a mask, e.g. ``vista_r4`` or ``gaussian_r2.5``."""
    r = float(acceleration)
    return f"{pattern}_r{int(r) if r.is_integer() else r:g}"


def parse_mask_name(name: str) -> tuple[str, float]:
    """Inverse of :func:`mask_name`: ``'vista_r4' -> ('vista', 4.0)``."""
    pattern, _, r = name.rpartition("_r")
    if not pattern or not r:
        raise ValueError(f"not a mask name: {name!r} (expected PATTERN_rR, e.g. vista_r4)")
    return pattern, float(r)


def make_mask(
    pattern: str,
    n_slices: int,
    n_frames: int,
    n_lines: int,
    acceleration: float,
    seed: int,
    bank: np.ndarray | None = None,
    **options: Any,
) -> np.ndarray:
    """Mask ``(S, T, W)`` bool for one subject, one independent draw per slice.

    Without a bank, slice ``s`` runs the pattern with seed ``derive_seed(seed, 'mask', s)``. With a
    bank (``(K, T, W)`` from :func:`mask_bank`), the same per-slice seed picks one of the K
    patterns and a cyclic shift in time (k–t patterns such as VISTA are periodic in t), so
    expensive patterns are computed K times per build instead of S times per subject.

    Args:
        pattern: a registered pattern name (see :func:`available_patterns`).
        n_slices, n_frames, n_lines: S, T and W (phase-encoding lines).
        acceleration: target R = W / (lines per frame).
        seed: the subject's mask seed.
        bank: optional precomputed patterns ``(K, T, W)``.
        options: pattern-specific keyword options.
    """
    validate_mask_request(pattern, acceleration, n_frames, n_lines, **options)
    out = np.empty((n_slices, n_frames, n_lines), dtype=bool)
    if bank is not None:
        if bank.ndim != 3 or bank.shape[1:] != (n_frames, n_lines):
            raise ValueError(f"mask bank has shape {bank.shape}, expected (K, {n_frames}, {n_lines})")
        for s in range(n_slices):
            rng = np.random.default_rng(derive_seed(seed, "mask", s))
            j, shift = int(rng.integers(bank.shape[0])), int(rng.integers(n_frames))
            out[s] = np.roll(bank[j], shift, axis=0)
        return out
    fn = get_pattern(pattern)
    for s in range(n_slices):
        m = np.asarray(fn(n_frames, n_lines, acceleration, derive_seed(seed, "mask", s), **options))
        if m.shape != (n_frames, n_lines) or m.dtype != bool:
            raise RuntimeError(f"pattern {pattern!r} returned {m.shape} {m.dtype}, expected {(n_frames, n_lines)} bool")
        out[s] = m
    return out


def mask_bank(
    pattern: str, size: int, n_frames: int, n_lines: int, acceleration: float, seed: int, **options: Any
) -> np.ndarray:
    """``(size, T, W)`` patterns with seeds ``derive_seed(seed, 'bank', j)``, for :func:`make_mask`."""
    if size < 1:
        raise ValueError(f"mask bank size must be >= 1, got {size}")
    validate_mask_request(pattern, acceleration, n_frames, n_lines, **options)
    return np.stack([bank_member(pattern, j, n_frames, n_lines, acceleration, seed, **options) for j in range(size)])


def bank_member(
    pattern: str, index: int, n_frames: int, n_lines: int, acceleration: float, seed: int, **options: Any
) -> np.ndarray:
    """Pattern ``index`` of a :func:`mask_bank` (``(T, W)`` bool), computable on its own (in parallel)."""
    return np.asarray(get_pattern(pattern)(n_frames, n_lines, acceleration, derive_seed(seed, "bank", index), **options))


def achieved_acceleration(mask: np.ndarray, exclude_lines: np.ndarray | None = None) -> float:
    """Exact achieved acceleration: total lines / sampled lines over all frames and slices.

    Args:
        mask: ``(..., W)`` bool.
        exclude_lines: optional ``(W,)`` bool of lines (e.g. ACS) left out of the count, giving
            the acceleration of the incoherent part alone.
    """
    m = np.asarray(mask, dtype=bool)
    if exclude_lines is not None:
        keep = ~np.asarray(exclude_lines, dtype=bool)
        m = m[..., keep]
    n = int(m.sum())
    return float("inf") if n == 0 else m.size / n
