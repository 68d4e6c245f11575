"""Why stage II does (not) retrieve: where the subject's identity is, in the inputs and in the encoders.

Stage II aligns the class tokens of the image and the k-space encoder. It can only retrieve held-out
subjects if something that identifies a subject reaches those tokens. This probe measures it, for a
stage-I or stage-II checkpoint on the store it was trained on:

* **between-subject fraction** of a feature ``x`` (N subjects, any shape): the variance across
  subjects over the mean square, ``Σ var_n(x) / Σ mean_n(x²)`` (0: every subject gives the same
  vector; 1: nothing common to all subjects), per encoder layer for the class token, the patch tokens
  and their mean;
* **linear retrieval**: a ridge map fitted on the training split from one feature to its partner
  (e.g. the k-space class token → the image class token), applied to the held-out subjects
  (validation + test), scored by :func:`kmtr.analysis.retrieval.retrieval_accuracy` (cosine, top-1 /
  top-5; chance k / N). Input-domain references (no model): the zero-filled and the fully sampled
  image, frames averaged and ``pool`` × ``pool`` average-pooled, as complex values (real and
  imaginary part) and as magnitudes.

A feature that retrieves linearly after a ridge map on ~100 subjects is one stage II could align with
a linear projector; one that does not must first be built by training the encoders.

With ``--phenotypes LVEDV,LVM`` it also asks the same of the regression targets: a ridge regression
from each feature to each phenotype, fitted on the training split with its penalty chosen on the
validation split (mean absolute error), against the training mean on the test split (MAE of both,
paired Wilcoxon p), as ``kmtr eval`` compares a regression head with the mean guess.

    python -m kmtr.eval.retrieval_probe runs/kmtr/stage2/last.pt [--pool 8] [--alpha 10] [--phenotypes LVEDV,LVM]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from kmtr.analysis.retrieval import retrieval_accuracy
from kmtr.analysis.stats import wilcoxon_paired
from kmtr.config import TrainConfig
from kmtr.data import KSpaceDataset, prepare_batch, zero_filled_image
from kmtr.errors import ConfigError
from kmtr.store import StoreError
from kmtr.train.init import load_init, load_prefixed
from kmtr.train.stage2 import Stage2Model, build_stage2_model

__all__ = [
    "SubjectMoments", "between_subject_fraction", "retrieval_probe", "ridge_phenotype", "ridge_retrieval",
    "subject_features",
]


def between_subject_fraction(x: np.ndarray) -> float:
    """Variance across subjects over the mean square of a feature ``x`` (N, ...), summed over its entries.

    0 when every subject has the same vector, 1 when the subjects' mean is zero, NaN for a feature that
    is zero for every subject. Raises ValueError for fewer than two subjects.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(x) < 2:
        raise ValueError("need at least two subjects")
    energy = (x**2).mean(axis=0).sum()
    return float(x.var(axis=0).sum() / energy) if energy > 0 else float("nan")


class SubjectMoments:
    """:func:`between_subject_fraction` of a feature seen in batches, without keeping it (float64 sums)."""

    def __init__(self) -> None:
        self.n, self.total, self.squares = 0, 0.0, 0.0

    def add(self, x: np.ndarray) -> None:
        """Add a batch (B, ...) of subjects."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        self.n += len(x)
        self.total = self.total + x.sum(axis=0)
        self.squares = self.squares + (x**2).sum(axis=0)

    def fraction(self) -> float:
        if self.n < 2:
            raise ValueError("need at least two subjects")
        mean, meansq = self.total / self.n, self.squares / self.n
        energy = meansq.sum()
        return float(np.clip(meansq - mean**2, 0.0, None).sum() / energy) if energy > 0 else float("nan")


def _standardise(train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
    """``train`` and ``others`` (N_i, D) standardised with the training mean and standard deviation
    (a constant feature is only centred)."""
    train = np.asarray(train, np.float64)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return tuple((np.asarray(x, np.float64) - mean) / std for x in (train, *others))


def ridge_retrieval(train_a: np.ndarray, train_b: np.ndarray, test_a: np.ndarray, test_b: np.ndarray,
                    alpha: float = 10.0) -> dict[str, float]:
    """Retrieval of held-out partners through a ridge map a → b fitted on training pairs.

    Args:
        train_a, train_b: (N, Da), (N, Db) features of the same N training subjects.
        test_a, test_b: (M, Da), (M, Db) of M held-out subjects.
        alpha: ridge penalty on the standardised features.

    Returns:
        :func:`retrieval_accuracy` of the mapped ``test_a`` against ``test_b`` (``a2b_top1`` = finding
        b's subject from a, …), standardised with the training statistics. Solved in the dual
        (N × N) form, so ``Da`` may be large.
    """
    xa, ta = _standardise(train_a, test_a)
    xb, tb = _standardise(train_b, test_b)
    dual = np.linalg.solve(xa @ xa.T + alpha * np.eye(len(xa)), xb)  # (N, Db)
    return retrieval_accuracy(ta @ (xa.T @ dual), tb)


def ridge_phenotype(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                    test_x: np.ndarray, test_y: np.ndarray,
                    alphas: Sequence[float] = (1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6)) -> dict[str, float]:
    """A ridge regression of one phenotype on a feature against the mean guess.

    Args:
        train_x, val_x, test_x: (N, D) features of the three splits (standardised with the training
            statistics here); train_y, val_y, test_y: (N,) targets, NaN = missing (left out).
        alphas: penalties tried; the one with the lowest validation MAE is kept.

    Returns:
        ``alpha``, ``mae`` (test, the target's unit), ``mean_guess_mae`` (the training mean on the same
        test subjects), ``p`` (paired Wilcoxon signed-rank of the absolute errors,
        :func:`kmtr.analysis.stats.wilcoxon_paired` as ``kmtr eval`` uses it) and ``n_test``.
    """
    def known(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ok = np.isfinite(np.asarray(y, np.float64))
        return np.asarray(x, np.float64)[ok], np.asarray(y, np.float64)[ok]

    (xt, yt), (xv, yv), (xs, ys) = known(train_x, train_y), known(val_x, val_y), known(test_x, test_y)
    if len(yt) < 2 or not len(yv) or not len(ys):
        raise ValueError("need known targets in every split (two or more for training)")
    xt, xv, xs = _standardise(xt, xv, xs)
    mean = yt.mean()
    gram = xt @ xt.T
    fits = {}
    for alpha in alphas:
        weights = xt.T @ np.linalg.solve(gram + alpha * np.eye(len(xt)), yt - mean)
        fits[alpha] = (float(np.abs(xv @ weights + mean - yv).mean()), weights)
    alpha = min(fits, key=lambda a: fits[a][0])
    err = np.abs(xs @ fits[alpha][1] + mean - ys)
    base = np.abs(mean - ys)
    p = wilcoxon_paired(err, base, n_boot=0).p_value  # kmtr eval's test against the mean guess
    return {"alpha": float(alpha), "mae": float(err.mean()), "mean_guess_mae": float(base.mean()), "p": p,
            "n_test": len(ys)}


def _load(checkpoint: str | Path) -> tuple[Stage2Model, bool, TrainConfig]:
    """The encoders (and, from a stage-II checkpoint, its projectors), whether it was stage II, its config."""
    state, cfg = load_init(Path(checkpoint))
    if not any(k.startswith("image.") for k in state) or not any(k.startswith("kspace.") for k in state):
        raise ConfigError(f"{checkpoint} holds no image and k-space encoders: the probe reads a stage-I "
                          "(models both) or stage-II checkpoint")
    full = KSpaceDataset(cfg.data.data, "all", cfg.data.mask, cfg.data.frames, with_seg=False, with_labels=False)
    model = build_stage2_model(cfg, full.shape, full.info.view_ids, state, full.coils)
    stage2 = any(k.startswith("proj_image.") for k in state)
    if stage2:  # a stage-II checkpoint: its projectors too
        load_prefixed(model.proj_image, state, "proj_image")
        load_prefixed(model.proj_kspace, state, "proj_kspace")
    return model.eval(), stage2, cfg


@torch.no_grad()
def subject_features(model: Stage2Model, dataset: KSpaceDataset, pool: int = 8,
                     batch_size: int = 4) -> tuple[dict[str, np.ndarray], dict[str, SubjectMoments]]:
    """Per-subject features (N, ·) of ``dataset``: input-domain references and encoder layers.

    Keys: ``zero_filled_complex`` / ``full_complex`` (the image, frames averaged, ``pool``-pooled, real
    and imaginary parts), ``zero_filled_magnitude`` / ``full_magnitude``; for ``enc`` in (``kspace``,
    ``image``) and every encoder stage ``l`` (0 = embedded tokens, 1… = blocks, last = final norm):
    ``{enc}.{l}.cls`` (N, D) and ``{enc}.{l}.mean`` (N, D, the mean of the patch tokens the encoder
    saw); ``{enc}.projected`` (N, proj_dim), stage II's embeddings; ``kspace.tokens`` (N, L·D) the
    k-space encoder's output tokens on the full grid (:meth:`MaskedAutoencoder.encode_stages`: zeros
    where a token held no sampled line); ``phenotypes`` (N, P) when the dataset reads labels. Second
    dict: :class:`SubjectMoments` of the grid tokens ``{enc}.{l}.tokens`` (L·D values per subject,
    not kept).
    """
    out: dict[str, list[np.ndarray]] = {}
    moments: dict[str, SubjectMoments] = {}

    def put(key: str, value: torch.Tensor) -> None:
        out.setdefault(key, []).append(value.float().flatten(1).cpu().numpy())

    for raw in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        batch = prepare_batch(raw, "cpu")
        for name, image in (("zero_filled", zero_filled_image(batch)), ("full", batch["image"])):
            avg = image.mean(dim=2)  # (B, S, H, W) complex, frames averaged
            parts = torch.stack([avg.real, avg.imag], dim=2).flatten(1, 2)
            put(f"{name}_complex", F.avg_pool2d(parts, pool))
            put(f"{name}_magnitude", F.avg_pool2d(image.abs().mean(dim=2), pool))
        tokens_k, keep_k = model.kspace.encoder_inputs(batch["kspace"], batch["mask"])
        tokens_i = model.image.tokens(batch["image"])
        keep_i = torch.ones(tokens_i.shape[:2], dtype=torch.bool)
        projector = {"kspace": model.proj_kspace, "image": model.proj_image}
        for enc, mae, tokens, keep in (("kspace", model.kspace, tokens_k, keep_k), ("image", model.image, tokens_i, keep_i)):
            seen = keep.sum(dim=1, keepdim=True).clamp_min(1).to(tokens.dtype)
            for level, (cls, full) in enumerate(mae.encode_stages(tokens, keep)):
                put(f"{enc}.{level}.cls", cls)
                put(f"{enc}.{level}.mean", full.sum(dim=1) / seen)  # the mean of the tokens it saw
                moments.setdefault(f"{enc}.{level}.tokens", SubjectMoments()).add(full.float().cpu().numpy())
            put(f"{enc}.projected", projector[enc](cls))  # the last stage's class token: stage II's embedding
            if enc == "kspace":
                put("kspace.tokens", full)
        if "phenotypes" in raw:
            put("phenotypes", raw["phenotypes"])
    return {k: np.concatenate(v) for k, v in out.items()}, moments


def _phenotype_columns(dataset: KSpaceDataset, wanted: Sequence[str]) -> dict[str, int]:
    """``{column: index}`` of the phenotypes asked (a name matches the column it starts: ``LVEDV`` →
    ``LVEDV (mL)``). Raises ConfigError for a store without phenotypes or an unknown name."""
    if not wanted:
        return {}
    columns = list(dataset.info.phenotype_columns or []) if dataset.info.has_phenotypes else []
    if not columns:
        raise ConfigError("the store has no phenotypes (labels/phenotypes): build it with its segmentations")
    found = {}
    for name in wanted:
        hits = [i for i, c in enumerate(columns) if c == name or c.split(" (")[0] == name]
        if not hits:
            raise ConfigError(f"no phenotype {name!r} in the store; it has {', '.join(c.split(' (')[0] for c in columns)}")
        found[columns[hits[0]]] = hits[0]
    return found


def retrieval_probe(checkpoint: str | Path, pool: int = 8, alpha: float = 10.0,
                    held_out: Sequence[str] = ("validation", "test"),
                    phenotypes: Sequence[str] = ()) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The tables of the module docstring for a stage-I or stage-II checkpoint.

    Returns:
        ``layers``: one row per (encoder, stage) with the between-subject fraction of the class
        token, the patch tokens and their mean (training split); ``retrieval``: one row per feature
        pair (``from`` → ``to``) with held-out k-space → image (``top1``, ``top5``; ``a2b``) after a
        ridge map fitted on the training split, and the chance level; from a stage-II checkpoint the
        projections are also compared directly (cosine, no map: how stage II retrieves);
        ``phenotype``: one row per (feature, phenotype asked) with :func:`ridge_phenotype`'s figures
        (penalty chosen on ``held_out[0]``, evaluated on ``held_out[-1]``; empty when none asked).

    Raises:
        ConfigError: a checkpoint without both encoders, a phenotype the store does not have.
    """
    model, stage2, cfg = _load(checkpoint)

    def split(name: str) -> KSpaceDataset:
        return KSpaceDataset(cfg.data.data, name, cfg.data.mask, cfg.data.frames, with_seg=False,
                             with_labels=bool(phenotypes))

    train_ds = split(cfg.data.train_split)
    wanted = _phenotype_columns(train_ds, phenotypes)
    train, moments = subject_features(model, train_ds, pool)
    parts = {s: subject_features(model, split(s), pool)[0] for s in held_out}
    test = {k: np.concatenate([p[k] for p in parts.values()]) for k in train}
    depth = len(model.kspace.encoder.blocks)
    rows = []
    for enc in ("kspace", "image"):
        for level in range(depth + 2):
            stage = "embedded" if level == 0 else ("final norm" if level == depth + 1 else f"block {level}")
            rows.append({"encoder": enc, "stage": stage,
                         "cls": between_subject_fraction(train[f"{enc}.{level}.cls"]),
                         "tokens": moments[f"{enc}.{level}.tokens"].fraction(),
                         "mean": between_subject_fraction(train[f"{enc}.{level}.mean"])})
    layers = pd.DataFrame(rows).rename(columns={"cls": "class_token", "tokens": "patch_tokens", "mean": "mean_token"})
    last = depth + 1
    names = {f"{e}.{last}.{p}": f"{e} {w}" for e in ("kspace", "image")
             for p, w in (("cls", "class token"), ("mean", "mean token"))}
    names["kspace.tokens"] = "kspace patch tokens (all)"
    pairs = [("zero_filled_complex", "full_complex"), ("zero_filled_magnitude", "full_magnitude"),
             ("zero_filled_complex", "full_magnitude"), (f"kspace.{last}.cls", f"image.{last}.cls"),
             (f"kspace.{last}.mean", f"image.{last}.mean"), (f"kspace.{last}.cls", "full_complex"),
             ("kspace.tokens", "full_complex"), ("kspace.tokens", "full_magnitude")]
    n = len(next(iter(test.values())))
    rows = []
    for a, b in pairs:
        acc = ridge_retrieval(train[a], train[b], test[a], test[b], alpha)
        rows.append({"from": names.get(a, a), "to": names.get(b, b), "map": f"ridge α={alpha:g}",
                     "top1": acc["a2b_top1"], "top5": acc["a2b_top5"]})
    if stage2:
        acc = retrieval_accuracy(test["kspace.projected"], test["image.projected"])
        rows.append({"from": "kspace projected", "to": "image projected", "map": "none (stage II's cosine)",
                     "top1": acc["a2b_top1"], "top5": acc["a2b_top5"]})
    retrieval = pd.DataFrame(rows)
    retrieval["chance_top1"], retrieval["held_out"] = 1.0 / n, n
    rows = []
    val, evaluation = parts[held_out[0]], parts[held_out[-1]]
    for feature in ("zero_filled_magnitude", "zero_filled_complex", f"kspace.{last}.cls", f"kspace.{last}.mean",
                    "kspace.tokens"):
        for column, j in wanted.items():
            fit = ridge_phenotype(train[feature], train["phenotypes"][:, j], val[feature], val["phenotypes"][:, j],
                                  evaluation[feature], evaluation["phenotypes"][:, j])
            rows.append({"feature": names.get(feature, feature), "phenotype": column, **fit})
    return layers, retrieval, pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a stage-I or stage-II checkpoint (runs/<name>/stage2/last.pt, or its folder)")
    parser.add_argument("--pool", type=int, default=8, help="average pooling of the input-domain images (pixels)")
    parser.add_argument("--alpha", type=float, default=10.0, help="ridge penalty (standardised features)")
    parser.add_argument("--phenotypes", default="", help="comma-separated phenotypes to probe too (LVEDV,LVM)")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    checkpoint = checkpoint / "last.pt" if checkpoint.is_dir() else checkpoint
    if not checkpoint.is_file():
        parser.exit(2, f"error: no checkpoint at {checkpoint}\n")
    try:
        wanted = [p.strip() for p in args.phenotypes.split(",") if p.strip()]
        layers, retrieval, phenotype = retrieval_probe(checkpoint, args.pool, args.alpha, phenotypes=wanted)
    except (ConfigError, StoreError) as err:
        parser.exit(2, f"error: {err}\n")

    def fmt(v: float) -> str:
        return f"{v:.4f}"

    print("between-subject fraction (training split): variance across subjects / mean square")
    print(layers.to_string(index=False, float_format=fmt))
    print(f"\nheld-out retrieval ({int(retrieval['held_out'].iloc[0])} subjects), from → to")
    print(retrieval.drop(columns="held_out").to_string(index=False, float_format=fmt))
    if len(phenotype):
        print(f"\nphenotypes: ridge on the training split, penalty chosen on validation, test split "
              f"({int(phenotype['n_test'].iloc[0])} subjects) against the training mean; p: paired Wilcoxon")
        print(phenotype.drop(columns="n_test").to_string(index=False, float_format=fmt))


if __name__ == "__main__":
    main()
