"""Synthetic disease status and the UK Biobank-style participant table of the demo cohort.

Per subject (deterministic in ``(seed, eid)``): sex, age at the imaging visit, imaging visit date
(field 53, instance 2), disease flags with ICD-10 codes (field 41270) and diagnosis dates (41280),
the self-reported illnesses at the imaging visit (field 6150, value 4 = high blood pressure) and
the age at high blood pressure diagnosis (field 2966).

Correlations: high blood pressure (self-report) is strongly tied to hypertension; CAD, diabetes
and stroke are more likely with hypertension; infarct is a subset of CAD. Some diagnoses are
dated after the imaging visit, so the "prevalent" date policy differs from "any time".
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from kspace_sim.seeding import derive_rng

__all__ = [
    "DISEASES",
    "PAPER_PREVALENCE",
    "ICD10_CODES",
    "NOISE_ICD10_CODES",
    "Diagnosis",
    "ParticipantRecord",
    "sample_participant",
    "participants_table",
]

DISEASES: tuple[str, ...] = ("CAD", "high_blood_pressure", "hypertension", "infarct", "diabetes", "stroke")
PAPER_PREVALENCE: dict[str, float] = {
    "CAD": 0.074,
    "high_blood_pressure": 0.258,
    "hypertension": 0.208,
    "infarct": 0.029,
    "diabetes": 0.044,
    "stroke": 0.015,
}
_CAD = (
    "I200 I201 I208 I209 I210 I211 I212 I213 I214 I219 I220 I221 I228 I229 I240 I248 I249 I250 I251 I252 I253 I254 "
    "I255 I256 I258 I259"
).split()
_INFARCT = "I210 I211 I212 I213 I214 I219 I252".split()
ICD10_CODES: dict[str, tuple[str, ...]] = {
    "CAD_without_infarct": tuple(c for c in _CAD if c not in _INFARCT),
    "infarct": tuple(_INFARCT),
    "hypertension": tuple("I10 I110 I119 I120 I129 I130 I131 I132 I139 I150 I151 I152 I158 I159".split()),
    "stroke": tuple("I630 I631 I632 I633 I634 I635 I636 I638 I639".split()),
    "diabetes": tuple(
        [f"E10{i}" for i in range(10)]
        + [f"E11{i}" for i in range(10)]
        + ["E121", "E123", "E125", "E128", "E129"]
        + [f"E13{i}" for i in range(10)]
        + [f"E14{i}" for i in range(10)]
    ),
}
NOISE_ICD10_CODES: tuple[str, ...] = tuple(
    "K219 K297 K573 M179 M545 J459 J181 E785 E039 N390 N400 H269 H251 R074 R101 Z864 Z878 K802 D649 L309 S525 "
    "G473".split()
)
_SELF_REPORT_NOISE = (1, 2, 3)  # heart attack, angina, stroke
_IMAGING_START = _dt.date(2014, 6, 1)
_IMAGING_DAYS = (_dt.date(2020, 3, 1) - _IMAGING_START).days
_FUTURE_DIAGNOSIS_PROBABILITY = 0.2


@dataclass(frozen=True)
class Diagnosis:
    """One ICD-10 diagnosis: code without dot, date, and the disease it counts for (None = unrelated)."""

    code: str
    date: _dt.date
    disease: str | None


@dataclass(frozen=True)
class ParticipantRecord:
    """One synthetic participant.

    Attributes:
        eid: the (fake) participant id.
        sex: 0 female, 1 male (field 31).
        age_at_imaging: years (field 21003, instance 2).
        imaging_date: field 53, instance 2.
        has: disease → True when the subject has the disease at any time (the phenotype effects
            apply to these flags).
        diagnoses: ICD-10 records in array order (fields 41270/41280).
        self_report_6150: values of field 6150 at the imaging visit (at most 4).
        hbp_diagnosis_age: field 2966 (years) or None.
    """

    eid: str
    sex: int
    age_at_imaging: int
    imaging_date: _dt.date
    has: dict[str, bool]
    diagnoses: tuple[Diagnosis, ...]
    self_report_6150: tuple[int, ...]
    hbp_diagnosis_age: int | None
    prevalent: dict[str, bool] = field(default_factory=dict)

    def labels(self, policy: str = "any") -> dict[str, int]:
        """0/1 disease labels as a label builder would derive them from the table.

        ``policy='any'``: an ICD-10 diagnosis at any date; ``'prevalent'``: on or before the imaging
        visit. High blood pressure comes from the self-report (always at the imaging visit).
        """
        if policy not in ("any", "prevalent"):
            raise ValueError(f"policy must be 'any' or 'prevalent', not {policy!r}")
        out = {}
        for disease in DISEASES:
            if disease == "high_blood_pressure":
                out[disease] = int(4 in self.self_report_6150 or self.hbp_diagnosis_age is not None)
                continue
            kinds = ("CAD", "infarct") if disease == "CAD" else (disease,)
            dates = [d.date for d in self.diagnoses if d.disease in kinds]
            if policy == "prevalent":
                dates = [d for d in dates if d <= self.imaging_date]
            out[disease] = int(bool(dates))
        return out


def _conditional(p_marginal: float, p_given: float, ratio: float) -> tuple[float, float]:
    """P(X | G) and P(X | not G) with P(X | G) = ratio · P(X | not G) and the given marginal."""
    base = p_marginal / (ratio * p_given + (1.0 - p_given))
    return min(ratio * base, 0.95), min(base, 0.95)


def _prevalences(prevalence: Mapping[str, float] | None, prevalence_scale: float) -> dict[str, float]:
    p = {k: min(v * prevalence_scale, 0.9) for k, v in PAPER_PREVALENCE.items()}
    if prevalence:
        unknown = set(prevalence) - set(DISEASES)
        if unknown:
            raise ValueError(f"unknown diseases in prevalence override: {sorted(unknown)}")
        p.update({k: float(v) for k, v in prevalence.items()})
    p["infarct"] = min(p["infarct"], p["CAD"])
    return p


def _random_date(rng: np.random.Generator, start: _dt.date, end: _dt.date) -> _dt.date:
    days = max((end - start).days, 1)
    return start + _dt.timedelta(days=int(rng.integers(0, days)))


def sample_participant(
    eid: str, seed: int = 0, prevalence: Mapping[str, float] | None = None, prevalence_scale: float = 1.0
) -> ParticipantRecord:
    """Sample one participant's demographics, diseases and table entries (deterministic).

    Args:
        eid: participant id.
        seed: global seed.
        prevalence: optional override of :data:`PAPER_PREVALENCE` (fractions, per disease).
        prevalence_scale: multiplies every default prevalence (capped at 0.9) before overrides.
    """
    rng = derive_rng(seed, eid, "demo", "participant")
    p = _prevalences(prevalence, prevalence_scale)
    sex = int(rng.random() < 0.48)
    age = int(rng.integers(46, 81))
    imaging = _IMAGING_START + _dt.timedelta(days=int(rng.integers(0, _IMAGING_DAYS)))
    birth = imaging - _dt.timedelta(days=int(age * 365.25 + rng.integers(0, 365)))

    has: dict[str, bool] = {}
    has["hypertension"] = rng.random() < p["hypertension"]
    ht = has["hypertension"]
    hbp_ht = 0.85
    hbp_no = max((p["high_blood_pressure"] - hbp_ht * p["hypertension"]) / max(1 - p["hypertension"], 1e-9), 0.005)
    has["high_blood_pressure"] = rng.random() < (hbp_ht if ht else min(hbp_no, 0.95))
    cad_ht, cad_no = _conditional(p["CAD"], p["hypertension"], 1.8)
    has["CAD"] = rng.random() < (cad_ht if ht else cad_no)
    has["infarct"] = has["CAD"] and rng.random() < p["infarct"] / max(p["CAD"], 1e-9)
    dm_ht, dm_no = _conditional(p["diabetes"], p["hypertension"], 2.0)
    has["diabetes"] = rng.random() < (dm_ht if ht else dm_no)
    st_ht, st_no = _conditional(p["stroke"], p["hypertension"], 2.0)
    has["stroke"] = rng.random() < (st_ht if ht else st_no)

    earliest = birth + _dt.timedelta(days=int(30 * 365.25))
    late_end = imaging + _dt.timedelta(days=int(6 * 365.25))
    diagnoses: list[Diagnosis] = []
    prevalent: dict[str, bool] = {}
    for disease in ("hypertension", "CAD", "diabetes", "stroke"):
        if not has[disease]:
            continue
        kind = "infarct" if disease == "CAD" and has["infarct"] else disease
        pool = ICD10_CODES["CAD_without_infarct" if kind == "CAD" else kind]
        future = rng.random() < _FUTURE_DIAGNOSIS_PROBABILITY
        if future:
            date = _random_date(rng, imaging + _dt.timedelta(days=1), late_end)
        else:
            date = _random_date(rng, earliest, imaging)
        diagnoses.append(Diagnosis(str(rng.choice(pool)), date, kind))
        if kind == "infarct" and rng.random() < 0.5:  # a later chronic ischaemic heart disease code
            code = str(rng.choice(("I251", "I259", "I258")))
            diagnoses.append(Diagnosis(code, _random_date(rng, date, late_end), "CAD"))
    for _ in range(int(rng.poisson(1.5))):
        diagnoses.append(Diagnosis(str(rng.choice(NOISE_ICD10_CODES)), _random_date(rng, earliest, late_end), None))
    order = rng.permutation(len(diagnoses))
    diagnoses = [diagnoses[i] for i in order]

    report: list[int] = []
    if has["high_blood_pressure"]:
        report.append(4)
    if has["infarct"] and rng.random() < 0.6:
        report.append(1)
    if has["CAD"] and rng.random() < 0.4:
        report.append(2)
    if has["stroke"] and rng.random() < 0.5:
        report.append(3)
    if rng.random() < 0.03:
        value = int(rng.choice(_SELF_REPORT_NOISE))
        if value not in report:
            report.append(value)
    report = sorted(report)[:4] or [-7]
    hbp_age = int(rng.integers(30, age + 1)) if has["high_blood_pressure"] and rng.random() < 0.7 else None

    record = ParticipantRecord(eid, sex, age, imaging, has, tuple(diagnoses), tuple(report), hbp_age)
    prevalent.update({k: bool(v) for k, v in record.labels("prevalent").items()})
    return ParticipantRecord(eid, sex, age, imaging, has, tuple(diagnoses), tuple(report), hbp_age, prevalent)


def participants_table(records: Sequence[ParticipantRecord]) -> pd.DataFrame:
    """The legacy-export participant table (one row per record, eid as int).

    Columns: ``eid``, ``31-0.0`` (sex), ``21003-2.0`` (age at imaging), ``53-2.0`` (imaging visit
    date), ``41270-0.0 … 41270-0.k`` (ICD-10 codes), ``41280-0.0 … 41280-0.k`` (their dates,
    YYYY-MM-DD), ``6150-2.0 … 6150-2.3`` and ``2966-2.0``; empty cells are missing values.
    """
    n_codes = max([len(r.diagnoses) for r in records] + [1])
    rows = []
    for r in records:
        row: dict[str, object] = {"eid": int(r.eid), "31-0.0": r.sex, "21003-2.0": r.age_at_imaging}
        row["53-2.0"] = r.imaging_date.isoformat()
        for i in range(n_codes):
            d = r.diagnoses[i] if i < len(r.diagnoses) else None
            row[f"41270-0.{i}"] = d.code if d else None
        for i in range(n_codes):
            d = r.diagnoses[i] if i < len(r.diagnoses) else None
            row[f"41280-0.{i}"] = d.date.isoformat() if d else None
        for i in range(4):
            row[f"6150-2.{i}"] = r.self_report_6150[i] if i < len(r.self_report_6150) else None
        row["2966-2.0"] = r.hbp_diagnosis_age
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in [c for c in table.columns if c.startswith("6150-") or c == "2966-2.0"]:
        table[col] = table[col].astype("Int64")
    return table
