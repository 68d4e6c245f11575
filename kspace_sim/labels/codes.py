"""Disease definitions: ICD-10 code lists and self-report rules, read from TOML.

The shipped defaults are ``kspace_sim/labels/disease_codes.toml`` (see its header for the keys);
a user file with the same structure replaces them entirely.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CODES_PATH", "ICD10_PATTERN", "DiseaseDefinition", "expand_codes", "load_disease_codes"]

DEFAULT_CODES_PATH = Path(__file__).with_name("disease_codes.toml")
ICD10_PATTERN = re.compile(r"[A-Z][0-9]{2}[0-9A-Z]{0,2}")
_RANGE = re.compile(r"([A-Z])([0-9]+)-\1([0-9]+)")
_KEYS = {"icd10", "self_report_values", "self_report_present", "paper_prevalence"}


@dataclass(frozen=True)
class DiseaseDefinition:
    """One disease label.

    Attributes:
        name: the label column.
        icd10: codes of field 41270 (no dot) that make the label positive.
        self_report_values: ``{field: values}`` at the imaging visit that make it positive.
        self_report_present: fields whose presence at the imaging visit makes it positive.
        paper_prevalence: % in the paper's cohort, or None.
    """

    name: str
    icd10: frozenset[str] = frozenset()
    self_report_values: tuple[tuple[int, frozenset[int]], ...] = ()
    self_report_present: tuple[int, ...] = ()
    paper_prevalence: float | None = None

    @property
    def self_report_fields(self) -> tuple[int, ...]:
        return tuple(f for f, _ in self.self_report_values) + self.self_report_present


def expand_codes(items: list[str], where: str = "") -> frozenset[str]:
    """Codes and ranges (``"E100-E109"``) → the set of codes; raises ValueError on a bad entry."""
    out: set[str] = set()
    for item in items:
        s = str(item).strip().upper().replace(".", "")
        m = _RANGE.fullmatch(s)
        if m:
            letter, lo, hi = m.groups()
            if len(lo) != len(hi) or int(lo) > int(hi):
                raise ValueError(f"{where}: bad ICD-10 range {item!r}")
            out.update(f"{letter}{k:0{len(lo)}d}" for k in range(int(lo), int(hi) + 1))
        elif ICD10_PATTERN.fullmatch(s):
            out.add(s)
        else:
            raise ValueError(f"{where}: {item!r} is not an ICD-10 code (e.g. I251) or range (e.g. I630-I636)")
    return frozenset(out)


def _definition(name: str, spec: Any, where: str) -> DiseaseDefinition:
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: [{name}] must be a table")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ValueError(f"{where}: [{name}] has unknown keys {sorted(unknown)} (allowed: {sorted(_KEYS)})")
    try:
        values = tuple(
            (int(field), frozenset(int(v) for v in vals)) for field, vals in spec.get("self_report_values", {}).items()
        )
        present = tuple(int(f) for f in spec.get("self_report_present", []))
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{where}: [{name}] self-report fields and values must be integers ({exc})") from exc
    d = DiseaseDefinition(
        name=name,
        icd10=expand_codes(list(spec.get("icd10", [])), f"{where} [{name}]"),
        self_report_values=values,
        self_report_present=present,
        paper_prevalence=None if spec.get("paper_prevalence") is None else float(spec["paper_prevalence"]),
    )
    if not d.icd10 and not d.self_report_fields:
        raise ValueError(f"{where}: [{name}] defines neither icd10 codes nor self-report fields")
    return d


def load_disease_codes(path: str | Path | None = None) -> list[DiseaseDefinition]:
    """Disease definitions from ``path`` (default: the shipped file), in file order.

    Raises:
        ValueError: a file that is not valid TOML or does not follow the structure.
        FileNotFoundError: ``path`` does not exist.
    """
    p = Path(path) if path is not None else DEFAULT_CODES_PATH
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p}: not valid TOML: {exc}") from exc
    if not data:
        raise ValueError(f"{p}: no disease defined")
    return [_definition(name, spec, str(p)) for name, spec in data.items()]
