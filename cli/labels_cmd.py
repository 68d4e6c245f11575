"""``kspace-sim labels``: phenotypes + disease labels of a cohort into a Parquet table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True, soft_wrap=True)


def labels(
    input: Path = typer.Option(..., "--input", help="cohort folder (<id>/seg_*.nii.gz subject folders)"),
    table: Path = typer.Option(..., "--table", help="UK Biobank participant table (CSV/TSV, legacy or RAP export)"),
    out: Path = typer.Option(..., "--out", help="output Parquet file"),
    policy: str = typer.Option("any", help="diagnosis dates: any (any time) or prevalent (on or before the imaging visit)"),
    codes: Optional[Path] = typer.Option(None, "--codes", help="disease definitions TOML (default: the shipped code lists)"),
    workers: int = typer.Option(2, "--workers", help="Dask worker processes (<= 1: serial)"),
) -> None:
    """Derive the 18 phenotypes and the disease labels of every subject into a Parquet table."""
    from kspace_sim.labels.label_table import build_label_table
    from kspace_sim.labels.summary import render_summary, summary_table
    from kspace_sim.labels.ukb_table import TableError
    from kspace_sim.sources.discover import InputError

    try:
        df, report = build_label_table(input, table, out, workers=workers, policy=policy, codes=codes)
    except (InputError, TableError, ValueError, FileNotFoundError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)
    t = Table(title="kspace-sim labels", show_header=False)
    t.add_row("output", report.out)
    t.add_row("subjects", f"{report.n_subjects} ({len(report.failed)} failed, {report.with_missing} with missing phenotypes)")
    t.add_row("input entries skipped", f"{len(report.skipped_entries)} (not subjects, listed below)" if report.skipped_entries else "0")
    t.add_row("phenotypes", f"{report.phenotype_seconds:.1f} s ({report.subjects_per_second:.1f} subjects/s)")
    tr = report.table
    if tr is not None:
        t.add_row("table", f"{tr.path} ({tr.format} export, {tr.rows_read} rows, {tr.columns_read} of {tr.columns_total} columns read, {tr.seconds:.1f} s)")
        t.add_row("participants", f"{tr.subjects_found} found, {tr.subjects_absent} absent (labels −1), {tr.duplicate_rows} duplicate rows")
        t.add_row("malformed", f"{tr.malformed_codes} codes {tr.malformed_examples[:3]}, {tr.malformed_dates} dates")
        t.add_row("policy", f"{tr.policy} ({tr.undated_matches} disease codes with an unknown date)")
        if tr.missing_fields:
            t.add_row("fields not in table", ", ".join(map(str, tr.missing_fields)))
    console.print(t)
    for sid, reason in report.failed:
        err.print(f"[yellow]subject {sid} failed:[/] {reason}")
    for name, reason in report.skipped_entries:
        console.print(f"skipped {name}: {reason}")
    console.print(render_summary(summary_table(df, report.diseases or []), title="cohort summary"))


def register(app: typer.Typer) -> None:
    """Add the ``labels`` command to ``app``."""
    app.command("labels")(labels)
