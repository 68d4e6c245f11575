"""Classical Cartesian line patterns: Gaussian variable density, equispaced + ACS, uniform random.

Every pattern returns a ``(T, W)`` bool mask with exactly ``n = round(W / R)`` sampled
phase-encoding lines in every frame (ACS lines included), a different draw per frame (k–t
incoherence), and is fully determined by ``seed``. The default ACS size follows fastMRI's
centre fractions (0.08 at R = 4, 0.04 at R = 8): ``round(0.32 * W / R)``, capped below n.
"""

from __future__ import annotations

import numpy as np

from kspace_sim.masks.registry import acs_line_mask, register_pattern

__all__ = [
    "lines_per_frame",
    "default_acs_lines",
    "acs_line_mask",
    "gaussian_mask",
    "equispaced_mask",
    "uniform_mask",
]


def lines_per_frame(n_lines: int, acceleration: float) -> int:
    """``n = round(W / R)`` sampled lines per frame, at least 1."""
    return max(1, int(round(n_lines / acceleration)))


def default_acs_lines(n_lines: int, acceleration: float) -> int:
    """fastMRI-like ACS size ``round(0.32 W / R)``, leaving at least one incoherent line."""
    n = lines_per_frame(n_lines, acceleration)
    return int(min(round(0.32 * n_lines / acceleration), max(n - 1, 0)))


def _with_default_acs(fn, default=default_acs_lines):  # type: ignore[no-untyped-def]
    fn.default_acs_lines = default
    return fn


def _check_acs_request(
    n_frames: int, n_lines: int, acceleration: float, *, acs_lines: int | None = None, sigma_fraction: float = 0.25
) -> None:
    """The registry's ``check_request`` hook of the ACS patterns: the ACS block must fit in the
    ``round(W / R)`` lines of a frame (and Gaussian's density must have a width)."""
    _resolve_acs(n_lines, acceleration, acs_lines)
    if sigma_fraction <= 0:
        raise ValueError("sigma_fraction must be > 0")


def _resolve_acs(n_lines: int, acceleration: float, acs_lines: int | None) -> tuple[int, int]:
    n = lines_per_frame(n_lines, acceleration)
    acs = default_acs_lines(n_lines, acceleration) if acs_lines is None else int(acs_lines)
    if acs < 0 or acs > n:
        raise ValueError(f"acs_lines={acs} must be in [0, n={n}] (n = round(W/R) lines per frame)")
    return n, acs


def _frames_with_acs(
    n_frames: int, n_lines: int, acceleration: float, acs_lines: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(T, W)`` mask with the ACS block set, the non-ACS line indices, and the number of
    non-ACS lines each frame still needs (``n - acs``)."""
    n, acs = _resolve_acs(n_lines, acceleration, acs_lines)
    centre = acs_line_mask(n_lines, acs)
    out = np.zeros((n_frames, n_lines), dtype=bool)
    out[:, centre] = True
    return out, np.flatnonzero(~centre), n - acs


def _draw_weighted(rng: np.random.Generator, weights: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct indices drawn without replacement with probability ∝ ``weights``."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    # Gumbel top-k: exact sampling without replacement, vectorised.
    keys = np.log(weights) - np.log(-np.log(rng.random(weights.shape)))
    return np.argpartition(-keys, k - 1)[:k]


@register_pattern("gaussian", "Gaussian variable-density lines with a fully sampled centre")
@_with_default_acs
def gaussian_mask(
    n_frames: int,
    n_lines: int,
    acceleration: float,
    seed: int,
    *,
    acs_lines: int | None = None,
    sigma_fraction: float = 0.25,
) -> np.ndarray:
    """Gaussian variable-density lines, independent draw per frame.

    Args:
        n_frames, n_lines: T and W.
        acceleration: R; ``round(W / R)`` lines per frame including the ACS block.
        seed: random seed.
        acs_lines: fully sampled central lines (None = ``round(0.32 W / R)``).
        sigma_fraction: standard deviation of the sampling density as a fraction of W.

    Returns:
        ``(T, W)`` bool.
    """
    if sigma_fraction <= 0:
        raise ValueError("sigma_fraction must be > 0")
    out, free, m = _frames_with_acs(n_frames, n_lines, acceleration, acs_lines)
    rng = np.random.default_rng(seed)
    k = np.arange(n_lines) - n_lines // 2
    weights = np.exp(-0.5 * (k / (sigma_fraction * n_lines)) ** 2)
    for t in range(n_frames):
        out[t, free[_draw_weighted(rng, weights[free], m)]] = True
    return out


@register_pattern("equispaced", "equispaced lines with ACS, shifted every frame (k-t lattice)")
@_with_default_acs
def equispaced_mask(
    n_frames: int,
    n_lines: int,
    acceleration: float,
    seed: int,
    *,
    acs_lines: int | None = None,
) -> np.ndarray:
    """Equispaced lines outside the ACS block, offset cycling over frames.

    The ``n - acs`` outer lines are spread evenly over the non-ACS lines (spacing
    ``(W - acs) / (n - acs)``, as fastMRI's fraction-preserving variant), and the offset advances
    by one line per frame (a sheared k–t lattice), starting at a seeded random offset.

    Returns:
        ``(T, W)`` bool.
    """
    out, free, m = _frames_with_acs(n_frames, n_lines, acceleration, acs_lines)
    rng = np.random.default_rng(seed)
    if m > 0:
        spacing = free.size / m
        period = max(1, int(np.floor(spacing)))
        start = int(rng.integers(period))
        for t in range(n_frames):
            offset = (start + t) % period
            idx = (offset + np.floor(np.arange(m) * spacing).astype(np.int64)) % free.size
            out[t, free[idx]] = True
    return out


@register_pattern("uniform", "uniform random lines (no ACS by default)")
def uniform_mask(
    n_frames: int,
    n_lines: int,
    acceleration: float,
    seed: int,
    *,
    acs_lines: int | None = 0,
) -> np.ndarray:
    """Uniformly random distinct lines per frame, optional ACS block.

    Returns:
        ``(T, W)`` bool.
    """
    out, free, m = _frames_with_acs(n_frames, n_lines, acceleration, acs_lines)
    rng = np.random.default_rng(seed)
    for t in range(n_frames):
        out[t, rng.choice(free, size=m, replace=False)] = True
    return out


def _check_equispaced(n_frames: int, n_lines: int, acceleration: float, *, acs_lines: int | None = None) -> None:
    _resolve_acs(n_lines, acceleration, acs_lines)


def _check_uniform(n_frames: int, n_lines: int, acceleration: float, *, acs_lines: int | None = 0) -> None:
    _resolve_acs(n_lines, acceleration, acs_lines)


gaussian_mask.check_request = _check_acs_request  # type: ignore[attr-defined]
equispaced_mask.check_request = _check_equispaced  # type: ignore[attr-defined]
uniform_mask.check_request = _check_uniform  # type: ignore[attr-defined]
