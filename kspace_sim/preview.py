"""Preview figure of one stored subject: per view the image, log-magnitude k-space, the k-t mask
and the zero-filled undersampled image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kspace_sim.fft import ifft2c
from kspace_sim.store.layout import STATUS_DONE, open_store

__all__ = ["render_preview"]


def render_preview(
    url: str,
    subject_id: str,
    mask_name: str | None = None,
    frame: int = 0,
    out: str | Path | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """Write the preview PNG of ``subject_id`` and return its path.

    Raises:
        KeyError: unknown subject or mask; ValueError: the subject is not done.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = open_store(url, "r", storage_options)
    ids = [str(x) for x in g["subjects/id"][:]]
    if subject_id not in ids:
        raise KeyError(f"subject {subject_id!r} is not in {url}")
    row = ids.index(subject_id)
    if g["subjects/status"][row] != STATUS_DONE:
        raise ValueError(f"subject {subject_id!r} is not done (reason: {g['subjects/reason'][row]!r})")
    masks = sorted(g["masks"].array_keys()) if "masks" in g else []
    name = mask_name or (masks[0] if masks else None)
    if name not in masks:
        raise KeyError(f"mask {name!r} not in store (available: {masks})")
    k = g["kspace"][row]  # (S, T, H, W)
    m = g[f"masks/{name}"][row]  # (S, T, W)
    views = g.attrs["view_order"]
    frame = int(np.clip(frame, 0, k.shape[1] - 1))
    img = np.abs(ifft2c(k[:, frame]))
    zf = np.abs(ifft2c(k[:, frame] * m[:, frame, None, :]))
    s = k.shape[0]
    fig, axes = plt.subplots(s, 4, figsize=(10, 2.4 * s))
    for i in range(s):
        row_axes = axes[i]
        row_axes[0].imshow(img[i], cmap="gray", vmin=0, vmax=1)
        row_axes[1].imshow(np.log10(np.abs(k[i, frame]) + 1e-6), cmap="viridis")
        row_axes[2].imshow(m[i], cmap="gray", aspect="auto", interpolation="nearest")
        row_axes[3].imshow(zf[i], cmap="gray", vmin=0, vmax=1)
        row_axes[0].set_ylabel(views[i])
    for j, title in enumerate(("image |x|", "log10 |k|", f"mask {name} (t × k_W)", "zero-filled |x_u|")):
        axes[0, j].set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(out) if out else Path(f"preview-row{row}.png")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
