"""One task's comparison of methods on the same test subjects: values, 95 % intervals and paired
tests of k-MTR against each other method (rows × methods), and the helpers that fill it.

Columns are method names as the task computed them; :func:`relabel` gives them their names in
tables (the registry's labels, :func:`kmtr.methods.method_label`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from kmtr.analysis.stats import bootstrap_ci
from kmtr.analysis.tables import comparison_table

__all__ = ["MEAN_GUESS", "VARIANT_SEP", "TaskComparison", "frames", "mean_frames", "paired_rows", "relabel"]

MEAN_GUESS = "mean guess"
#: the method whose paired differences against every other method are tested
REFERENCE_METHOD = "kmtr"
#: separates a method from its prediction variant in a column name: ``<method>:<variant>``
VARIANT_SEP = ":"


@dataclass
class TaskComparison:
    """Values, 95 % intervals and paired tests of every method on one task (rows × methods)."""

    task: str
    metric: str
    higher_is_better: bool
    values: pd.DataFrame
    lo: pd.DataFrame
    hi: pd.DataFrame
    paired: pd.DataFrame  # long: row, method, diff (k-MTR − method), lo, hi, p_value, n

    def markdown(self) -> str:
        reference = MEAN_GUESS if MEAN_GUESS in self.values.columns else None
        table = comparison_table(self.values, self.lo, self.hi, self.higher_is_better, reference=reference)
        return table.markdown()


def paired_rows(rows: Sequence[str], methods: Sequence[str], test: Callable[[int, str], Any]) -> pd.DataFrame:
    """Long table of ``test(j, method)`` (a paired test of k-MTR against ``method`` on row j) for
    every row and every method but k-MTR itself; empty when k-MTR is not among ``methods``."""
    if REFERENCE_METHOD not in methods:
        return pd.DataFrame()
    out = []
    for j, row in enumerate(rows):
        for m in methods:
            if m == REFERENCE_METHOD:
                continue
            r = test(j, m)
            out.append({"row": row, "method": m, "diff": r.diff, "lo": r.lo, "hi": r.hi, "p_value": r.p_value,
                        "n": r.n})
    return pd.DataFrame(out)


def frames(rows: Sequence[str], cols: list[str], cells: dict[tuple[int, str], tuple[float, float, float]]
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(values, lo, hi) tables rows × cols from ``cells[(row index, col)] = (value, lo, hi)``."""
    v, lo, hi = (pd.DataFrame(np.nan, index=list(rows), columns=cols) for _ in range(3))
    for (j, col), (a, b, c) in cells.items():
        v.iloc[j, cols.index(col)], lo.iloc[j, cols.index(col)], hi.iloc[j, cols.index(col)] = a, b, c
    return v, lo, hi


def mean_frames(rows: Sequence[str], per_subject: dict[str, np.ndarray], n_boot: int, seed: int
                ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(values, lo, hi) rows × methods of the mean over subjects (finite values only) with its
    bootstrap 95 % interval; ``per_subject[method]`` is (N, len(rows)); NaN where no value is finite."""
    cells = {}
    for m, x in per_subject.items():
        for j in range(len(rows)):
            finite = x[:, j][np.isfinite(x[:, j])]
            cells[(j, m)] = bootstrap_ci(np.mean, finite, n_boot=n_boot, seed=seed) if len(finite) else (np.nan,) * 3
    return frames(rows, list(per_subject), cells)


def relabel(comp: TaskComparison, label: Callable[[str], str]) -> TaskComparison:
    """``comp`` with every method name (columns, the paired tests' ``method``) replaced by ``label(name)``."""
    names = {c: label(c) for c in comp.values.columns}
    paired = comp.paired.assign(method=comp.paired["method"].map(label)) if not comp.paired.empty else comp.paired
    return replace(comp, values=comp.values.rename(columns=names), lo=comp.lo.rename(columns=names),
                   hi=comp.hi.rename(columns=names), paired=paired)
