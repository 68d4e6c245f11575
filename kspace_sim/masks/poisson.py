"""k–t Poisson-disc lines from sigpy's variable-density Poisson-disc sampler.

The ``(T, W)`` k–t plane is sampled as a 2D image by sigpy's Poisson-disc kernel (Bridson's
algorithm with a radius that grows as ``1 + slope r``, exactly as ``sigpy.mri.poisson``); each
sample is one phase-encoding line in one frame. ``sigpy.mri.poisson`` bisects ``slope`` until the
acceleration is within ``tol`` of R, but its loop never ends when no slope meets ``tol``; here
the same bisection is bounded and keeps the slope whose sample count is closest to
``T W / R`` (exact when reachable), so the achieved R is as close as the sampler allows. It is
deterministic via sigpy's ``seed`` argument (a 32-bit value derived from ``seed``).

By default the density depends on k only (``r = |k| / (W/2)``), as a k–t pattern should (time is
periodic); ``radial=True`` uses sigpy's radius over the whole plane, ``r = sqrt(k'^2 + t'^2)``,
which makes the middle frames denser than the first and last. Per-frame line counts vary (a
Poisson-disc property); :func:`kspace_sim.masks.quality.mask_quality` reports them.
"""

from __future__ import annotations

import numpy as np

from kspace_sim.masks.registry import register_pattern

__all__ = ["poisson_mask"]


def _kernel():  # sigpy (and its numba kernel) imported lazily: it is slow to import
    from sigpy.mri.samp import _poisson

    return _poisson


def check_poisson_request(
    n_frames: int,
    n_lines: int,
    acceleration: float,
    *,
    seed: int = 0,
    radial: bool = False,
    max_attempts: int = 30,
    max_evaluations: int = 48,
) -> None:
    """Raise ``ValueError`` for a request :func:`poisson_mask` would refuse, without computing it
    (the registry's ``check_request`` hook)."""
    if not (isinstance(n_frames, (int, np.integer)) and n_frames >= 2):
        raise ValueError(f"poisson needs T >= 2 frames, got {n_frames}")
    if not (isinstance(n_lines, (int, np.integer)) and n_lines >= 2):
        raise ValueError(f"poisson needs W >= 2 lines, got {n_lines}")
    r_target = float(acceleration)
    if not np.isfinite(r_target) or r_target <= 1 or r_target > n_lines:
        raise ValueError(f"poisson needs 1 < R <= W={n_lines}, got R={acceleration}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if max_attempts < 1 or max_evaluations < 1:
        raise ValueError("max_attempts and max_evaluations must be >= 1")


@register_pattern("poisson", "k-t Poisson-disc lines (sigpy.mri.poisson on the (T, W) plane)")
def poisson_mask(
    n_frames: int,
    n_lines: int,
    acceleration: float,
    seed: int,
    *,
    radial: bool = False,
    max_attempts: int = 30,
    max_evaluations: int = 48,
) -> np.ndarray:
    """Variable-density Poisson-disc k–t mask with achieved R as close to ``acceleration`` as possible.

    Args:
        n_frames, n_lines: T (>= 2) and W (>= 2).
        acceleration: target R, ``1 < R <= W``; achieved ``R = T W / (number of samples)``.
        seed: non-negative integer, passed (mod 2**32) as sigpy's ``seed``.
        radial: density from sigpy's radius over the whole (t, k) plane instead of |k| only.
        max_attempts: sigpy's rejection attempts per active sample (30).
        max_evaluations: bound on the slope bisection (sampler runs).

    Returns:
        ``(T, W)`` bool, True = line sampled in that frame.
    """
    check_poisson_request(n_frames, n_lines, acceleration, seed=seed, max_attempts=max_attempts, max_evaluations=max_evaluations)
    r_target = float(acceleration)

    kernel = _kernel()
    ny, nx = int(n_frames), int(n_lines)
    y, x = np.mgrid[:ny, :nx].astype(np.float64)
    x = np.abs(x - nx / 2)
    x /= x.max()
    if radial:
        y = np.abs(y - ny / 2)
        y /= y.max()
        r = np.sqrt(x**2 + y**2)
    else:
        r = x
    target = ny * nx / r_target
    sd = int(seed) % (2**32)
    lo, hi = 0.0, float(max(nx, ny))
    best, best_err = None, np.inf
    for _ in range(int(max_evaluations)):
        slope = (lo + hi) / 2
        rx = np.clip((1 + r * slope) * nx / max(nx, ny), 1, None)
        ry = np.clip((1 + r * slope) * ny / max(nx, ny), 1, None)
        mask = kernel(nx, ny, int(max_attempts), rx, ry, (0, 0), sd).astype(bool)
        count = int(mask.sum())
        err = abs(count - target)
        if err < best_err:
            best, best_err = mask, err
        if err < 0.5 or hi - lo < 1e-9:
            break
        if count > target:  # too many samples: larger radii
            lo = slope
        else:
            hi = slope
    assert best is not None
    return best


poisson_mask.check_request = check_poisson_request  # type: ignore[attr-defined]
