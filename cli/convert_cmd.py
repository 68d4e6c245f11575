"""``kspace-sim convert``: UK Biobank DICOM zips (fields 20208/20209) → UKB NIfTI layout."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from cli.tables import failures_table

console = Console()
err = Console(stderr=True, soft_wrap=True)


def convert(
    input: Path = typer.Option(..., "--input", help="folder of <eid>_20209_2_0.zip / <eid>_20208_2_0.zip"),
    out: Path = typer.Option(..., "--out", help="NIfTI cohort folder to write (<eid>/sa.nii.gz, la_*.nii.gz)"),
    workers: int = typer.Option(2, help="Dask worker processes (0 = serial, in this process)"),
    scheduler: Optional[str] = typer.Option(None, help="address of an existing Dask scheduler"),
    seg: Optional[Path] = typer.Option(None, "--seg", help="segmentations (<eid>/seg_*.nii.gz) to check and copy alongside"),
    overwrite: bool = typer.Option(False, help="convert subjects whose outputs already exist"),
    progress: bool = typer.Option(True, help="progress bar"),
) -> None:
    """Convert UK Biobank cine DICOM zips to sa.nii.gz, la_2ch/3ch/4ch.nii.gz (resumable)."""
    from kspace_sim.sources.dicom_convert import SUMMARY_FILE, convert_cohort, find_zip_folder
    from kspace_sim.sources.discover import InputError

    if not input.is_dir():
        err.print(f"[bold red]error:[/] input folder {input} does not exist")
        raise typer.Exit(2)
    try:
        zip_dir = find_zip_folder(input)
    except InputError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)
    if zip_dir != input:
        console.print(f"no zips in {input} itself: converting the zips in {zip_dir}")
    summary = convert_cohort(
        zip_dir, out, workers=workers, scheduler=scheduler, seg_dir=seg, progress=progress, overwrite=overwrite,
        on_failure=lambda eid, reason: err.print(f"[yellow]subject {eid} failed:[/] {reason}"),
    )
    t = Table(title="kspace-sim convert", show_header=False)
    t.add_row("output", str(out))
    t.add_row("subjects", f"{summary.n_subjects} ({summary.converted} converted, {summary.skipped} skipped (already converted), {len(summary.failed)} failed)")
    t.add_row("input entries skipped", f"{len(summary.skipped_entries)} (not subjects' zips, listed below)" if summary.skipped_entries else "0")
    t.add_row("time", f"{summary.seconds:.1f} s ({summary.subjects_per_second:.2f} subjects/s)")
    t.add_row("summary", str(out / SUMMARY_FILE))
    console.print(t)
    if summary.failed:
        console.print(failures_table(summary.failed, "eid"))
    for name, reason in summary.skipped_entries:
        console.print(f"skipped {name}: {reason}")


def register(app: typer.Typer) -> None:
    """Add the ``convert`` command to the ``kspace-sim`` app."""
    app.command("convert")(convert)
