"""The standalone label table: phenotypes of every subject folder + disease labels → Parquet.

One Dask task per subject (load the subject, derive its 18 phenotypes). Scheduler: a
``dask.distributed.LocalCluster`` of single-threaded worker *processes*, as in ``kspace-sim
build``: a subject's work is NIfTI decompression and header parsing, a per-frame Python loop of
connected-component labelling and small numpy reductions, much of it under the GIL, so threads
do not scale (measured: 2 threads 6.8 subjects/s vs 7.6 serial) while processes can; a task
returns 18 floats and a few strings, so inter-process traffic is negligible, and the cluster's
start-up (2-10 s) is paid once per table. (On the shared 2-core development box nothing scales:
there the serial path was fastest; ``benchmarks/bench_labels.py`` measures all three.) While the
workers derive phenotypes, this process reads the participant table (Dask threaded scheduler),
so the two overlap. ``workers <= 1``, or a cohort of fewer than :data:`MIN_SUBJECTS_FOR_CLUSTER`
subjects, runs everything in this process. NIfTI subjects are read with
:func:`~kspace_sim.labels.loader.load_label_inputs` (segmentations and headers, no images).

Output: a Parquet file indexed by ``subject_id`` with the 18 phenotype columns (float32, NaN =
missing), one int8 column per disease (1 / 0, −1 unknown), ``status`` (``ok`` or ``failed``)
and ``qc_reasons`` (``'; '``-joined reasons for missing values, or the failure). Column units,
the policy, the disease definitions and the table report are in the file's key-value metadata
under ``kspace_sim.labels``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from kspace_sim.labels.codes import DiseaseDefinition, load_disease_codes
from kspace_sim.labels.diseases import POLICIES, DiseaseLabels, TableReport, check_table, disease_labels
from kspace_sim.labels.loader import load_label_inputs
from kspace_sim.labels.phenotypes import PHENOTYPE_COLUMNS, PHENOTYPE_UNITS, subject_phenotypes
from kspace_sim.sources.discover import SubjectSource, scan_input
from kspace_sim.sources.subject import SubjectError

__all__ = [
    "METADATA_KEY",
    "SubjectLabels",
    "LabelTableReport",
    "subject_labels",
    "derive_phenotypes",
    "assemble_label_table",
    "build_label_table",
    "write_label_table",
    "read_label_table",
]

METADATA_KEY = b"kspace_sim.labels"
# Below this many subjects the cluster's start-up (seconds) costs more than it saves: run serially.
MIN_SUBJECTS_FOR_CLUSTER = 16


@dataclass
class SubjectLabels:
    """One subject's phenotype row: ``values`` (18,) float32, ``reasons``, ``failed``."""

    subject_id: str
    values: np.ndarray
    reasons: list[str]
    failed: bool = False


@dataclass
class LabelTableReport:
    """Counts and timings of one :func:`build_label_table` run."""

    out: str
    n_subjects: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    with_missing: int = 0
    phenotype_seconds: float = 0.0
    seconds: float = 0.0
    table: TableReport | None = None
    diseases: list[DiseaseDefinition] | None = None
    skipped_entries: list[tuple[str, str]] = field(default_factory=list)  # input entries that are not subjects

    @property
    def subjects_per_second(self) -> float:
        return self.n_subjects / self.phenotype_seconds if self.phenotype_seconds > 0 else float("nan")


def subject_labels(source: SubjectSource) -> SubjectLabels:
    """Load one subject (NIfTI: segmentations and headers only, see
    :func:`~kspace_sim.labels.loader.load_label_inputs`) and derive its phenotypes (runs in a
    worker); input problems give a failed row with the reason, never an exception."""
    try:
        vol = load_label_inputs(source.path, source.subject_id) if source.kind == "nifti" else source.load()
        res = subject_phenotypes(vol)
        return SubjectLabels(source.subject_id, res.values, list(res.reasons))
    except Exception as exc:  # noqa: BLE001 - one bad subject must not stop the table
        reason = str(exc) if isinstance(exc, SubjectError) else f"unexpected {type(exc).__name__}: {exc}"
        failed_row = np.full(len(PHENOTYPE_COLUMNS), np.nan, dtype=np.float32)
        return SubjectLabels(source.subject_id, failed_row, [f"failed: {reason}"], failed=True)


def derive_phenotypes(
    sources: Sequence[SubjectSource], workers: int = 2, while_running: Callable[[], Any] | None = None
) -> tuple[list[SubjectLabels], Any]:
    """Phenotype rows of ``sources`` (order kept), one Dask task per subject.

    Args:
        sources: the subjects.
        workers: worker processes of a LocalCluster; ``<= 1`` (or fewer than
            :data:`MIN_SUBJECTS_FOR_CLUSTER` subjects): serial in this process.
        while_running: called in this process while the workers compute; its result is returned.

    Returns:
        (rows, ``while_running()`` or None).
    """
    if workers <= 1 or len(sources) < MIN_SUBJECTS_FOR_CLUSTER:
        extra = while_running() if while_running else None
        return [subject_labels(s) for s in sources], extra
    from dask.distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50,
        memory_limit="2GiB",
    ) as cluster, Client(cluster) as client:
        futures = client.map(subject_labels, list(sources), pure=False)
        extra = while_running() if while_running else None
        return client.gather(futures), extra


def assemble_label_table(rows: Sequence[SubjectLabels], diseases: DiseaseLabels | None) -> pd.DataFrame:
    """Rows (+ disease labels) → the table: index ``subject_id``, 18 float32 phenotype columns,
    int8 disease columns, ``status``, ``qc_reasons``."""
    ids = [r.subject_id for r in rows]
    values = np.stack([r.values for r in rows]).astype(np.float32) if rows else np.zeros((0, 18), np.float32)
    df = pd.DataFrame(values, columns=list(PHENOTYPE_COLUMNS), index=pd.Index(ids, name="subject_id"))
    if diseases is not None:
        df = df.join(diseases.labels.reindex(ids, fill_value=-1).astype(np.int8))
    df["status"] = ["failed" if r.failed else "ok" for r in rows]
    df["qc_reasons"] = ["; ".join(r.reasons) for r in rows]
    return df


def label_table_metadata(diseases: list[DiseaseDefinition] | None, report: TableReport | None, policy: str) -> dict[str, Any]:
    return {
        "phenotype_columns": list(PHENOTYPE_COLUMNS),
        "phenotype_units": list(PHENOTYPE_UNITS),
        "diseases": [
            {"name": d.name, "icd10": sorted(d.icd10), "self_report_values": {str(f): sorted(v) for f, v in d.self_report_values},
             "self_report_present": list(d.self_report_present), "paper_prevalence": d.paper_prevalence}
            for d in diseases or []
        ],
        "policy": policy,
        "table_report": asdict(report) if report else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_label_table(df: pd.DataFrame, out_parquet: str | Path, metadata: dict[str, Any]) -> None:
    """Write ``df`` to Parquet atomically (temporary name, then rename), with ``metadata`` as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_parquet)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=True)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: json.dumps(metadata).encode()})
    tmp = out.with_name(out.name + ".part")
    pq.write_table(table, tmp)
    os.replace(tmp, out)


def read_label_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A label table and its ``kspace_sim.labels`` metadata."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    return table.to_pandas(), meta


def build_label_table(
    input_dir: str | Path,
    table_path: str | Path | None,
    out_parquet: str | Path,
    workers: int = 2,
    policy: str = "any",
    codes: str | Path | None = None,
) -> tuple[pd.DataFrame, LabelTableReport]:
    """Derive phenotypes for every subject of ``input_dir`` and disease labels from
    ``table_path``; write the Parquet table ``out_parquet``.

    Args:
        input_dir: cohort folder (``<id>/seg_*.nii.gz`` subject folders, see
            :func:`~kspace_sim.sources.discover.scan_input`; the other entries are listed in the
            report's ``skipped_entries``).
        table_path: UK Biobank participant table (CSV/TSV, either export), or None for no diseases.
        out_parquet: output path.
        workers: Dask worker processes (``<= 1``: serial, in this process).
        policy: ``'any'`` or ``'prevalent'`` (see :mod:`kspace_sim.labels.diseases`).
        codes: disease definitions TOML (None: the shipped defaults).

    Returns:
        (the table, :class:`LabelTableReport`).

    Raises:
        InputError: no subjects in ``input_dir``. TableError / ValueError: an unusable table,
            policy or codes file (checked before the phenotypes are derived).
    """
    t0 = time.perf_counter()
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    scan = scan_input(input_dir)
    sources = scan.sources
    definitions = load_disease_codes(codes) if table_path is not None else None
    if table_path is not None:
        check_table(table_path, policy, definitions)  # fail before any phenotype work
    ids = [s.subject_id for s in sources]

    def read_table() -> DiseaseLabels | None:
        return None if table_path is None else disease_labels(table_path, ids, policy=policy, codes=definitions)

    t1 = time.perf_counter()
    rows, diseases = derive_phenotypes(sources, workers, while_running=read_table)
    t_pheno = time.perf_counter() - t1
    df = assemble_label_table(rows, diseases)
    write_label_table(df, out_parquet, label_table_metadata(definitions, diseases.report if diseases else None, policy))
    report = LabelTableReport(
        out=str(out_parquet),
        n_subjects=len(rows),
        failed=[(r.subject_id, r.reasons[0]) for r in rows if r.failed],
        with_missing=int(sum(1 for r in rows if not r.failed and np.isnan(r.values).any())),
        phenotype_seconds=t_pheno,
        seconds=time.perf_counter() - t0,
        table=diseases.report if diseases else None,
        diseases=definitions,
        skipped_entries=list(scan.skipped),
    )
    return df, report
