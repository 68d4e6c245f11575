"""``kspace-sim add-mask``: commands that modify an existing store."""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("add-mask")
    def add_mask(
        store: str = typer.Argument(..., help="store path or URL"),
        mask: str = typer.Option(..., "--mask", help="pattern name (see `kspace-sim masks list`)"),
        acc: float = typer.Option(..., "--acc", help="acceleration R"),
        mask_bank: Optional[int] = typer.Option(None, "--mask-bank", help="pattern bank size (default 16 for vista, else 0; see `build --help`)"),
        workers: int = typer.Option(2, help="Dask workers (0 = serial)"),
        scheduler: Optional[str] = typer.Option(None, help="address of an existing Dask scheduler"),
    ) -> None:
        """Add masks/<pattern>_r<R> to every done subject without recomputing k-space (resumable)."""
        from kspace_sim.add_mask import add_mask_to_store
        from kspace_sim.simulate import MaskSpec
        from kspace_sim.store.layout import StoreError

        try:
            rep = add_mask_to_store(store, MaskSpec(mask, acc, bank_size=mask_bank), workers=workers, scheduler=scheduler)
        except (ValueError, StoreError) as exc:
            Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2)
        console.print(
            f"masks/{rep.name}: {rep.written} subjects written, {rep.skipped} already present, "
            f"{rep.seconds:.1f} s; achieved R = {rep.achieved_acceleration:.4f} "
            f"(without ACS {rep.achieved_acceleration_without_acs:.4f})"
        )
