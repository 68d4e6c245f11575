"""Benchmark of the labels: phenotype derivation throughput and participant-table reading.

1. Phenotypes: ``--subjects N`` (default 1000) subject folders made from ``--unique K`` demo
   phantoms (default 8, generated once into ``--cohort DIR`` or a temp dir; each folder of the
   N is a symlinked copy of one of the K under a new id: derivation cost does not depend on
   uniqueness, and generating 1000 phantoms takes ~2 h on 2 cores). Reported in subjects/s:
   serial in-process (with the load / phenotype split), the Dask threaded scheduler, and the
   LocalCluster of worker processes that ``build_label_table`` uses.
2. Table: a legacy-format participant table of ``--rows`` (500 000) × ``--columns`` (500)
   columns (80 diagnosis codes + dates, visit date, 6150, 2966 and filler fields), generated
   into a temp dir; :func:`disease_labels` for every participant (worst case) is timed in a
   fresh subprocess whose peak RSS is reported (target < 4 GB).

Run: ``python benchmarks/bench_labels.py [--subjects 200] [--rows 500000] [--skip-table]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kspace_sim.labels.label_table import derive_phenotypes, subject_labels  # noqa: E402
from kspace_sim.sources.discover import discover_subjects  # noqa: E402

ICD_POOL = (
    "I251 I10 E119 I210 I639 I252 I200 E103 I132 K219 K297 K573 M179 M545 J459 J181 E785 E039 N390 "
    "N400 H269 H251 R074 R101 Z864 Z878 K802 D649 L309 S525 G473 C509 Z951 I480 I500 N179"
).split()


# ---- 1. phenotypes ---------------------------------------------------------------------------


def make_cohort(root: Path, n: int, unique: int, cohort: Path | None) -> Path:
    """``n`` subject folders under ``root/cohort`` symlinking the files of ``unique`` demo subjects."""
    from kspace_sim.demo import write_demo_cohort

    src = cohort or root / "demo"
    t0 = time.perf_counter()
    eids = write_demo_cohort(src, unique, seed=0, workers=2)
    print(f"demo phantoms: {unique} in {src} ({time.perf_counter() - t0:.1f} s, reused when present)")
    out = root / "cohort"
    for i in range(n):
        d = out / f"{9_000_000 + i}"
        d.mkdir(parents=True, exist_ok=True)
        for f in (src / eids[i % unique]).glob("*.nii.gz"):
            if not (d / f.name).exists():
                (d / f.name).symlink_to(f.resolve())
    return out


def bench_phenotypes(cohort: Path, workers: int) -> dict[str, float]:
    import dask

    sources = discover_subjects(cohort)
    n = len(sources)
    res: dict[str, float] = {"subjects": n}
    k = min(n, 40)
    t_full = t_load = t_pheno = 0.0
    from kspace_sim.labels.loader import load_label_inputs
    from kspace_sim.labels.phenotypes import subject_phenotypes

    for s in sources[:k]:
        t0 = time.perf_counter()
        s.load()  # the simulator's loader (images too), for comparison
        t1 = time.perf_counter()
        vol = load_label_inputs(s.path, s.subject_id)
        t2 = time.perf_counter()
        subject_phenotypes(vol)
        t_full += t1 - t0
        t_load += t2 - t1
        t_pheno += time.perf_counter() - t2
    res["serial_subjects_per_s"] = k / (t_load + t_pheno)
    res["serial_load_s_per_subject"] = t_load / k
    res["serial_phenotypes_s_per_subject"] = t_pheno / k
    res["full_loader_s_per_subject"] = t_full / k
    print(f"serial ({k} subjects): {res['serial_subjects_per_s']:.2f} subjects/s "
          f"(load segmentations {1000 * t_load / k:.0f} ms + phenotypes {1000 * t_pheno / k:.0f} ms per subject; "
          f"the full loader with images would take {1000 * t_full / k:.0f} ms)")

    k = min(n, 200)
    t0 = time.perf_counter()
    dask.compute(*[dask.delayed(subject_labels)(s) for s in sources[:k]], scheduler="threads", num_workers=workers)
    res["threads_subjects_per_s"] = k / (time.perf_counter() - t0)
    print(f"dask threads x{workers} ({k} subjects): {res['threads_subjects_per_s']:.2f} subjects/s")

    t0 = time.perf_counter()
    rows, _ = derive_phenotypes(sources, workers=workers)
    dt = time.perf_counter() - t0
    assert len(rows) == n and not any(r.failed for r in rows)
    res["processes_subjects_per_s"] = n / dt
    res["processes_seconds"] = dt
    print(f"LocalCluster {workers} processes ({n} subjects, incl. start-up): {n / dt:.2f} subjects/s ({dt:.1f} s)")
    return res


# ---- 2. participant table ----------------------------------------------------------------------


def write_table(path: Path, rows: int, columns: int, seed: int = 0, k: int = 80) -> float:
    """A legacy-export table; returns seconds. Rows are assembled from a pool of filler tails."""
    rng = np.random.default_rng(seed)
    n_filler = columns - (1 + 1 + 4 + 1 + 2 * k)
    if n_filler < 0:
        raise ValueError(f"--columns must be at least {7 + 2 * k}")
    header = ["eid", "53-2.0"] + [f"6150-2.{i}" for i in range(4)] + ["2966-2.0"]
    header += [f"41270-0.{i}" for i in range(k)] + [f"41280-0.{i}" for i in range(k)]
    header += [f"{100000 + j}-0.0" for j in range(n_filler)]
    pool = [
        ",".join(str(v) if v >= 0 else "" for v in rng.integers(-300, 1000, size=n_filler)) for _ in range(997)
    ]
    dates = [f"{y}-{m:02d}-{d:02d}" for y in range(2000, 2023) for m in (1, 4, 7, 10) for d in (3, 17)]
    t0 = time.perf_counter()
    n_codes = np.minimum(rng.poisson(4, size=rows), k)
    tail_idx = rng.integers(0, len(pool), size=rows)
    sr = rng.random(rows)
    with open(path, "w", buffering=1 << 24) as fh:
        fh.write(",".join(header) + "\n")
        lines = []
        for r in range(rows):
            m = int(n_codes[r])
            pad = [""] * (k - m)
            codes = ",".join([ICD_POOL[(r * 7 + i * 13) % len(ICD_POOL)] for i in range(m)] + pad)
            ds = ",".join([dates[(r + i * 31) % len(dates)] for i in range(m)] + pad)
            hbp = "4" if sr[r] < 0.25 else "-7"
            age = "55" if sr[r] < 0.1 else ""
            lines.append(
                f"{1_000_000 + r},2016-05-{1 + r % 28:02d},{hbp},,,,{age},"
                f"{codes},{ds},{pool[tail_idx[r]]}\n"
            )
            if len(lines) == 20000:
                fh.write("".join(lines))
                lines = []
        fh.write("".join(lines))
    return time.perf_counter() - t0


def read_table_child(path: str, policy: str, workers: int) -> None:
    """Subprocess entry: label every participant, print timings and peak RSS as JSON."""
    from kspace_sim.labels.diseases import disease_labels

    t0 = time.perf_counter()
    r = disease_labels(path, None, policy=policy, workers=workers)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    prev = {c: float((r.labels[c] == 1).mean()) for c in r.labels.columns}
    print(json.dumps({"seconds": dt, "peak_rss_bytes": peak, "rows": r.report.rows_read,
                      "columns_read": r.report.columns_read, "prevalence": prev}))


def bench_table(tmp: Path, rows: int, columns: int, policy: str, workers: int) -> dict[str, float]:
    path = tmp / "participants.csv"
    gen = write_table(path, rows, columns)
    size = path.stat().st_size
    print(f"table: {rows} rows x {columns} columns, {size / 2**30:.2f} GiB, generated in {gen:.1f} s")
    out = subprocess.run(
        [sys.executable, __file__, "--_read", str(path), "--policy", policy, "--workers", str(workers)],
        check=True, capture_output=True, text=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"disease_labels (all {res['rows']} participants, {res['columns_read']} columns, policy {policy}): "
          f"{res['seconds']:.1f} s, {size / 2**20 / res['seconds']:.0f} MiB/s, peak RSS {res['peak_rss_bytes'] / 2**30:.2f} GiB")
    return {"generate_seconds": gen, "file_bytes": size, **res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--unique", type=int, default=8)
    ap.add_argument("--cohort", type=Path, default=None, help="folder for (or with) the demo phantoms, reused")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--columns", type=int, default=500)
    ap.add_argument("--policy", default="prevalent")
    ap.add_argument("--skip-phenotypes", action="store_true")
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument("--_read", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._read:
        read_table_child(a._read, a.policy, a.workers)
        return
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench_labels_") as d:
        tmp = Path(d)
        if not a.skip_phenotypes:
            results["phenotypes"] = bench_phenotypes(make_cohort(tmp, a.subjects, a.unique, a.cohort), a.workers)
        if not a.skip_table:
            results["table"] = bench_table(tmp, a.rows, a.columns, a.policy, a.workers)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
