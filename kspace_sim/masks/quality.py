"""Quality metrics of any ``(T, W)`` k–t line mask (True = line sampled in that frame)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["MaskQuality", "mask_quality", "sampling_density", "max_run"]


@dataclass(frozen=True)
class MaskQuality:
    """Metrics of one ``(T, W)`` mask.

    Attributes:
        frames, lines: T and W.
        acceleration: achieved R = T W / sampled lines.
        acceleration_without_full: R over the lines not sampled in every frame (the ACS block
            when a pattern has one); equals ``acceleration`` when no line is fully sampled.
        fully_sampled_lines: lines sampled in every frame.
        lines_min, lines_max: fewest / most lines in one frame.
        max_gap_k: longest run of consecutive unsampled lines within any frame (not periodic).
        max_gap_t: longest run of consecutive frames, periodic in t, in which a line is not
            sampled, over all lines (T for a never-sampled line).
        unsampled_fraction: fraction of lines never sampled in any frame (time average zero).
        psf_sidelobe: max |PSF| off the peak / peak, PSF = 2D DFT of the (T, W) mask (the
            k–t point spread function; the peak is its DC value).
    """

    frames: int
    lines: int
    acceleration: float
    acceleration_without_full: float
    fully_sampled_lines: int
    lines_min: int
    lines_max: int
    max_gap_k: int
    max_gap_t: int
    unsampled_fraction: float
    psf_sidelobe: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def max_run(x: np.ndarray, periodic: bool = False) -> np.ndarray:
    """Longest run of True along the last axis of ``x`` (``(..., L)`` bool) → ``(...)`` int.

    With ``periodic`` the run may wrap around from the end to the start (an all-True row gives L).
    """
    x = np.asarray(x, dtype=bool)
    L = x.shape[-1]
    if periodic:
        x = np.concatenate([x, x], axis=-1)
    # run length ending at each position: cumulative count since the last False
    idx = np.arange(x.shape[-1])
    last_false = np.maximum.accumulate(np.where(~x, idx, -1), axis=-1)
    runs = idx - last_false
    return np.minimum(runs.max(axis=-1), L) if L else np.zeros(x.shape[:-1], dtype=int)


def sampling_density(mask: np.ndarray) -> np.ndarray:
    """Time-averaged sampling density per line: ``(T, W)`` bool → ``(W,)`` fraction of frames."""
    return np.asarray(mask, dtype=bool).mean(axis=0)


def mask_quality(mask: np.ndarray) -> MaskQuality:
    """Metrics of a ``(T, W)`` bool k–t mask (see :class:`MaskQuality`)."""
    m = np.asarray(mask)
    if m.ndim != 2 or m.dtype != bool:
        raise ValueError(f"mask_quality expects a (T, W) bool array, got {m.shape} {m.dtype}")
    T, W = m.shape
    if T < 1 or W < 1:
        raise ValueError(f"empty mask {m.shape}")
    total = int(m.sum())
    per_frame = m.sum(axis=1)
    full = m.all(axis=0)
    rest = m[:, ~full]
    n_rest = int(rest.sum())
    psf = np.abs(np.fft.fft2(m.astype(np.float64)))
    peak = psf[0, 0]
    psf[0, 0] = 0.0
    return MaskQuality(
        frames=T,
        lines=W,
        acceleration=float("inf") if total == 0 else T * W / total,
        acceleration_without_full=float("inf") if n_rest == 0 else rest.size / n_rest,
        fully_sampled_lines=int(full.sum()),
        lines_min=int(per_frame.min()),
        lines_max=int(per_frame.max()),
        max_gap_k=int(max_run(~m).max()),
        max_gap_t=int(max_run(~m.T, periodic=True).max()),
        unsampled_fraction=float((~m.any(axis=0)).mean()),
        psf_sidelobe=float("nan") if peak == 0 else float(psf.max() / peak),
    )
