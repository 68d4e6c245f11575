"""PNG figure of a ``(T, W)`` k–t mask: the pattern, its time average and its density profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kspace_sim.masks.quality import MaskQuality, mask_quality, sampling_density

__all__ = ["mask_figure"]


def mask_figure(mask: np.ndarray, out: str | Path, title: str = "", quality: MaskQuality | None = None) -> Path:
    """Write a PNG of a ``(T, W)`` bool mask and return its path.

    Panels: the k–t pattern (k horizontal, centre k = 0 at W // 2; t vertical), the time average
    (fraction of frames sampling each line), and the sampling density profile (time average
    smoothed over ``round(R)`` lines, with the uniform density 1/R for reference).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    m = np.asarray(mask, dtype=bool)
    q = quality or mask_quality(m)
    T, W = m.shape
    k = np.arange(W) - W // 2
    avg = sampling_density(m)
    width = max(1, int(round(q.acceleration))) if np.isfinite(q.acceleration) else 1
    kernel = np.ones(width) / width
    smooth = np.convolve(np.concatenate([avg[-width:], avg, avg[:width]]), kernel, mode="same")[width:-width]

    fig, axes = plt.subplots(3, 1, figsize=(7.5, 8.5), gridspec_kw={"height_ratios": [3, 1, 1.3]}, sharex=True)
    axes[0].imshow(m, cmap="gray_r", aspect="auto", interpolation="nearest",
                   extent=(k[0] - 0.5, k[-1] + 0.5, T - 0.5, -0.5))
    axes[0].set_ylabel("frame t")
    axes[0].set_title(title or "k–t mask")
    axes[1].imshow(avg[None, :], cmap="gray_r", aspect="auto", interpolation="nearest", vmin=0, vmax=1,
                   extent=(k[0] - 0.5, k[-1] + 0.5, 0, 1))
    axes[1].set_yticks([])
    axes[1].set_ylabel("time avg")
    axes[2].bar(k, avg, width=1.0, color="0.75", label="fraction of frames")
    axes[2].plot(k, smooth, color="C3", lw=1.5, label=f"density (smoothed over {width} lines)")
    if np.isfinite(q.acceleration):
        axes[2].axhline(1 / q.acceleration, color="C0", ls="--", lw=1, label=f"1/R = {1 / q.acceleration:.3f}")
    axes[2].set_xlabel("phase-encoding line k (k = 0 at W//2)")
    axes[2].set_ylabel("sampling density")
    axes[2].set_ylim(0, 1.02)
    axes[2].legend(loc="upper right", fontsize=7)
    fig.text(
        0.01, 0.005,
        f"R = {q.acceleration:.3f}   lines/frame {q.lines_min}–{q.lines_max}   max gap k {q.max_gap_k}, "
        f"t {q.max_gap_t}   never sampled {100 * q.unsampled_fraction:.1f} %   PSF side lobe {q.psf_sidelobe:.3f}",
        fontsize=7.5,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
