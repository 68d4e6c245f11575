"""PNG figures of reconstructions (magnitude images of target, input and output)."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["save_reconstruction_png"]


def save_reconstruction_png(rows: dict[str, dict[str, torch.Tensor]], path: str | Path, title: str = "") -> None:
    """One figure row per entry of ``rows`` (e.g. 'image MAE, sax0'), three columns.

    Args:
        rows: ``{row label: {"target": (H, W), "input": (H, W), "output": (H, W)}}`` complex or
            real 2D images; magnitudes are shown, each row on the target's grey scale.
        path: PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ("target", "input", "output")
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        vmax = float(images["target"].abs().max()) or 1.0
        for c, col in enumerate(cols):
            ax = axes[r][c]
            ax.imshow(images[col].abs().float().cpu().numpy(), cmap="gray", vmin=0.0, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
