"""Evaluation figures (matplotlib, Agg backend). Each function writes one PNG and returns its path."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "CLASS_COLOURS",
    "scatter_pred_true",
    "roc_curves",
    "segmentation_overlay",
    "reconstruction_grid",
    "tsne_plot",
    "metric_vs_acceleration",
]

#: fixed overlay colour of segmentation classes 1..5 (class c uses entry (c − 1) mod 5)
CLASS_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#ff7f00", "#984ea3")
_QUINTILE_COLOURS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")


def _plt():  # noqa: ANN202 - matplotlib.pyplot module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:  # noqa: ANN001
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return max(1, math.ceil(n / cols)), cols


def scatter_pred_true(pred: np.ndarray, true: np.ndarray, names: Sequence[str], units: Sequence[str] | None,
                      path: str | Path) -> Path:
    """Predicted vs true scatter, one panel per phenotype with the identity line and MAE in the title.

    Args:
        pred, true: (N, P) in original units; pairs with a NaN are skipped.
        names, units: (P,) phenotype names and unit strings.
    """
    plt = _plt()
    pred = np.asarray(pred, dtype=float).reshape(len(pred), -1)
    true = np.asarray(true, dtype=float).reshape(len(true), -1)
    units = list(units) if units is not None else [""] * len(names)
    rows, cols = _grid(len(names))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    for j, ax in enumerate(axes.ravel()):
        if j >= len(names):
            ax.axis("off")
            continue
        keep = np.isfinite(pred[:, j]) & np.isfinite(true[:, j])
        t, p = true[keep, j], pred[keep, j]
        unit = f" ({units[j]})" if units[j] and units[j] not in names[j] else ""
        ax.scatter(t, p, s=10, alpha=0.7)
        if len(t):
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_title(f"{names[j]}\nMAE {np.mean(np.abs(p - t)):.3g}{' ' + units[j] if units[j] else ''}"
                         f" (n={len(t)})", fontsize=9)
        else:
            ax.set_title(f"{names[j]}\n(no data)", fontsize=9)
        ax.set_xlabel(f"true{unit}", fontsize=8)
        ax.set_ylabel(f"predicted{unit}", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def roc_curves(prob: np.ndarray, label: np.ndarray, names: Sequence[str], path: str | Path) -> Path:
    """ROC curves, one per disease with its AUC in the legend.

    Args:
        prob: (N, D) probabilities; label: (N, D) in {−1 unknown (ignored), 0, 1}.
        names: (D,) disease names. Diseases with a single class are skipped and listed in a note.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _plt()
    prob = np.asarray(prob, dtype=float).reshape(len(prob), -1)
    label = np.asarray(label).reshape(len(label), -1)
    fig, ax = plt.subplots(figsize=(5, 5))
    skipped = []
    for j, name in enumerate(names):
        keep = np.isin(label[:, j], (0, 1)) & np.isfinite(prob[:, j])
        y, p = label[keep, j].astype(int), prob[keep, j]
        if len(np.unique(y)) < 2:
            skipped.append(str(name))
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=1.3, label=f"{name} (AUC {roc_auc_score(y, p):.3f}, n={len(y)})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    if skipped:
        ax.text(0.02, 0.98, "single class, skipped: " + ", ".join(skipped), transform=ax.transAxes, fontsize=7,
                va="top", wrap=True)
    return _save(fig, path)


def _overlay(ax, image: np.ndarray, labels: np.ndarray | None, vmax: float) -> None:  # noqa: ANN001
    from matplotlib.colors import ListedColormap

    ax.imshow(image, cmap="gray", vmin=0.0, vmax=vmax)
    if labels is not None:
        labels = np.asarray(labels).astype(int)
        n = max(5, int(labels.max(initial=0)))
        cmap = ListedColormap([CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)] for c in range(1, n + 1)])
        ax.imshow(np.ma.masked_where(labels <= 0, labels), cmap=cmap, vmin=0.5, vmax=n + 0.5, alpha=0.45,
                  interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def segmentation_overlay(images: np.ndarray, true: np.ndarray, pred: np.ndarray, titles: Sequence[str],
                         path: str | Path) -> Path:
    """Rows = K examples; columns image | ground truth overlay | prediction overlay.

    Args:
        images: (K, H, W) magnitudes; true, pred: (K, H, W) integer label maps (0 = background,
            classes 1..5 in fixed colours ``CLASS_COLOURS``); titles: (K,) row labels.
    """
    plt = _plt()
    images, true, pred = np.asarray(images, dtype=float), np.asarray(true), np.asarray(pred)
    k = len(images)
    fig, axes = plt.subplots(k, 3, figsize=(7.5, 2.6 * k), squeeze=False)
    for i in range(k):
        vmax = float(np.nanmax(images[i])) or 1.0
        for c, (lab, col) in enumerate(((None, "image"), (true[i], "ground truth"), (pred[i], "prediction"))):
            _overlay(axes[i][c], images[i], lab, vmax)
            if i == 0:
                axes[i][c].set_title(col)
        axes[i][0].set_ylabel(titles[i] if i < len(titles) else "", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def reconstruction_grid(target: np.ndarray, zero_filled: np.ndarray, pred: np.ndarray, titles: Sequence[str],
                        path: str | Path, data_consistent: np.ndarray | None = None) -> Path:
    """Rows = K examples; columns target | zero-filled | reconstruction | (reconstruction with the
    acquired samples put back, when given) | |error| (reconstruction − target), the images on the
    target's grey scale.

    Args:
        target, zero_filled, pred: (K, H, W) magnitudes; titles: (K,) row labels;
        data_consistent: (K, H, W) magnitudes or None.
    """
    plt = _plt()
    target, zero_filled, pred = (np.abs(np.asarray(a)).astype(float) for a in (target, zero_filled, pred))
    images = [("target", target), ("zero-filled", zero_filled), ("reconstruction", pred)]
    if data_consistent is not None:
        images.append(("+ acquired samples", np.abs(np.asarray(data_consistent)).astype(float)))
    k, n = len(target), len(images) + 1
    fig, axes = plt.subplots(k, n, figsize=(2.5 * n, 2.6 * k), squeeze=False)
    for i in range(k):
        vmax = float(np.nanmax(target[i])) or 1.0
        panels = [(name, x[i], "gray", vmax) for name, x in images]
        panels.append(("|error|", np.abs(pred[i] - target[i]), "inferno", None))
        for c, (name, img, cmap, top) in enumerate(panels):
            ax = axes[i][c]
            im = ax.imshow(img, cmap=cmap, vmin=0.0, vmax=top)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name)
            if c == n - 1:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        axes[i][0].set_ylabel(titles[i] if i < len(titles) else "", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _quintiles(values: np.ndarray) -> np.ndarray:
    """(N,) quintile index 0..4 of each finite value, −1 for NaN."""
    values = np.asarray(values, dtype=float)
    out = np.full(len(values), -1)
    finite = np.isfinite(values)
    if finite.any():
        edges = np.quantile(values[finite], [0.2, 0.4, 0.6, 0.8])
        out[finite] = np.searchsorted(edges, values[finite], side="right")
    return out


def tsne_plot(emb_a: np.ndarray, emb_b: np.ndarray, values: np.ndarray, value_name: str, path: str | Path,
              labels: tuple[str, str] = ("image", "k-space"), seed: int = 0, lines: bool = False) -> Path:
    """Joint t-SNE of two encoders' embeddings of the same subjects.

    Args:
        emb_a, emb_b: (N, E) embeddings of the same N subjects (row m = subject m) from two encoders.
        values: (N,) a phenotype; points are coloured by its quintile (NaN grey).
        value_name: the phenotype's name (legend title).
        labels: encoder names (marker o for a, ^ for b).
        seed: t-SNE random state.
        lines: join each subject's two points.
    """
    from matplotlib.lines import Line2D
    from sklearn.manifold import TSNE

    plt = _plt()
    a, b = np.asarray(emb_a, dtype=float), np.asarray(emb_b, dtype=float)
    n = len(a)
    if b.shape != a.shape:
        raise ValueError(f"emb_a {a.shape} and emb_b {b.shape} must match")
    x = np.concatenate([a, b]).reshape(2 * n, -1)
    perplexity = float(min(30.0, (2 * n - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    q = _quintiles(values)
    colours = np.array([_QUINTILE_COLOURS[i] if i >= 0 else "#bdbdbd" for i in q], dtype=object)
    fig, ax = plt.subplots(figsize=(6, 5))
    if lines:
        for m in range(n):
            ax.plot(xy[[m, n + m], 0], xy[[m, n + m], 1], color="grey", lw=0.4, alpha=0.5, zorder=1)
    ax.scatter(xy[:n, 0], xy[:n, 1], c=list(colours), marker="o", s=22, edgecolors="k", linewidths=0.3, zorder=2)
    ax.scatter(xy[n:, 0], xy[n:, 1], c=list(colours), marker="^", s=26, edgecolors="k", linewidths=0.3, zorder=2)
    handles = [Line2D([], [], ls="", marker="o", color="k", mfc="none", label=labels[0]),
               Line2D([], [], ls="", marker="^", color="k", mfc="none", label=labels[1])]
    handles += [Line2D([], [], ls="", marker="s", color=c, label=f"Q{i + 1}") for i, c in enumerate(_QUINTILE_COLOURS)]
    if (q < 0).any():
        handles.append(Line2D([], [], ls="", marker="s", color="#bdbdbd", label="missing"))
    ax.legend(handles=handles, title=f"{value_name} quintile", fontsize=7, title_fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {labels[0]} and {labels[1]} embeddings (N={n})", fontsize=9)
    return _save(fig, path)


def metric_vs_acceleration(results: pd.DataFrame, path: str | Path, mean_guess: float | None = None, ylabel: str = "",
                           higher_is_better: bool = False) -> Path:
    """A metric against the acceleration factor R, one line per method with 95 % error bars.

    Args:
        results: columns ``method, acc, value, lo, hi`` (lo/hi may be NaN or missing).
        mean_guess: value of the mean-guess predictor (dashed horizontal line); points worse than it
            (above it when ``higher_is_better`` is False, below it otherwise) get an open red circle.
        ylabel: y-axis label (metric and unit, e.g. "MAE LVEF (%)").
    """
    plt = _plt()
    df = results.copy()
    for col in ("lo", "hi"):
        if col not in df:
            df[col] = np.nan
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, g in df.groupby("method", sort=False):
        g = g.sort_values("acc")
        x, v = g["acc"].to_numpy(dtype=float), g["value"].to_numpy(dtype=float)
        lo = np.nan_to_num(v - g["lo"].to_numpy(dtype=float), nan=0.0).clip(min=0)
        hi = np.nan_to_num(g["hi"].to_numpy(dtype=float) - v, nan=0.0).clip(min=0)
        ax.errorbar(x, v, yerr=[lo, hi], marker="o", ms=4, capsize=3, lw=1.2, label=str(method))
    if mean_guess is not None and np.isfinite(mean_guess):
        ax.axhline(mean_guess, color="k", ls="--", lw=1, label="mean guess")
        v = df["value"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            worse = v < mean_guess if higher_is_better else v > mean_guess
        if worse.any():
            ax.scatter(df["acc"].to_numpy(dtype=float)[worse], v[worse], s=140, facecolors="none", edgecolors="red",
                       linewidths=1.5, zorder=5, label="worse than mean guess")
    accs = np.unique(df["acc"].to_numpy(dtype=float))
    accs = accs[np.isfinite(accs) & (accs > 0)]
    ax.set_xscale("log", base=2)
    if len(accs):
        ax.set_xticks(accs)
        ax.set_xticklabels([f"{a:g}" for a in accs])
        ax.minorticks_off()
    ax.set_xlabel("acceleration R")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
