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

    python -m kmtr.eval.retrieval_probe runs/kmtr/stage1/last.pt [--pool 8] [--alpha 10]
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
from kmtr.config import TrainConfig
from kmtr.data import KSpaceDataset, prepare_batch, zero_filled_image
from kmtr.errors import ConfigError
from kmtr.models.mae import MaskedAutoencoder
from kmtr.store import StoreError
from kmtr.train.init import load_init, load_prefixed
from kmtr.train.stage2 import Stage2Model, build_stage2_model

__all__ = ["SubjectMoments", "between_subject_fraction", "retrieval_probe", "ridge_retrieval", "subject_features"]


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


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


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
    xa, ta = _standardise(np.asarray(train_a, np.float64), np.asarray(test_a, np.float64))
    xb, tb = _standardise(np.asarray(train_b, np.float64), np.asarray(test_b, np.float64))
    dual = np.linalg.solve(xa @ xa.T + alpha * np.eye(len(xa)), xb)  # (N, Db)
    return retrieval_accuracy(ta @ (xa.T @ dual), tb)


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


def _layers(mae: MaskedAutoencoder, tokens: torch.Tensor, keep: torch.Tensor) -> list[torch.Tensor]:
    """Every stage of the encoder (B, 1 + L, D): the embedded tokens, each block's output, the final norm."""
    x, key_valid, order, _ = mae._pack(tokens, keep)
    out, blocks = mae.encoder(x, key_valid, return_layers=range(1, len(mae.encoder.blocks) + 1),
                              bias=mae._bias(order, key_valid))
    return [x, *blocks, out]


@torch.no_grad()
def subject_features(model: Stage2Model, dataset: KSpaceDataset, pool: int = 8,
                     batch_size: int = 4) -> tuple[dict[str, np.ndarray], dict[str, SubjectMoments]]:
    """Per-subject features (N, ·) of ``dataset``: input-domain references and encoder layers.

    Keys: ``zero_filled_complex`` / ``full_complex`` (the image, frames averaged, ``pool``-pooled, real
    and imaginary parts), ``zero_filled_magnitude`` / ``full_magnitude``; for ``enc`` in (``kspace``,
    ``image``) and every encoder stage ``l`` (0 = embedded tokens, 1… = blocks, last = final norm):
    ``{enc}.{l}.cls`` (N, D), ``{enc}.{l}.mean`` (N, D, the mean of the patch tokens) and
    ``{enc}.projected`` (N, proj_dim), stage II's embeddings; ``kspace.tokens`` (N, L·D) all patch
    tokens of the k-space encoder's output. Second dict: :class:`SubjectMoments` of the patch tokens
    ``{enc}.{l}.tokens`` (L·D values per subject, not kept).
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
        for enc, mae, tokens, keep in (("kspace", model.kspace, tokens_k, keep_k), ("image", model.image, tokens_i, keep_i)):
            for level, x in enumerate(_layers(mae, tokens, keep)):
                put(f"{enc}.{level}.cls", x[:, 0])
                put(f"{enc}.{level}.mean", x[:, 1:].mean(dim=1))
                moments.setdefault(f"{enc}.{level}.tokens", SubjectMoments()).add(x[:, 1:].float().cpu().numpy())
            if enc == "kspace":
                put("kspace.tokens", x[:, 1:])
        z_i, z_k = model.embed(batch)
        put("image.projected", z_i)
        put("kspace.projected", z_k)
    return {k: np.concatenate(v) for k, v in out.items()}, moments


def retrieval_probe(checkpoint: str | Path, pool: int = 8, alpha: float = 10.0,
                    held_out: Sequence[str] = ("validation", "test")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables of the module docstring for a stage-I or stage-II checkpoint.

    Returns:
        ``layers``: one row per (encoder, stage) with the between-subject fraction of the class
        token, the patch tokens and their mean (training split); ``retrieval``: one row per feature
        pair (``from`` → ``to``) with held-out k-space → image (``top1``, ``top5``; ``a2b``) after a
        ridge map fitted on the training split, and the chance level; from a stage-II checkpoint the
        projections are also compared directly (cosine, no map: how stage II retrieves).
    """
    model, stage2, cfg = _load(checkpoint)

    def split(name: str) -> KSpaceDataset:
        return KSpaceDataset(cfg.data.data, name, cfg.data.mask, cfg.data.frames, with_seg=False, with_labels=False)

    train, moments = subject_features(model, split(cfg.data.train_split), pool)
    parts = [subject_features(model, split(s), pool)[0] for s in held_out]
    test = {k: np.concatenate([p[k] for p in parts]) for k in train}
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
    return layers, retrieval


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a stage-I or stage-II checkpoint (runs/<name>/stage2/last.pt, or its folder)")
    parser.add_argument("--pool", type=int, default=8, help="average pooling of the input-domain images (pixels)")
    parser.add_argument("--alpha", type=float, default=10.0, help="ridge penalty (standardised features)")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    checkpoint = checkpoint / "last.pt" if checkpoint.is_dir() else checkpoint
    if not checkpoint.is_file():
        parser.exit(2, f"error: no checkpoint at {checkpoint}\n")
    try:
        layers, retrieval = retrieval_probe(checkpoint, args.pool, args.alpha)
    except (ConfigError, StoreError) as err:
        parser.exit(2, f"error: {err}\n")

    def fmt(v: float) -> str:
        return f"{v:.4f}"

    print("between-subject fraction (training split): variance across subjects / mean square")
    print(layers.to_string(index=False, float_format=fmt))
    print(f"\nheld-out retrieval ({int(retrieval['held_out'].iloc[0])} subjects), from → to")
    print(retrieval.drop(columns="held_out").to_string(index=False, float_format=fmt))


if __name__ == "__main__":
    main()
