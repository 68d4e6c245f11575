"""``kspace-sim export``: a store's subjects to ISMRMRD or the CMRxRecon cine layout (thin: parse, call, print)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

console = Console()
err = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``export`` to the ``kspace-sim`` app."""

    @app.command()
    def export(
        store: str = typer.Argument(..., help="store path or fsspec URL"),
        format: str = typer.Option(
            ..., "--format", help="ismrmrd (one ISMRMRD file per subject and view) or cmrxrecon (CMRxRecon cine layout, MATLAB v7.3)"
        ),
        out: Path = typer.Option(
            ..., "--out", help="export folder (new, or an earlier export of the same store, format and mask to resume)"
        ),
        subjects: Optional[list[str]] = typer.Option(
            None, "--subjects", help="subject ids (repeat, or comma-separated); default: every done subject"
        ),
        mask: Optional[str] = typer.Option(None, "--mask", help="mask of the store (default: its first, sorted by name)"),
        split: Optional[str] = typer.Option(None, "--split", help="only this split: train, validation or test"),
        workers: int = typer.Option(2, help="Dask worker processes (0 = in this process, two subjects at a time on threads)"),
        scheduler: Optional[str] = typer.Option(None, help="address of an existing Dask scheduler"),
        storage_options: Optional[str] = typer.Option(None, "--storage-options", help="fsspec options as JSON"),
        checksum: Optional[str] = typer.Option(
            None, "--checksum", help="per-file checksum of the manifest: xxh3_128 (XXH128SUMS; the default for a new export) or sha256 "
            "(SHA256SUMS, slower); default when resuming: the export's own"
        ),
    ) -> None:
        """Export a store's done subjects for reconstruction tools (resumable; docs/export.md)."""
        from kspace_sim.export import ExportConfig, ExportError, export_store
        from kspace_sim.store.layout import StoreError

        def fail(message: str) -> None:
            err.print(f"[bold red]error:[/] {escape(message)}")
            raise typer.Exit(2)

        try:
            so = json.loads(storage_options) if storage_options else None
        except json.JSONDecodeError as exc:
            fail(f"--storage-options must be JSON: {exc}")
        ids = [s for item in subjects or [] for s in item.split(",") if s]
        cfg = ExportConfig(store=store, out=str(out), fmt=format, mask=mask, subjects=ids or None, split=split,
                           workers=workers, scheduler=scheduler, storage_options=so, checksum=checksum)
        try:
            rep = export_store(cfg, on_failure=lambda sid, reason: err.print(f"[yellow]subject {escape(sid)} failed:[/] {escape(reason)}"))
        except (ExportError, StoreError) as exc:
            fail(str(exc))
        console.print(
            f"{rep.fmt} export of {rep.selected} subject(s) with mask {rep.mask} in {escape(rep.out)}: "
            f"{rep.exported} exported in {rep.seconds:.1f} s, {rep.skipped} already complete; "
            f"{rep.files} files, {rep.bytes / 2**20:.1f} MiB; manifest {escape(rep.manifest)}"
        )
        if rep.not_done:
            console.print(f"[yellow]{len(rep.not_done)} subject(s) not done in the store were left out[/]")
        if rep.failed:
            err.print(f"[bold red]{len(rep.failed)} subject(s) failed[/] (not recorded: a rerun retries them)")
            raise typer.Exit(1)
