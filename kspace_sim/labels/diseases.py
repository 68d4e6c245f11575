"""Disease labels from a UK Biobank participant table (legacy or research-platform export).

The table is read with Dask (only the needed columns, in blocks of ``blocksize`` bytes, the
threaded scheduler), each block is reduced to the requested participants' labels at once, so
memory stays at a few blocks whatever the table size.

Rules (REFERENCES.md, codes in :mod:`kspace_sim.labels.codes`):

- an ICD-10 disease is positive when one of its codes is among the participant's field-41270
  codes. Policy ``any``: whenever diagnosed. Policy ``prevalent``: only codes whose date (field
  41280, same array index) is on or before the imaging visit (field 53, instance 2); a matching
  code whose date or visit date is unknown (missing, unparseable, or the UK Biobank placeholders
  1900-01-01 / 2037-07-07) makes the label −1 (unknown) unless another code proves it.
- a self-report disease (high blood pressure) is positive when field 6150 at the imaging visit
  holds value 4 (any array item; list cells and the coding's text labels accepted), or field
  2966 at the imaging visit holds any value. It is, by definition, prevalent at the visit.
- participants absent from the table: −1 for every disease. Self-report fields the table lacks
  are reported; a label with no ICD-10 codes and none of its self-report fields is −1. Field
  41270 itself is required.

Malformed codes (not of the form letter, two digits, up to two more characters, after removing
a dot) and unparseable dates are counted in the report and ignored.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from kspace_sim.labels.codes import ICD10_PATTERN, DiseaseDefinition, load_disease_codes
from kspace_sim.labels.ukb_table import TableError, TableHeader, read_header

__all__ = ["POLICIES", "DiseaseLabels", "TableReport", "TableError", "check_table", "disease_labels", "normalise_code"]

POLICIES = ("any", "prevalent")
ICD10_FIELD, DATE_FIELD, VISIT_FIELD, IMAGING_INSTANCE = 41270, 41280, 53, 2
# Text labels of the codings of self-report fields, for exports with labels instead of values.
CODING_LABELS: dict[int, dict[str, int]] = {
    6150: {
        "heart attack": 1,
        "angina": 2,
        "stroke": 3,
        "high blood pressure": 4,
        "none of the above": -7,
        "prefer not to answer": -3,
    }
}
_UNKNOWN_DATES = {"1900-01-01", "2037-07-07"}
_NAT = np.iinfo(np.int64).min  # dates are held as int64 days; this marks "unknown"
_STRIP = " \t\"'[]"


@dataclass
class TableReport:
    """What reading the table found.

    Attributes:
        path: the table; format: ``'legacy'`` or ``'rap'``; policy: the date policy.
        rows_read: data rows in the file; columns_read / columns_total: columns parsed / present.
        subjects_requested / subjects_found / subjects_absent: participants asked for, found, not found.
        duplicate_rows: extra rows for an id already seen (labels combined by maximum).
        malformed_codes: non-empty 41270 items that are not ICD-10 codes (requested rows);
            malformed_examples: up to 5 of them.
        malformed_dates: non-empty 41280 / 53 cells that are not dates (requested rows).
        undated_matches: disease codes whose date or visit date is unknown (matter for ``prevalent``).
        missing_fields: self-report fields the table lacks (a label left with none of its
            fields, and no ICD-10 codes, is −1).
        seconds: wall time.
    """

    path: str
    format: str
    policy: str
    rows_read: int = 0
    columns_read: int = 0
    columns_total: int = 0
    subjects_requested: int = 0
    subjects_found: int = 0
    subjects_absent: int = 0
    duplicate_rows: int = 0
    malformed_codes: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    malformed_dates: int = 0
    undated_matches: int = 0
    missing_fields: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class DiseaseLabels:
    """``labels``: DataFrame indexed by subject id (``subject_id``), one int8 column per disease
    (1 / 0, −1 unknown); ``report``: :class:`TableReport`; ``diseases``: the definitions used."""

    labels: pd.DataFrame
    report: TableReport
    diseases: list[DiseaseDefinition]


def normalise_code(raw: str) -> str | None:
    """One 41270 item → the ICD-10 code without dot (``' "I25.1 Atherosclerotic" ' -> 'I251'``),
    or None when it is not a code."""
    s = str(raw).strip(_STRIP)
    if not s:
        return None
    s = s.split(None, 1)[0].upper().replace(".", "")
    return s if ICD10_PATTERN.fullmatch(s) else None


def split_list_cell(text: str) -> list[str]:
    """A multi-valued cell → its items, order kept: ``'a|b'`` (coded labels, which may contain
    commas) splits on ``|`` only; ``'[a, b]'`` / ``'a,b'`` on commas. Empty items are dropped."""
    s = str(text).strip()
    parts = s.split("|") if "|" in s else s.strip("[]").split(",")
    return [p for p in parts if p.strip(_STRIP)]


def _parse_date(raw: Any) -> tuple[int, bool]:
    """A date cell → (days since 1970-01-01 or ``_NAT``, malformed?)."""
    s = str(raw).strip()[:10]
    if s in _UNKNOWN_DATES:
        return _NAT, False
    try:
        return (_dt.date.fromisoformat(s) - _dt.date(1970, 1, 1)).days, False
    except ValueError:
        return _NAT, True


def _cell_tokens(raw: Any, coding: dict[str, int]) -> set[int]:
    """A self-report cell (``'4'``, ``'4.0'``, ``'[4, 1]'``, ``'High blood pressure|Angina'``)
    → its integer values; unparseable items are dropped."""
    out: set[int] = set()
    for tok in split_list_cell(raw):
        t = tok.strip(_STRIP)
        try:
            out.add(int(float(t)))
        except ValueError:
            v = coding.get(t.lower())
            if v is not None:
                out.add(v)
    return out


@dataclass(frozen=True)
class _Plan:
    """Which columns mean what, and the disease bit masks (one bit per disease)."""

    eid: str
    code_columns: tuple[tuple[str, int], ...]  # single-code columns with their array index
    list_column: str | None  # RAP p41270
    date_columns: tuple[tuple[int, str], ...]  # array index -> 41280 column
    visit_column: str | None
    value_rules: tuple[tuple[int, int, str, frozenset[int]], ...]  # (disease bit, field, column, values)
    present_rules: tuple[tuple[int, str], ...]  # (disease bit, column)
    code_bits: dict[str, int]
    n_diseases: int
    policy: str
    subjects: frozenset[str] | None

    @property
    def usecols(self) -> list[str]:
        cols = [self.eid, *(c for c, _ in self.code_columns), *(c for _, c in self.date_columns)]
        cols += [c for c in (self.list_column, self.visit_column) if c]
        cols += [c for _, _, c, _ in self.value_rules] + [c for _, c in self.present_rules]
        return list(dict.fromkeys(cols))


def _plan(
    header: TableHeader, diseases: list[DiseaseDefinition], policy: str, subjects: frozenset[str] | None
) -> tuple[_Plan, list[int]]:
    diag = header.columns(ICD10_FIELD)
    list_column = next((c for c, a in diag if a is None), None) if header.format == "rap" else None
    code_columns = tuple((c, a) for c, a in diag if a is not None)
    date_columns = tuple((a, c) for c, a in header.columns(DATE_FIELD) if a is not None)
    visit = header.columns(VISIT_FIELD, IMAGING_INSTANCE)
    visit_column = visit[0][0] if visit else None
    if policy == "prevalent":
        need = []
        if not date_columns:
            need.append("diagnosis dates (field 41280: '41280-0.<k>' / 'p41280_a<k>')")
        if visit_column is None:
            need.append("the imaging visit date (field 53, instance 2: '53-2.0' / 'p53_i2')")
        if need:
            raise TableError(f"{header.path}: policy 'prevalent' needs {' and '.join(need)}")
    missing: set[int] = set()
    value_rules, present_rules = [], []
    code_bits: dict[str, int] = {}
    for bit, d in enumerate(diseases):
        for code in d.icd10:
            code_bits[code] = code_bits.get(code, 0) | (1 << bit)
        for fld, values in d.self_report_values:
            cols = header.columns(fld, IMAGING_INSTANCE)
            missing.update([] if cols else [fld])
            value_rules += [(bit, fld, c, values) for c, _ in cols]
        for fld in d.self_report_present:
            cols = header.columns(fld, IMAGING_INSTANCE)
            missing.update([] if cols else [fld])
            present_rules += [(bit, c) for c, _ in cols]
    plan = _Plan(
        header.eid, code_columns, list_column, date_columns, visit_column, tuple(value_rules),
        tuple(present_rules), code_bits, len(diseases), policy, subjects,
    )
    return plan, sorted(missing)


def _long_codes(df: pd.DataFrame, plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 41270 items of the block as (row, array index, raw item) arrays."""
    rows: list[np.ndarray] = []
    idx: list[np.ndarray] = []
    items: list[np.ndarray] = []
    if plan.code_columns:
        mat = df[[c for c, _ in plan.code_columns]].to_numpy(dtype=object)
        r, k = np.nonzero(~pd.isna(mat))
        arr_idx = np.array([a for _, a in plan.code_columns], dtype=np.int64)
        rows.append(r)
        idx.append(arr_idx[k])
        items.append(mat[r, k])
    if plan.list_column is not None:
        col = df[plan.list_column].to_numpy(dtype=object)
        lr, li, lv = [], [], []
        for r in np.flatnonzero(~pd.isna(col)):
            parts = split_list_cell(col[r])
            lr += [r] * len(parts)
            li += range(len(parts))
            lv += parts
        rows.append(np.asarray(lr, dtype=np.int64))
        idx.append(np.asarray(li, dtype=np.int64))
        items.append(np.asarray(lv, dtype=object))
    return np.concatenate(rows), np.concatenate(idx), np.concatenate(items)


def _factor_map(values: np.ndarray, fn: Any) -> tuple[np.ndarray, list[Any]]:
    """Apply ``fn`` once per distinct value: returns (codes, [fn(unique)])."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return codes, [fn(u) for u in uniques]


def _dates(values: np.ndarray) -> tuple[np.ndarray, int]:
    """Date cells (object, NaN = missing) → (int64 days, ``_NAT`` unknown; malformed count)."""
    out = np.full(values.shape, _NAT, dtype=np.int64)
    codes, parsed = _factor_map(values, _parse_date)
    if not parsed:
        return out, 0
    days = np.array([p[0] for p in parsed], dtype=np.int64)
    bad = np.array([p[1] for p in parsed], dtype=bool)
    ok = codes >= 0
    out[ok] = days[codes[ok]]
    return out, int(bad[codes[ok]].sum())


def _label_block(df: pd.DataFrame, plan: _Plan) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One block of the table → (eids (n,), labels (n, D) int8, counters) for the requested rows."""
    stats: dict[str, Any] = {"rows": len(df), "malformed_codes": 0, "malformed_dates": 0, "undated": 0, "examples": []}
    eids = df[plan.eid].astype(object).to_numpy(dtype=object)
    eids = np.array(["" if pd.isna(e) else str(e).strip() for e in eids], dtype=object)
    if plan.subjects is not None:
        keep = np.fromiter((e in plan.subjects for e in eids), dtype=bool, count=len(eids))
        df, eids = df.loc[keep], eids[keep]
    n = len(eids)
    positive = np.zeros(n, dtype=np.int64)
    unknown = np.zeros(n, dtype=np.int64)
    if n:
        rows, arr_idx, items = _long_codes(df, plan)
        item_codes, normalised = _factor_map(items, normalise_code)
        bits_u = np.array([plan.code_bits.get(c, 0) if c else 0 for c in normalised], dtype=np.int64)
        bad_u = np.array([c is None for c in normalised], dtype=bool)
        stats["malformed_codes"] = int(bad_u[item_codes].sum()) if bad_u.size else 0
        stats["examples"] = [str(items[i]) for i in np.flatnonzero(bad_u[item_codes])[:5]] if bad_u.size else []
        bits = bits_u[item_codes] if bits_u.size else np.zeros(0, dtype=np.int64)
        hit = bits != 0
        rows, arr_idx, bits = rows[hit], arr_idx[hit], bits[hit]
        if plan.date_columns:
            date_cols = dict(plan.date_columns)
            mat = np.full((n, max(date_cols) + 1), _NAT, dtype=np.int64)
            for a, c in date_cols.items():
                mat[:, a], bad = _dates(df[c].to_numpy(dtype=object))
                stats["malformed_dates"] += bad
            dates = np.where(arr_idx < mat.shape[1], mat[rows, np.minimum(arr_idx, mat.shape[1] - 1)], _NAT)
        else:
            dates = np.full(rows.shape, _NAT, dtype=np.int64)
        if plan.visit_column is not None:
            visit, bad = _dates(df[plan.visit_column].to_numpy(dtype=object))
            stats["malformed_dates"] += bad
        else:
            visit = np.full(n, _NAT, dtype=np.int64)
        undated = (dates == _NAT) | (visit[rows] == _NAT)
        stats["undated"] = int(undated.sum())
        if plan.policy == "any":
            np.bitwise_or.at(positive, rows, bits)
        else:
            counted = ~undated & (dates <= visit[rows])
            np.bitwise_or.at(positive, rows[counted], bits[counted])
            np.bitwise_or.at(unknown, rows[undated], bits[undated])
        for bit, fld, col, values in plan.value_rules:
            coding = CODING_LABELS.get(fld, {})
            codes, toks = _factor_map(df[col].to_numpy(dtype=object), lambda v: _cell_tokens(v, coding))
            match = np.array([bool(t & values) for t in toks] + [False], dtype=bool)
            positive[match[codes]] |= 1 << bit  # codes == -1 (missing) hits the trailing False
        for bit, col in plan.present_rules:
            present = ~pd.isna(df[col].to_numpy(dtype=object))
            positive[present] |= 1 << bit
    labels = np.zeros((n, plan.n_diseases), dtype=np.int8)
    for bit in range(plan.n_diseases):
        pos = (positive >> bit) & 1 == 1
        unk = (unknown >> bit) & 1 == 1
        labels[:, bit] = np.where(pos, 1, np.where(unk, -1, 0))
    return eids, labels, stats


def check_table(table_path: str | Path, policy: str, diseases: list[DiseaseDefinition]) -> TableHeader:
    """Everything :func:`disease_labels` checks before reading rows (header, required columns,
    policy); returns the parsed header. Raises TableError / ValueError."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    header = read_header(table_path)
    _plan(header, diseases, policy, None)
    return header


def _read_blocks(header: TableHeader, usecols: list[str], blocksize: str | int | None) -> list[Any]:
    import dask
    import dask.dataframe as dd

    compressed = header.path.suffix in (".gz", ".bz2", ".xz", ".zip")
    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.read_csv(
            str(header.path),
            sep=header.sep,
            usecols=usecols,
            dtype=object,
            blocksize=None if compressed else blocksize,
        )
    return ddf.to_delayed()


def disease_labels(
    table_path: str | Path,
    subject_ids: Sequence[str] | None,
    policy: str = "any",
    codes: str | Path | list[DiseaseDefinition] | None = None,
    blocksize: str | int = "64MB",
    workers: int | None = None,
) -> DiseaseLabels:
    """Disease labels for ``subject_ids`` from a UK Biobank participant table.

    Args:
        table_path: CSV or TSV (optionally .gz), legacy or research-platform export.
        subject_ids: ids to label (None = every participant of the table), order kept.
        policy: ``'any'`` (diagnosed at any time) or ``'prevalent'`` (on or before the imaging visit).
        codes: a TOML file, definitions, or None for the shipped defaults.
        blocksize: bytes per Dask block of the table.
        workers: threads for the Dask threaded scheduler (None = Dask's default).

    Returns:
        :class:`DiseaseLabels`: int8 labels (1, 0, −1 unknown/absent) indexed by ``subject_id``.

    Raises:
        TableError: missing file, no id column, no field-41270 column, or ``prevalent`` without dates.
        ValueError: an unknown policy or a bad codes file.
    """
    import dask

    t0 = time.perf_counter()
    diseases = codes if isinstance(codes, list) else load_disease_codes(codes)
    header = check_table(table_path, policy, diseases)
    subjects = None if subject_ids is None else frozenset(str(s).strip() for s in subject_ids)
    plan, missing = _plan(header, diseases, policy, subjects)
    usecols = plan.usecols
    blocks = _read_blocks(header, usecols, blocksize)
    try:
        parts = dask.compute(
            *[dask.delayed(_label_block)(b, plan) for b in blocks], scheduler="threads", num_workers=workers
        )
    except ValueError as exc:  # pandas parser errors (ragged rows, bad quoting)
        raise TableError(f"{header.path}: cannot parse the table: {exc}") from exc
    names = [d.name for d in diseases]
    report = TableReport(str(header.path), header.format, policy, columns_read=len(usecols), columns_total=header.n_columns)
    report.missing_fields = missing
    for _, _, st in parts:
        report.rows_read += st["rows"]
        report.malformed_codes += st["malformed_codes"]
        report.malformed_dates += st["malformed_dates"]
        report.undated_matches += st["undated"]
        report.malformed_examples += st["examples"][: 5 - len(report.malformed_examples)]
    eids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=object)
    lab = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, len(names)), dtype=np.int8)
    found = pd.DataFrame(lab, columns=names)
    found.insert(0, "subject_id", eids)
    found = found[found["subject_id"] != ""]
    report.duplicate_rows = int(found["subject_id"].duplicated().sum())
    if report.duplicate_rows:
        found = found.groupby("subject_id", sort=False).max()
    else:
        found = found.set_index("subject_id")
    for d in diseases:  # a self-report label none of whose fields the table has is unknown
        if not d.icd10 and set(d.self_report_fields) <= set(missing):
            found[d.name] = -1
    ids = list(found.index) if subject_ids is None else [str(s).strip() for s in subject_ids]
    out = found.reindex(ids, fill_value=-1).astype(np.int8)
    out.index.name = "subject_id"
    report.subjects_requested = len(ids)
    report.subjects_found = int(out.index.isin(found.index).sum())
    report.subjects_absent = report.subjects_requested - report.subjects_found
    report.seconds = time.perf_counter() - t0
    return DiseaseLabels(out, report, list(diseases))
