"""What every stage-III task provides (:class:`Task`), the context its report section reads
(:class:`EvalContext`), and the pooled-head behaviour regression and classification share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from kmtr.analysis.comparison import TaskComparison
from kmtr.analysis.predictions import Predictions

__all__ = ["EvalContext", "PooledTask", "Task", "TruthSink"]

#: ``keep(name, tensor)`` appends one batch of a ground-truth array to the split's truth
TruthSink = Callable[[str, torch.Tensor], None]


@dataclass
class EvalContext:
    """What a task's report section needs: the run (``kmtr.eval.predict.TrainedRun``), its
    predictions on the evaluated split, where figures go, and how to predict another split."""

    run: Any
    test: Predictions
    out: Path
    tag: str  # file name prefix: <method>-<task>
    predict: Callable[[str], Predictions]  # split name → predictions of the same run (same limit)
    n_boot: int
    seed: int


class Task:
    """One stage-III task: its targets, head, loss, prediction, ground truth, metrics and headline row.

    The network it trains is built by a method of :mod:`kmtr.methods`; :class:`kmtr.train.task_net.TaskModel`
    wraps it and asks the task for the loss and the prediction, and
    :class:`kmtr.train.task_net.KSpaceTaskNet` asks it for the head on the k-space encoder.
    """

    name: ClassVar[str]
    pooled: ClassVar[bool] = False  # the head reads one feature vector per subject (regression, classification)
    with_seg: ClassVar[bool] = False  # the dataset must load the segmentations
    metric: ClassVar[str]  # the headline metric, as plotted against R
    metric_higher_is_better: ClassVar[bool] = True
    threshold_on_validation: ClassVar[bool] = False  # the benchmark also predicts the validation split

    # --- training -------------------------------------------------------------------------------
    def targets(self, cfg: Any, train_ds: Any) -> dict[str, Any]:
        """Check the store has the task's labels; ``{"out_dim", "names", …}`` with training-split statistics.

        Raises:
            ConfigError: the labels are absent or unusable.
        """
        raise NotImplementedError

    def build_head(self, net: nn.Module, encoder: Any, in_dim: int, out_dim: int, heads: Any) -> nn.Module:
        """The head of :class:`kmtr.train.task_net.KSpaceTaskNet` on ``encoder`` (width ``in_dim`` when pooled)."""
        raise NotImplementedError

    def run_head(self, net: Any, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``KSpaceTaskNet.forward``: undersampled k-space → the task's raw output."""
        raise NotImplementedError

    def register_targets(self, model: nn.Module, targets: dict[str, Any], heads: Any) -> None:
        """Buffers (target statistics) and loss modules the task's :class:`TaskModel` carries."""

    def training_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What :meth:`loss` reads, in training and validation (the network's output; a task may ask
        the network for only the part its loss uses)."""
        return model.outputs(batch)

    def loss(self, model: Any, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def prediction_outputs(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The output :meth:`predict` turns into the reporting form (the network's output; a task
        may average it over test-time transformations)."""
        return model.outputs(batch)

    def predict(self, model: Any, out: torch.Tensor) -> torch.Tensor:
        """Raw output → reporting form (see :meth:`kmtr.train.task_net.TaskModel.predict`)."""
        return out

    # --- prediction -----------------------------------------------------------------------------
    def prediction_array(self, pred: torch.Tensor) -> np.ndarray:
        """One batch of :meth:`predict` output as stored in :class:`Predictions`."""
        return pred.float().cpu().numpy()

    def collect_truth(self, batch: dict[str, torch.Tensor], raw: dict[str, Any], ds: Any, model: Any,
                      keep: TruthSink) -> None:
        """Append this batch's ground truth (and reference arrays) with ``keep``."""
        raise NotImplementedError

    def prediction_variants(self, batch: dict[str, torch.Tensor], pred: torch.Tensor) -> dict[str, torch.Tensor]:
        """Other forms of one batch's :meth:`predict` output that the report shows beside it (name →
        the same form as ``pred``, stored with :meth:`prediction_array`); none by default."""
        return {}

    # --- evaluation -----------------------------------------------------------------------------
    def compare(self, preds: dict[str, Predictions], targets: dict[str, Any], n_boot: int, seed: int
                ) -> TaskComparison:
        """Every method's metric per row on the same subjects, columns keyed by method name."""
        raise NotImplementedError

    def headline(self, comp: TaskComparison, phenotype: str, disease: str | None) -> str | None:
        """The row plotted against R."""
        rows = list(comp.values.index)
        return rows[0] if rows else None

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """The run's report section: ``{"tables": {name: DataFrame}, "summary": DataFrame, …}``;
        writes its figures into ``ctx.out``."""
        raise NotImplementedError


class PooledTask(Task):
    """Regression and classification: the head reads the pooled encoder output (and, for the
    ``kmtr_spectrum`` method, the spectrum beside it)."""

    pooled = True
    binary_targets: ClassVar[bool] = False  # 0/1 labels (logistic fits) rather than continuous values

    def run_head(self, net: Any, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        enc = net.encoder
        tokens, keep = enc.encoder_inputs(kspace, mask)
        features = net.pooled(*enc.encode(tokens, keep))
        if net.spectrum is not None:
            features = torch.cat([features, net.spectrum(kspace, mask).to(features.dtype)], dim=1)
        return net.head(features)

    def split_targets(self, ds: Any, targets: dict[str, Any]) -> np.ndarray:
        """The split's targets as the closed-form baselines fit them (:mod:`kmtr.train.spectrum_ridge`)."""
        raise NotImplementedError
