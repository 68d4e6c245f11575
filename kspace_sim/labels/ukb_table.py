"""Column naming of UK Biobank participant tables, in both export formats.

- Legacy (ukbconv / showcase) export: ``eid`` and ``<field>-<instance>.<array>`` columns, e.g.
  ``41270-0.12``, ``41280-0.12``, ``53-2.0``, ``6150-2.3``, ``2966-2.0``. The R/tab flavour
  ``f.eid``, ``f.<field>.<instance>.<array>`` is accepted too.
- Research Analysis Platform (RAP, table exporter / ``dx extract_dataset``) export: ``eid`` and
  ``p<field>[_i<instance>][_a<array>]``: ``_i`` is present only for fields collected at several
  visits, ``_a`` only for array fields exported one column per item. ``p41270`` (no instance:
  hospital records are not visit based) holds the whole code list in one cell as a list string
  (``["I251","I10"]``, ``[I251, I10]`` or ``I251|I10``; coded labels such as
  ``I25.1 Atherosclerotic heart disease`` keep their code); its dates are ``p41280_a<i>`` with
  ``i`` the position in that list. Multi-select fields such as ``p6150_i2`` may hold a list of
  values in one cell as well. An entity prefix ``participant.`` is stripped.

A column is keyed by ``(field, instance, array)``; a missing instance or array is None.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TableError", "TableHeader", "parse_column", "read_header", "detect_separator"]

_LEGACY = re.compile(r"(\d+)-(\d+)\.(\d+)")
_LEGACY_R = re.compile(r"f\.(\d+)\.(\d+)\.(\d+)")
_RAP = re.compile(r"p(\d+)(?:_i(\d+))?(?:_a(\d+))?")
EID_NAMES = ("eid", "f.eid", "participant.eid", "participant_eid")


class TableError(Exception):
    """A participant table that cannot be used (missing id or diagnosis columns, bad file)."""


def parse_column(name: str) -> tuple[int, int | None, int | None, str] | None:
    """``'41270-0.3' -> (41270, 0, 3, 'legacy')``, ``'p53_i2' -> (53, 2, None, 'rap')``;
    None for a column that is not a UK Biobank field (including the id column)."""
    s = name.strip()
    if s.startswith("participant."):
        s = s[len("participant.") :]
    for pattern, fmt in ((_LEGACY, "legacy"), (_LEGACY_R, "legacy")):
        m = pattern.fullmatch(s)
        if m:
            f, i, a = m.groups()
            return int(f), int(i), int(a), fmt
    m = _RAP.fullmatch(s)
    if m:
        f, i, a = m.groups()
        return int(f), None if i is None else int(i), None if a is None else int(a), "rap"
    return None


def _open_text(path: Path):  # type: ignore[no-untyped-def]
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="")


def detect_separator(path: Path, first_line: str) -> str:
    """Tab for ``.tsv``/``.tab``/``.txt`` names or a header with tabs and no commas, else comma."""
    stem = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
    if stem.endswith((".tsv", ".tab", ".txt")):
        return "\t"
    return "\t" if "\t" in first_line and "," not in first_line else ","


@dataclass
class TableHeader:
    """The parsed header of a participant table.

    Attributes:
        path: the file.
        sep: the field separator.
        eid: the participant id column.
        fields: ``{column name: (field, instance, array)}`` for every UK Biobank field column.
        format: ``'legacy'`` or ``'rap'`` (from the diagnosis columns).
        n_columns: number of columns in the file.
    """

    path: Path
    sep: str
    eid: str
    fields: dict[str, tuple[int, int | None, int | None]]
    format: str
    n_columns: int

    def columns(self, field: int, instance: int | None = None) -> list[tuple[str, int | None]]:
        """``[(column, array index)]`` of ``field`` (at ``instance`` when given), sorted by array."""
        out = [
            (c, a) for c, (f, i, a) in self.fields.items() if f == field and (instance is None or i == instance)
        ]
        return sorted(out, key=lambda ca: -1 if ca[1] is None else ca[1])


def read_header(path: str | Path) -> TableHeader:
    """Parse the header line of a CSV/TSV (optionally .gz) participant table.

    Raises:
        TableError: the file is missing or empty, or has no id column or no field 41270 column.
    """
    p = Path(path)
    if not p.is_file():
        raise TableError(f"participant table {p} does not exist")
    try:
        with _open_text(p) as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise TableError(f"{p}: cannot read the header: {exc}") from exc
    if not first.strip():
        raise TableError(f"{p}: empty file (no header line)")
    sep = detect_separator(p, first)
    names = next(csv.reader([first], delimiter=sep))
    eid = next((n for n in names if n.strip() in EID_NAMES), None)
    if eid is None:
        raise TableError(
            f"{p}: no participant id column (one of {', '.join(EID_NAMES)}) among its {len(names)} columns "
            f"(first: {', '.join(names[:5])})"
        )
    fields: dict[str, tuple[int, int | None, int | None]] = {}
    formats: dict[str, str] = {}
    for n in names:
        parsed = parse_column(n)
        if parsed is not None:
            fields[n] = parsed[:3]
            formats[n] = parsed[3]
    diag = [n for n, k in fields.items() if k[0] == 41270]
    if not diag:
        raise TableError(
            f"{p}: no ICD-10 diagnosis column (field 41270: '41270-0.<k>' in the legacy export, "
            f"'p41270' in the research-platform export) among its {len(names)} columns"
        )
    fmt = formats[diag[0]]
    return TableHeader(p, sep, eid, fields, fmt, len(names))
