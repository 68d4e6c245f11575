"""Regression of the store's phenotypes (N, P): targets standardised with training-split means
and SDs (kept in the model), missing values (NaN) left out of the loss; predictions and metrics
in original units (MAE beside the training-mean guess)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kmtr.analysis import figures, metrics
from kmtr.analysis.comparison import TaskComparison, mean_frames, paired_rows
from kmtr.analysis.predictions import Predictions
from kmtr.analysis.stats import wilcoxon_paired
from kmtr.analysis.summaries import regression_summary
from kmtr.errors import ConfigError
from kmtr.losses import masked_mse
from kmtr.models.heads import MLPHead
from kmtr.tasks.base import EvalContext, PooledTask, TruthSink

__all__ = ["Regression", "compare_regression"]


class Regression(PooledTask):
    name = "regression"
    metric = "MAE"
    metric_higher_is_better = False

    def targets(self, cfg: Any, train_ds: Any) -> dict[str, Any]:
        info = train_ds.info
        if not info.has_phenotypes:
            raise ConfigError(f"task regression: {info.url} has no labels/phenotypes; build the store with labels "
                              f"(`kspace-sim build --labels` from subjects with seg_sa / seg_la_* segmentations)")
        y = train_ds.split_labels("phenotypes").astype(np.float64)
        n = np.isfinite(y).sum(axis=0)
        empty = [info.phenotype_columns[j] if j < len(info.phenotype_columns) else str(j) for j in np.flatnonzero(n == 0)]
        if empty:
            raise ConfigError(f"task regression: no training subject has a value for {', '.join(empty)}")
        mean = np.nanmean(y, axis=0)
        std = np.nanstd(y, axis=0)
        std = np.where(std > 0, std, 1.0)
        return {"out_dim": y.shape[1], "names": list(info.phenotype_columns), "units": list(info.phenotype_units),
                "mean": mean.tolist(), "std": std.tolist()}

    def build_head(self, net: Any, encoder: Any, in_dim: int, out_dim: int, heads: Any) -> torch.nn.Module:
        return MLPHead(in_dim, heads.head_hidden, out_dim)

    def register_targets(self, model: torch.nn.Module, targets: dict[str, Any], heads: Any) -> None:
        model.register_buffer("target_mean", torch.as_tensor(targets["mean"], dtype=torch.float32))
        model.register_buffer("target_std", torch.as_tensor(targets["std"], dtype=torch.float32))

    def loss(self, model: Any, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        z = (batch["phenotypes"].float() - model.target_mean) / model.target_std
        return masked_mse(out, z)

    def predict(self, model: Any, out: torch.Tensor) -> torch.Tensor:
        return out.float() * model.target_std + model.target_mean

    def split_targets(self, ds: Any, targets: dict[str, Any]) -> np.ndarray:
        mu, sd = np.asarray(targets["mean"]), np.asarray(targets["std"])
        return (ds.split_labels("phenotypes").astype(np.float64) - mu) / sd

    def collect_truth(self, batch: dict[str, torch.Tensor], raw: dict[str, Any], ds: Any, model: Any,
                      keep: TruthSink) -> None:
        keep("phenotypes", batch["phenotypes"])

    def compare(self, preds: dict[str, Predictions], targets: dict[str, Any], n_boot: int, seed: int
                ) -> TaskComparison:
        return compare_regression(preds, targets["names"], np.asarray(targets["mean"]), n_boot, seed)

    def headline(self, comp: TaskComparison, phenotype: str, disease: str | None) -> str | None:
        rows = list(comp.values.index)
        return phenotype if phenotype in rows else rows[0]

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        run, test = ctx.run, ctx.test
        names = run.targets["names"]
        units = run.targets.get("units") or [""] * len(names)
        df = metrics.regression_metrics(test.pred, test.truth["phenotypes"], names, np.asarray(run.targets["mean"]),
                                        units=units, n_boot=ctx.n_boot, seed=ctx.seed)
        figures.scatter_pred_true(test.pred, test.truth["phenotypes"], names, units, ctx.out / f"{ctx.tag}_scatter.png")
        return {"tables": {"regression": df}, "summary": regression_summary(df)}


def compare_regression(preds: dict[str, Predictions], names: list[str], train_mean: np.ndarray,
                       n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """MAE per phenotype (original units) of each method and of the training-mean guess (``mean_guess``)."""
    truth = next(iter(preds.values())).truth["phenotypes"]
    errors = {m: np.abs(p.pred - truth) for m, p in preds.items()}
    errors["mean_guess"] = np.abs(np.asarray(train_mean)[None] - truth)
    v, lo, hi = mean_frames(names, errors, n_boot, seed)
    paired = paired_rows(names, list(errors), lambda j, m: wilcoxon_paired(errors["kmtr"][:, j], errors[m][:, j],
                                                                           n_boot=n_boot, seed=seed))
    return TaskComparison("regression", "MAE", False, v, lo, hi, paired)
