"""Disease labels from UK Biobank participant tables: both export formats, date policies,
absent subjects, malformed input and bad tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kspace_sim.labels.codes import expand_codes, load_disease_codes
from kspace_sim.labels.diseases import TableError, disease_labels, normalise_code

CODES = ["I251", "I10", "E119", "I210", "I639", "C509", "Z951", "I200", "E103", "I252", "K219", "I132"]
VISIT = "2016-03-15"


def legacy_table(n: int = 120, seed: int = 0, k: int = 6) -> pd.DataFrame:
    """A legacy-format table: eid, an unrelated field, 41270-0.0..k-1, 41280-0.0..k-1, 53-2.0,
    6150-2.0..3, 2966-2.0. Dates straddle the visit; a few malformed codes and dates."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        r: dict[str, object] = {"eid": str(1000000 + i), "31-0.0": int(rng.integers(0, 2))}
        m = int(rng.integers(0, k + 1))
        for a in range(m):
            code = CODES[int(rng.integers(len(CODES)))]
            if rng.random() < 0.05:
                code = "BAD!"
            r[f"41270-0.{a}"] = code
            year = int(rng.integers(2005, 2022))
            r[f"41280-0.{a}"] = "1900-01-01" if rng.random() < 0.05 else f"{year}-06-0{1 + a % 9}"
        r["53-2.0"] = VISIT if rng.random() > 0.05 else ""
        hbp = rng.random()
        r["6150-2.0"] = 4 if hbp < 0.2 else (-7 if hbp < 0.8 else 2)
        if hbp > 0.9:
            r["6150-2.1"] = 4
        if rng.random() < 0.1:
            r["2966-2.0"] = int(rng.integers(40, 70))
        rows.append(r)
    cols = ["eid", "31-0.0"] + [f"41270-0.{a}" for a in range(k)] + [f"41280-0.{a}" for a in range(k)]
    cols += ["53-2.0"] + [f"6150-2.{a}" for a in range(4)] + ["2966-2.0"]
    return pd.DataFrame(rows).reindex(columns=cols)


def to_rap(legacy: pd.DataFrame) -> pd.DataFrame:
    """The same participants in the research-platform export: p41270 list string (positions =
    legacy array indices, gaps closed), p41280_a<i>, p53_i2, p6150_i2 (list), p2966_i2."""
    out = pd.DataFrame({"eid": legacy["eid"], "p31": legacy["31-0.0"]})
    code_cols = [c for c in legacy if c.startswith("41270-")]
    lists, dates = [], []
    for _, row in legacy.iterrows():
        items = [(row[c], row[c.replace("41270", "41280")]) for c in code_cols if isinstance(row[c], str)]
        lists.append(json.dumps([c for c, _ in items]) if items else np.nan)
        dates.append([d for _, d in items])
    out["p41270"] = lists
    for a in range(len(code_cols)):
        out[f"p41280_a{a}"] = [d[a] if a < len(d) else np.nan for d in dates]
    out["p53_i2"] = legacy["53-2.0"]
    sr = legacy[[f"6150-2.{a}" for a in range(4)]]
    out["p6150_i2"] = ["[" + ",".join(str(int(v)) for v in r if pd.notna(v)) + "]" for r in sr.to_numpy()]
    out["p2966_i2"] = legacy["2966-2.0"]
    return out


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tables")
    legacy = legacy_table()
    paths = {"legacy_csv": d / "legacy.csv", "legacy_tsv": d / "legacy.tsv", "rap_csv": d / "rap.csv", "rap_tsv": d / "rap.tsv"}
    legacy.to_csv(paths["legacy_csv"], index=False)
    legacy.to_csv(paths["legacy_tsv"], index=False, sep="\t")
    rap = to_rap(legacy)
    rap.to_csv(paths["rap_csv"], index=False)
    rap.to_csv(paths["rap_tsv"], index=False, sep="\t")
    return paths


def _write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("policy", ["any", "prevalent"])
def test_formats_agree(tables: dict[str, Path], policy: str) -> None:
    ids = [str(1000000 + i) for i in range(0, 130, 3)]  # some absent (>= 1000120)
    results = {k: disease_labels(p, ids, policy=policy, blocksize=20000) for k, p in tables.items()}
    ref = results["legacy_csv"]
    assert ref.report.format == "legacy" and results["rap_csv"].report.format == "rap"
    assert ref.report.rows_read == 120 and ref.report.subjects_absent == 4
    for k, r in results.items():
        pd.testing.assert_frame_equal(r.labels, ref.labels, obj=k)
        assert r.report.malformed_codes == ref.report.malformed_codes > 0
    assert (ref.labels.dtypes == np.int8).all()
    assert list(ref.labels.columns) == ["CAD", "high_blood_pressure", "hypertension", "infarct", "stroke", "diabetes"]
    absent = [i for i in ids if int(i) >= 1000120]
    assert len(absent) == 4 and (ref.labels.loc[absent] == -1).all().all()
    known = ref.labels.loc[ref.labels.index < "1000120"]
    assert (known >= (-1 if policy == "prevalent" else 0)).all().all()
    assert known["CAD"].sum() > 0 and known["high_blood_pressure"].sum() > 0


def test_labels_follow_rules(tables: dict[str, Path]) -> None:
    legacy = pd.read_csv(tables["legacy_csv"], dtype=str)
    lab = disease_labels(tables["legacy_csv"], list(legacy["eid"])).labels
    cad = set(load_disease_codes()[0].icd10)
    for _, row in legacy.iterrows():
        codes = {row[c] for c in legacy if c.startswith("41270-") and isinstance(row[c], str)}
        assert lab.loc[row["eid"], "CAD"] == int(bool(codes & cad))
        assert lab.loc[row["eid"], "hypertension"] == int(bool(codes & {"I10", "I132"}))
        hbp = 4.0 in {float(row[f"6150-2.{a}"]) for a in range(4)} or isinstance(row["2966-2.0"], str)
        assert lab.loc[row["eid"], "high_blood_pressure"] == int(hbp)


def test_date_policy(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "eid,41270-0.0,41270-0.1,41280-0.0,41280-0.1,53-2.0\n"
        "1,I251,,2010-01-01,,2015-06-01\n"  # before the visit
        "2,I251,,2015-06-01,,2015-06-01\n"  # on the visit day: prevalent
        "3,I251,,2019-01-01,,2015-06-01\n"  # after: incident only
        "4,I251,,1900-01-01,,2015-06-01\n"  # unknown date
        "5,I251,I252,1900-01-01,2011-01-01,2015-06-01\n"  # unknown date, but another code proves it
        "6,I251,,2010-01-01,,\n"  # no visit date
        "7,I251,,not a date,,2015-06-01\n",  # malformed date
    )
    ids = [str(i) for i in range(1, 8)]
    anytime = disease_labels(p, ids, policy="any")
    prev = disease_labels(p, ids, policy="prevalent")
    assert anytime.labels["CAD"].tolist() == [1] * 7
    assert prev.labels["CAD"].tolist() == [1, 1, 0, -1, 1, -1, -1]
    assert prev.labels["infarct"].tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert prev.report.malformed_dates == 1
    assert prev.report.undated_matches == 4  # rows 4, 5 (I251), 6, 7


def test_prevalent_needs_dates(tmp_path: Path) -> None:
    p = _write(tmp_path, "eid,41270-0.0\n1,I251\n")
    with pytest.raises(TableError, match=r"t\.csv: policy 'prevalent' needs diagnosis dates .* and the imaging visit date"):
        disease_labels(p, ["1"], policy="prevalent")
    assert disease_labels(p, ["1"]).labels.loc["1", "CAD"] == 1


def test_absent_subjects_and_self_report_fields_missing(tmp_path: Path) -> None:
    p = _write(tmp_path, "eid,41270-0.0\n1,I251\n2,\n")
    r = disease_labels(p, ["2", "1", "99"])
    assert list(r.labels.index) == ["2", "1", "99"]
    assert r.labels.loc["99"].tolist() == [-1] * 6
    assert r.labels.loc["1", "CAD"] == 1 and r.labels.loc["2", "CAD"] == 0
    assert (r.labels["high_blood_pressure"] == -1).all()  # neither 6150 nor 2966 in the table
    assert r.report.missing_fields == [2966, 6150]
    assert r.report.subjects_absent == 1 and r.report.subjects_found == 2


def test_rap_variants(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "participant.eid,participant.p41270,participant.p6150_i2,participant.p2966_i2\n"
        '1,"[I251, E119]",High blood pressure|Angina,\n'
        '2,"I25.1 Atherosclerotic heart disease|E11.9 Non-insulin-dependent diabetes mellitus, without complications|I10 Essential (primary) hypertension","[-7]",\n'
        '3,"[""I639""]",,52\n'
        "4,,,\n",
    )
    r = disease_labels(p, ["1", "2", "3", "4"])
    lab = r.labels
    assert r.report.malformed_codes == 0  # a label with a comma stays one item
    assert lab["CAD"].tolist() == [1, 1, 0, 0]
    assert lab["diabetes"].tolist() == [1, 1, 0, 0]
    assert lab["hypertension"].tolist() == [0, 1, 0, 0]
    assert lab["stroke"].tolist() == [0, 0, 1, 0]
    assert lab["high_blood_pressure"].tolist() == [1, 0, 1, 0]


def test_malformed_codes_counted_not_fatal(tmp_path: Path) -> None:
    p = _write(tmp_path, "eid,41270-0.0,41270-0.1\n1,I251,??\n2,12345,I10\n3,I21.0,\n")
    r = disease_labels(p, ["1", "2", "3"])
    assert r.report.malformed_codes == 2 and set(r.report.malformed_examples) == {"??", "12345"}
    assert r.labels["infarct"].tolist() == [0, 0, 1]  # I21.0 is I210
    assert normalise_code(' "i25.1" ') == "I251" and normalise_code("x") is None


def test_duplicate_rows_combined(tmp_path: Path) -> None:
    p = _write(tmp_path, "eid,41270-0.0\n1,I251\n1,I10\n")
    r = disease_labels(p, ["1"])
    assert r.report.duplicate_rows == 1
    assert r.labels.loc["1", ["CAD", "hypertension"]].tolist() == [1, 1]


def test_bad_tables(tmp_path: Path) -> None:
    no_eid = _write(tmp_path, "id,41270-0.0\n1,I251\n", "no_eid.csv")
    with pytest.raises(TableError, match=r"no_eid\.csv: no participant id column"):
        disease_labels(no_eid, ["1"])
    no_icd = _write(tmp_path, "eid\t53-2.0\tp31\n1\t2015-01-01\t0\n", "no_icd.tsv")
    with pytest.raises(TableError, match=r"no_icd\.tsv: no ICD-10 diagnosis column \(field 41270"):
        disease_labels(no_icd, ["1"])
    with pytest.raises(TableError, match="does not exist"):
        disease_labels(tmp_path / "nope.csv", ["1"])
    with pytest.raises(TableError, match="empty file"):
        disease_labels(_write(tmp_path, "", "empty.csv"), ["1"])
    with pytest.raises(ValueError, match="policy"):
        disease_labels(no_eid, ["1"], policy="incident")


def test_custom_codes(tmp_path: Path) -> None:
    codes = _write(tmp_path, '[reflux]\nicd10 = ["K210-K219"]\npaper_prevalence = 1.0\n', "codes.toml")
    p = _write(tmp_path, "eid,41270-0.0\n1,K219\n2,I251\n")
    r = disease_labels(p, ["1", "2"], codes=codes)
    assert list(r.labels.columns) == ["reflux"] and r.labels["reflux"].tolist() == [1, 0]
    assert expand_codes(["E100-E102", "I10"]) == {"E100", "E101", "E102", "I10"}
    with pytest.raises(ValueError, match="not an ICD-10 code"):
        disease_labels(p, ["1"], codes=_write(tmp_path, '[x]\nicd10 = ["hello"]\n', "bad.toml"))
    with pytest.raises(ValueError, match="unknown keys"):
        load_disease_codes(_write(tmp_path, '[x]\nicd = ["I10"]\n', "bad2.toml"))
    with pytest.raises(ValueError, match="not valid TOML"):
        load_disease_codes(_write(tmp_path, "[x\n", "bad3.toml"))


def test_all_participants_when_no_ids(tables: dict[str, Path]) -> None:
    r = disease_labels(tables["rap_tsv"], None)
    assert len(r.labels) == 120 and r.report.subjects_absent == 0


def test_gzipped_table(tables: dict[str, Path], tmp_path: Path) -> None:
    import gzip

    gz = tmp_path / "legacy.csv.gz"
    gz.write_bytes(gzip.compress(tables["legacy_csv"].read_bytes()))
    ids = [str(1000000 + i) for i in range(0, 120, 7)]
    pd.testing.assert_frame_equal(disease_labels(gz, ids).labels, disease_labels(tables["legacy_csv"], ids).labels)
