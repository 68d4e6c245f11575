"""Classification of the selected diseases (``heads.diseases``): one logit each, unknown labels
(−1) left out, class imbalance weighted n_neg / n_pos from the training split
(``heads.balance = weighted``); decision thresholds chosen on validation; AUC-ROC per disease."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from kmtr.analysis import figures, metrics
from kmtr.analysis.comparison import TaskComparison, frames, paired_rows
from kmtr.analysis.predictions import Predictions
from kmtr.analysis.stats import bootstrap_ci, paired_bootstrap
from kmtr.errors import ConfigError
from kmtr.losses import masked_bce
from kmtr.models.heads import MultiHead
from kmtr.tasks.base import EvalContext, PooledTask, TruthSink

__all__ = ["BALANCE", "Classification", "compare_classification"]

#: ``heads.balance``: positive-class weight n_neg / n_pos in the loss, or none
BALANCE = ("weighted", "none")


class Classification(PooledTask):
    name = "classification"
    metric = "AUC"
    threshold_on_validation = True
    binary_targets = True

    def targets(self, cfg: Any, train_ds: Any) -> dict[str, Any]:
        info = train_ds.info
        if not info.has_diseases:
            raise ConfigError(f"task classification: {info.url} has no labels/diseases; build the store with a "
                              f"participant table (`kspace-sim build --labels --table ukbNNNN.csv`)")
        cols = list(info.disease_columns)
        wanted = cols if cfg.heads.diseases.strip() == "all" else [c.strip() for c in cfg.heads.diseases.split(",")
                                                                   if c.strip()]
        unknown = [c for c in wanted if c not in cols]
        if unknown:
            raise ConfigError(f"task classification: no disease column {unknown} in the store (it has {cols})")
        idx = [cols.index(c) for c in wanted]
        y = train_ds.split_labels("diseases")[:, idx].astype(np.int64)
        pos, neg = (y == 1).sum(axis=0), (y == 0).sum(axis=0)
        bad = [f"{c} ({p} positive, {q} negative)" for c, p, q in zip(wanted, pos, neg) if p == 0 or q == 0]
        if bad:
            raise ConfigError(f"task classification: the training split has no positive or no negative case for "
                              f"{'; '.join(bad)}; choose other diseases with --diseases")
        pw = (neg / pos).tolist() if cfg.heads.balance == "weighted" else None
        if cfg.heads.balance not in BALANCE:
            raise ConfigError(f"heads.balance must be weighted or none, not {cfg.heads.balance!r}")
        return {"out_dim": len(idx), "names": wanted, "columns": idx, "pos_weight": pw,
                "train_positives": pos.tolist(), "train_negatives": neg.tolist()}

    def build_head(self, net: Any, encoder: Any, in_dim: int, out_dim: int, heads: Any) -> torch.nn.Module:
        return MultiHead(in_dim, heads.head_hidden, out_dim)

    def register_targets(self, model: torch.nn.Module, targets: dict[str, Any], heads: Any) -> None:
        model.register_buffer("columns", torch.as_tensor(targets["columns"], dtype=torch.long))
        pw = targets.get("pos_weight")
        model.register_buffer("pos_weight", torch.as_tensor(pw, dtype=torch.float32) if pw is not None else None)

    def loss(self, model: Any, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_bce(out, batch["diseases"][:, model.columns], model.pos_weight)

    def predict(self, model: Any, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out.float())

    def split_targets(self, ds: Any, targets: dict[str, Any]) -> np.ndarray:
        return ds.split_labels("diseases")[:, targets["columns"]].astype(np.int64)

    def collect_truth(self, batch: dict[str, torch.Tensor], raw: dict[str, Any], ds: Any, model: Any,
                      keep: TruthSink) -> None:
        keep("diseases", batch["diseases"][:, model.columns])

    def compare(self, preds: dict[str, Predictions], targets: dict[str, Any], n_boot: int, seed: int
                ) -> TaskComparison:
        pos = np.asarray(targets["train_positives"], float)
        neg = np.asarray(targets["train_negatives"], float)
        return compare_classification(preds, targets["names"], pos / (pos + neg), n_boot, seed)

    def headline(self, comp: TaskComparison, phenotype: str, disease: str | None) -> str | None:
        rows = list(comp.values.index)
        if disease in rows:
            return disease
        # the first disease whose AUC is defined (the test split has both classes), else the first
        defined = [row for row in rows if np.isfinite(comp.values.loc[row].to_numpy(float)).all()]
        return (defined or rows)[0]

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        run, test, cfg = ctx.run, ctx.test, ctx.run.cfg
        val = ctx.predict(cfg.data.val_split or "validation")
        names = run.targets["names"]
        thresholds = np.array([
            metrics.choose_threshold(val.pred[:, j], val.truth["diseases"][:, j], cfg.heads.threshold)
            for j in range(len(names))
        ])
        df = metrics.classification_metrics(test.pred, test.truth["diseases"], thresholds, names, n_boot=ctx.n_boot,
                                            seed=ctx.seed)
        figures.roc_curves(test.pred, test.truth["diseases"], names, ctx.out / f"{ctx.tag}_roc.png")
        summary = pd.DataFrame({
            "disease": df["disease"], "n (pos)": [f"{n} ({p})" for n, p in zip(df["n"], df["n_pos"])],
            "AUC [95% CI]": [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(a) else "–"
                             for a, lo, hi in zip(df["auc"], df["auc_lo"], df["auc_hi"])],
            "AUC > 0.5 beyond CI": np.where(df["auc_lo"] > 0.5, "yes", "no"),
            "threshold (validation)": df["threshold"], "F1 @ val. threshold": df["f1_at_threshold"],
            "recall @ val. threshold": df["recall_at_threshold"],
            "precision @ val. threshold": df["precision_at_threshold"], "F1 @ 0.5": df["f1_at_0.5"],
            "recall @ 0.5": df["recall_at_0.5"], "precision @ 0.5": df["precision_at_0.5"], "AP": df["ap"],
        })
        return {"tables": {"classification": df}, "thresholds": thresholds, "summary": summary}


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def compare_classification(preds: dict[str, Predictions], names: list[str], prevalence: np.ndarray,
                           n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """AUC-ROC per disease; the mean guess predicts the training prevalence for everyone (AUC 0.5)."""
    labels = next(iter(preds.values())).truth["diseases"]
    probs = {m: p.pred for m, p in preds.items()}
    probs["mean_guess"] = np.broadcast_to(np.asarray(prevalence, float)[None], labels.shape).copy()
    cells = {}
    for m, prob in probs.items():
        for j in range(len(names)):
            known = labels[:, j] >= 0
            cells[(j, m)] = bootstrap_ci(_auc, labels[known, j], prob[known, j], n_boot=n_boot, seed=seed)

    def test(j: int, m: str) -> Any:
        known = labels[:, j] >= 0
        return paired_bootstrap(_auc, labels[known, j], probs["kmtr"][known, j], probs[m][known, j], n_boot=n_boot,
                                seed=seed)

    v, lo, hi = frames(names, list(probs), cells)
    return TaskComparison("classification", "AUC-ROC", True, v, lo, hi, paired_rows(names, list(probs), test))
