"""``kspace-sim publish`` and ``kspace-sim verify``: Croissant manifests for sharing stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)


def _options(storage_options: Optional[str]) -> dict | None:
    if not storage_options:
        return None
    try:
        return json.loads(storage_options)
    except json.JSONDecodeError as exc:
        err.print(f"[bold red]error:[/] --storage-options must be JSON: {exc}")
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add ``publish`` and ``verify`` to the ``kspace-sim`` app."""

    @app.command()
    def publish(
        store: str = typer.Argument(..., help="store path or fsspec URL"),
        manifest: Path = typer.Option(..., "--manifest", help="manifest to write, e.g. data_manifests/NAME.json"),
        version: str = typer.Option("1.0.0", help="semantic version of this release"),
        name: Optional[str] = typer.Option(None, help="dataset name (default: the manifest's file name)"),
        description: str = typer.Option("", help="dataset description (default: generated from the store)"),
        license: Optional[str] = typer.Option(None, "--license", help="license URL or SPDX id"),
        ukb_application: Optional[str] = typer.Option(None, "--ukb-application", help="UK Biobank application number"),
        creator: str = typer.Option("kspace-mtr team", help="creator (organisation)"),
        store_url: Optional[str] = typer.Option(None, "--store-url", help="store location to record (default: path relative to the manifest)"),
        resplit: bool = typer.Option(False, "--resplit", help="re-draw subjects/split (seeded, stratified by disease) before publishing"),
        test_size: Optional[float] = typer.Option(None, "--test-size", help="held-out test subjects: count (e.g. 1000) or fraction < 1; implies --resplit"),
        val_fraction: float = typer.Option(0.1, "--val-fraction", help="validation fraction (with --resplit)"),
        split_seed: int = typer.Option(0, "--split-seed", help="split seed (with --resplit)"),
        workers: int = typer.Option(4, help="threads hashing files"),
        storage_options: Optional[str] = typer.Option(None, "--storage-options", help='fsspec options as JSON, e.g. {"endpoint_url": ...}'),
    ) -> None:
        """Write or update the Croissant manifest of STORE (refuses a same-version, different-content overwrite)."""
        from kspace_sim.sharing.manifest import (
            ManifestError, PublishOptions, ReadOptions, SplitOptions, publish as do_publish, resplit_store,
        )
        from kspace_sim.store.layout import StoreError

        so = _options(storage_options)
        opts = PublishOptions(name=name or manifest.stem, version=version, description=description, creator=creator,
                              ukb_application=ukb_application, store_url=store_url)
        if license:
            opts.license = license
        try:
            if resplit or test_size is not None:
                size = None if test_size is None else (int(test_size) if test_size >= 1 else test_size)
                counts = resplit_store(store, SplitOptions(split_seed, size, val_fraction), so)
                console.print(f"re-split {store}: {counts}")
            doc, outcome = do_publish(store, manifest, opts, ReadOptions(so, workers, progress=True))
        except (ManifestError, StoreError, ValueError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2)
        console.print(f"{manifest}: {outcome} (version {doc['version']}, {len(doc['distribution'])} distribution entries)")

    @app.command()
    def verify(
        location: str = typer.Argument(..., help="manifest (.json) or store path / URL"),
        workers: int = typer.Option(4, help="threads reading and hashing subjects"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar"),
        storage_options: Optional[str] = typer.Option(None, "--storage-options", help="fsspec options as JSON"),
    ) -> None:
        """Recompute checksums and check a store (against its manifest); exit 1 on any mismatch."""
        from kspace_sim.sharing.manifest import ManifestError, ReadOptions
        from kspace_sim.sharing.verify import verify as do_verify
        from kspace_sim.store.layout import StoreError

        try:
            rep = do_verify(location, ReadOptions(_options(storage_options), workers, progress))
        except (ManifestError, StoreError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2)
        console.print(
            f"store {escape(rep.store)}{f' (manifest {escape(rep.manifest)})' if rep.manifest else ''}: {rep.n_subjects} subjects, "
            f"{rep.n_done} done, {rep.checked_subjects} verified, {rep.checked_files} files hashed in {rep.seconds:.1f} s"
        )
        for note in rep.notes:
            console.print(f"note: {escape(note)}")
        if rep.ok:
            console.print("[bold green]OK[/]: every data file, checksum, shape, dtype, parameter and manifest entry matches")
            return
        t = Table(title=f"{len(rep.problems)} problem(s)")
        for col in ("kind", "subject", "array / file", "detail"):
            t.add_column(col, overflow="fold")
        for p in rep.problems:
            t.add_row(escape(p.kind), escape(p.subject or "-"), escape(p.array), escape(p.detail))
        console.print(t, width=200)
        raise typer.Exit(1)
