"""Cohort summary of a label table: phenotype mean ± SD and missing counts, disease prevalence
beside the k-MTR paper's (REFERENCES.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from kspace_sim.labels.codes import DiseaseDefinition
from kspace_sim.labels.phenotypes import PHENOTYPE_COLUMNS

__all__ = ["SummaryRow", "summary_table", "render_summary"]


@dataclass
class SummaryRow:
    """One line of the summary.

    Attributes:
        name: phenotype column (with unit) or disease name; kind: ``'phenotype'`` or ``'disease'``.
        n: subjects with a value (phenotype) or a known label (disease).
        missing: NaN phenotypes, or −1 (unknown / absent) disease labels.
        mean, sd: phenotype mean and sample SD (ddof 1) over present values; NaN for diseases.
        prevalence: % of known labels that are 1 (diseases), NaN for phenotypes.
        paper_prevalence: the paper cohort's %, or None.
    """

    name: str
    kind: str
    n: int
    missing: int
    mean: float = float("nan")
    sd: float = float("nan")
    prevalence: float = float("nan")
    paper_prevalence: float | None = None


def summary_table(df: pd.DataFrame, diseases: Sequence[DiseaseDefinition] = ()) -> list[SummaryRow]:
    """Summary rows of a label table (see :func:`kspace_sim.labels.label_table.assemble_label_table`).

    Args:
        df: the table; phenotype columns as in :data:`PHENOTYPE_COLUMNS`, int8 disease columns.
        diseases: definitions of the disease columns to summarise (their ``paper_prevalence``).
    """
    rows: list[SummaryRow] = []
    for col in PHENOTYPE_COLUMNS:
        if col not in df:
            continue
        v = df[col].to_numpy(dtype=np.float64)
        ok = v[np.isfinite(v)]
        rows.append(
            SummaryRow(
                col, "phenotype", int(ok.size), int(v.size - ok.size),
                mean=float(ok.mean()) if ok.size else float("nan"),
                sd=float(ok.std(ddof=1)) if ok.size > 1 else float("nan"),
            )
        )
    for d in diseases:
        if d.name not in df:
            continue
        lab = df[d.name].to_numpy()
        known = lab[lab >= 0]
        rows.append(
            SummaryRow(
                d.name, "disease", int(known.size), int(lab.size - known.size),
                prevalence=100.0 * float((known == 1).mean()) if known.size else float("nan"),
                paper_prevalence=d.paper_prevalence,
            )
        )
    return rows


def render_summary(rows: Sequence[SummaryRow], title: str = "labels") -> "rich.table.Table":  # noqa: F821
    """A rich table of the summary rows (phenotypes first, then diseases)."""
    from rich.table import Table

    def fmt(x: float, spec: str = ".1f") -> str:
        return "—" if x is None or not np.isfinite(x) else format(x, spec)

    t = Table(title=title)
    for name, justify in (("label", "left"), ("n", "right"), ("missing", "right"), ("mean ± SD / prevalence", "right"), ("paper", "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        if r.kind == "phenotype":
            value = f"{fmt(r.mean)} ± {fmt(r.sd)}"
            paper = ""
        else:
            value = f"{fmt(r.prevalence)} %"
            paper = "—" if r.paper_prevalence is None else f"{r.paper_prevalence:.1f} %"
        t.add_row(r.name, str(r.n), str(r.missing), value, paper)
    return t
