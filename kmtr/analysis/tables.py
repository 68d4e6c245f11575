"""Method-comparison tables: rows = phenotypes / diseases / classes, columns = methods; the best
value per row in bold and, optionally, a dagger on cells worse than a reference column (e.g. the
mean guess)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

__all__ = ["ComparisonTable", "comparison_table"]

DAGGER = "†"


@dataclass
class ComparisonTable:
    """A values table (rows × methods) with optional 95 % intervals, per-row direction and reference.

    Use ``comparison_table`` to build one.
    """

    values: pd.DataFrame
    lo: pd.DataFrame | None
    hi: pd.DataFrame | None
    higher_is_better: pd.Series  # (rows,) bool
    fmt: str = "{:.3g}"
    reference: str | None = None

    def best(self) -> pd.DataFrame:
        """(rows × methods) bool: the best finite value(s) of each row (ties all True; NaN never)."""
        out = pd.DataFrame(False, index=self.values.index, columns=self.values.columns)
        for r, row in enumerate(self.values.itertuples(index=False)):
            v = np.asarray(row, dtype=float)
            finite = np.isfinite(v)
            if not finite.any():
                continue
            target = np.max(v[finite]) if self.higher_is_better.iloc[r] else np.min(v[finite])
            out.iloc[r] = finite & np.isclose(v, target, rtol=1e-12, atol=0.0)
        return out

    def worse_than_reference(self) -> pd.DataFrame:
        """(rows × methods) bool: cells worse than the reference column of the same row (a lower
        value where higher is better, a higher one where lower is better); all False without a
        reference; the reference column itself and NaN cells are never marked."""
        out = pd.DataFrame(False, index=self.values.index, columns=self.values.columns)
        if self.reference is None:
            return out
        ref = self.values[self.reference].to_numpy(dtype=float)
        higher = self.higher_is_better.to_numpy(dtype=bool)
        for m in self.values.columns:
            if m == self.reference:
                continue
            v = self.values[m].to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                worse = np.where(higher, v < ref, v > ref)
            out[m] = worse & np.isfinite(v) & np.isfinite(ref)
        return out

    def _num(self, x: float) -> str:
        return "–" if not np.isfinite(x) else self.fmt.format(x)

    def _cell(self, row: object, method: str, best: bool, worse: bool) -> str:
        v = float(self.values.at[row, method])
        if not np.isfinite(v):
            return "–"
        text = self._num(v)
        if self.lo is not None and self.hi is not None:
            lo, hi = float(self.lo.at[row, method]), float(self.hi.at[row, method])
            if np.isfinite(lo) or np.isfinite(hi):
                text += f" [{self._num(lo)}, {self._num(hi)}]"
        if best:
            text = f"**{text}**"
        return text + (DAGGER if worse else "")

    def cells(self) -> pd.DataFrame:
        """(rows × methods) cell texts: ``value [lo, hi]`` ("–" for NaN), in bold when best,
        followed by "†" when worse than the reference."""
        best, worse = self.best(), self.worse_than_reference()
        return pd.DataFrame([[self._cell(r, m, bool(best.at[r, m]), bool(worse.at[r, m])) for m in self.values.columns]
                             for r in self.values.index], index=self.values.index, columns=self.values.columns)

    def markdown(self) -> str:
        """GitHub Markdown table: first column the row names, one column per method."""
        cells = self.cells()
        first = str(self.values.index.name or "")
        lines = ["| " + " | ".join([first, *map(str, self.values.columns)]) + " |",
                 "|" + "|".join(["---"] + [":---:"] * len(self.values.columns)) + "|"]
        lines += ["| " + " | ".join([str(r), *cells.loc[r].tolist()]) + " |" for r in self.values.index]
        return "\n".join(lines)

    def frame(self) -> pd.DataFrame:
        """Long (tidy) table: ``row, method, value, lo, hi, best, worse_than_reference``."""
        best, worse = self.best(), self.worse_than_reference()
        recs = []
        for row in self.values.index:
            for m in self.values.columns:
                recs.append({
                    "row": row, "method": m, "value": float(self.values.at[row, m]),
                    "lo": float(self.lo.at[row, m]) if self.lo is not None else float("nan"),
                    "hi": float(self.hi.at[row, m]) if self.hi is not None else float("nan"),
                    "higher_is_better": bool(self.higher_is_better.at[row]),
                    "best": bool(best.at[row, m]), "worse_than_reference": bool(worse.at[row, m]),
                })
        return pd.DataFrame(recs)

    def to_csv(self, path: str | Path) -> Path:
        """Write ``frame()`` as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.frame().to_csv(path, index=False)
        return path


def comparison_table(values: pd.DataFrame, lo: pd.DataFrame | None = None, hi: pd.DataFrame | None = None,
                     higher_is_better: bool | Mapping[object, bool] | pd.Series = True, fmt: str = "{:.3g}",
                     reference: str | None = None) -> ComparisonTable:
    """Build a comparison table.

    Args:
        values: rows = phenotypes / diseases (index = row names), columns = methods; metric values
            in the row's unit (e.g. MAE in mL, AUC).
        lo, hi: same-shaped lower / upper 95 % interval bounds (optional, both or neither).
        higher_is_better: one direction for all rows, or a per-row mapping / Series (row name → bool;
            rows missing from it default to True).
        fmt: format of each number.
        reference: a column of ``values`` (e.g. ``"mean guess"``); cells worse than it get a "†".

    Raises:
        ValueError: mismatched shapes or an unknown reference column.
    """
    values = values.astype(float)
    for name, other in (("lo", lo), ("hi", hi)):
        if other is not None and (other.shape != values.shape or not other.index.equals(values.index)
                                  or not other.columns.equals(values.columns)):
            raise ValueError(f"{name} must have the same rows and columns as values")
    if (lo is None) != (hi is None):
        raise ValueError("give both lo and hi, or neither")
    if reference is not None and reference not in values.columns:
        raise ValueError(f"reference column {reference!r} not in {list(values.columns)}")
    if isinstance(higher_is_better, (bool, np.bool_)):
        direction = pd.Series(bool(higher_is_better), index=values.index)
    else:
        mapping = dict(higher_is_better.items()) if isinstance(higher_is_better, pd.Series) else dict(higher_is_better)
        direction = pd.Series([bool(mapping.get(r, True)) for r in values.index], index=values.index)
    return ComparisonTable(values, None if lo is None else lo.astype(float), None if hi is None else hi.astype(float),
                           direction, fmt, reference)
