"""Preview figure of one stored subject: per view the image, log-magnitude k-space, the k-t mask
and the zero-filled undersampled image; for a store with coils a second figure of one view's coil
maps (magnitude, one panel per coil) and one coil's k-space, synthesised by the store's rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kspace_sim.fft import ifft2c
from kspace_sim.store.coil_arrays import has_coils, read_subject_coils, subject_coil_kspace
from kspace_sim.store.kspace_codec import decode_float16
from kspace_sim.store.layout import STATUS_DONE, open_store

__all__ = ["coil_preview_path", "render_coil_preview", "render_preview", "render_previews"]


def coil_preview_path(path: str | Path) -> Path:
    """Where the coil figure goes beside the preview ``path``: ``<stem>-coils.png``."""
    path = Path(path)
    return path.with_name(f"{path.stem}-coils{path.suffix or '.png'}")


def _subject_kspace(g: Any, row: int) -> np.ndarray:
    """Row ``row``'s coil-free k-space ``(S, T, H, W)`` complex64 (float16 storage decoded)."""
    k = g["kspace"][row]
    if k.dtype == np.float16:
        return decode_float16(k, float(g["subjects/kspace_scale"][row]))
    return np.asarray(k)


def render_coil_preview(g: Any, row: int, frame: int, out: Path, view: int = 0, coil: int = 0) -> Path:
    """The coil figure of a store with coils: row 1, ``|S_k|`` of view ``view`` for every coil; row 2,
    coil ``coil``'s log-magnitude k-space and image (with the stored noise) at ``frame`` and the
    root-sum-of-squares of all coil images. Writes ``out`` and returns it.

    Raises:
        ValueError: the store has no coils, or ``view`` / ``coil`` is out of range.
    """
    import matplotlib.pyplot as plt

    if not has_coils(g):
        raise ValueError("the store was built without coils (format version 1): no coil preview")
    coils = read_subject_coils(g, row)
    n_coils, n_views = coils.maps.shape[:2]
    if not 0 <= view < n_views or not 0 <= coil < n_coils:
        raise ValueError(f"view must be in 0..{n_views - 1} and coil in 0..{n_coils - 1}, got view {view}, coil {coil}")
    # (K, H, W): this view and frame only, with their part of the stored noise draw (a sub-stream of its own)
    kc = subject_coil_kspace(_subject_kspace(g, row), coils, views=[view], frames=[frame])[:, 0, 0]
    images = np.abs(ifft2c(kc))
    rss = np.sqrt(np.sum(images**2, axis=0))
    cols = max(n_coils, 3)
    fig, axes = plt.subplots(2, cols, figsize=(2.2 * cols, 4.8), squeeze=False)
    for k in range(n_coils):
        axes[0, k].imshow(np.abs(coils.maps[k, view]), cmap="magma", vmin=0, vmax=1)
        axes[0, k].set_title(f"|S_{k}|", fontsize=9)
    attrs = g.attrs["coils"]
    snr = "noise-free" if attrs.get("snr_db") is None else f"SNR {attrs['snr_db']:g} dB"
    axes[1, 0].imshow(np.log10(np.abs(kc[coil]) + 1e-6), cmap="viridis")
    axes[1, 0].set_title(f"coil {coil} log10 |k|", fontsize=9)
    axes[1, 1].imshow(images[coil], cmap="gray", vmin=0, vmax=float(images[coil].max()) or 1.0)
    axes[1, 1].set_title(f"coil {coil} |image| ({snr})", fontsize=9)
    axes[1, 2].imshow(rss, cmap="gray", vmin=0, vmax=float(rss.max()) or 1.0)
    axes[1, 2].set_title("root-sum-of-squares", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[1, 3:]:
        ax.axis("off")
    views = g.attrs["view_order"]
    fig.suptitle(f"{attrs['n_coils']} {attrs['model']} coils, view {views[view]}, frame {frame}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def render_preview(*args: Any, **kwargs: Any) -> Path:
    """:func:`render_previews`' first figure (the per-view preview)."""
    return render_previews(*args, **kwargs)[0]


def render_previews(
    url: str,
    subject_id: str,
    mask_name: str | None = None,
    frame: int = 0,
    out: str | Path | None = None,
    storage_options: dict[str, Any] | None = None,
    coil_view: int = 0,
    coil: int = 0,
) -> list[Path]:
    """Write the preview PNG of ``subject_id`` and return its paths; a store with coils also gets
    the coil figure (:func:`render_coil_preview` of view ``coil_view``, coil ``coil``) at
    :func:`coil_preview_path`.

    Raises:
        KeyError: unknown subject or mask; ValueError: the subject is not done, or a coil view or
        coil out of range.
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
    if has_coils(g):
        n_coils, n_views = g["coils/maps"].shape[1:3]
        if not 0 <= coil_view < n_views or not 0 <= coil < n_coils:
            raise ValueError(f"--coil-view must be in 0..{n_views - 1} and --coil in 0..{n_coils - 1}")
    k = _subject_kspace(g, row)  # (S, T, H, W)
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
    if not has_coils(g):
        return [path]
    return [path, render_coil_preview(g, row, frame, coil_preview_path(path), view=coil_view, coil=coil)]
