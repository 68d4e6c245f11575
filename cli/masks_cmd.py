"""``kspace-sim masks``: list the registered patterns, show one mask as a PNG with its metrics."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _parse_options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def register(app: typer.Typer) -> None:
    """Add the ``masks`` sub-app (``list``, ``show``) to ``app``."""
    masks = typer.Typer(help="Undersampling mask patterns.", no_args_is_help=True)

    @masks.command("list")
    def list_() -> None:
        """Registered mask patterns."""
        from kspace_sim.masks import available_patterns

        table = Table("pattern", "description")
        for name, desc in available_patterns().items():
            table.add_row(name, desc)
        console.print(table)

    @masks.command("show")
    def show(
        pattern: str = typer.Option("vista", "--pattern", "-p", help="pattern name (see `masks list`)"),
        acc: float = typer.Option(4.0, "--acc", help="acceleration R"),
        frames: int = typer.Option(50, "--frames", help="frames T"),
        lines: int = typer.Option(128, "--lines", help="phase-encoding lines W"),
        seed: int = typer.Option(0, "--seed", help="subject mask seed; slice s uses derive_seed(seed, 'mask', s)"),
        slice_: int = typer.Option(0, "--slice", help="slice index s"),
        out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default: <pattern>_r<R>.png)"),
        acs: int = typer.Option(0, "--acs", help="ACS lines (passed as acs_lines when > 0)"),
        cycle: Optional[int] = typer.Option(None, "--cycle", help="VISTA: compute this many frames and cycle them"),
        no_cache: bool = typer.Option(False, "--no-cache", help="VISTA: do not use the on-disk cache"),
        option: list[str] = typer.Option([], "--option", "-o", help="extra pattern option KEY=VALUE (repeatable)"),
    ) -> None:
        """Compute one (T, W) mask, write a PNG (k–t pattern, time average, density) and print its metrics."""
        from kspace_sim.masks import get_pattern, mask_name, validate_mask_request
        from kspace_sim.masks.quality import mask_quality
        from kspace_sim.masks.report import mask_figure
        from kspace_sim.seeding import derive_seed

        try:
            opts = _parse_options(option)
            if acs:
                opts["acs_lines"] = acs
            if cycle is not None:
                opts["cycle_frames"] = cycle
            if no_cache:
                opts["cache"] = False
            validate_mask_request(pattern, acc, frames, lines)
            fn = get_pattern(pattern)
            mask = fn(frames, lines, acc, derive_seed(seed, "mask", slice_), **opts)
        except (ValueError, TypeError) as exc:
            Console(stderr=True).print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2)
        q = mask_quality(mask)
        path = mask_figure(mask, out or Path(f"{mask_name(pattern, acc)}.png"),
                           title=f"{pattern}  R={acc:g}  T={frames}  W={lines}  seed={seed} slice={slice_}", quality=q)
        table = Table("metric", "value", title=f"{pattern} R={acc:g} ({frames}×{lines})")
        rows = [
            ("achieved R", f"{q.acceleration:.4f}"),
            ("achieved R without fully sampled (ACS) lines", f"{q.acceleration_without_full:.4f}"),
            ("fully sampled lines", str(q.fully_sampled_lines)),
            ("lines per frame (min / max)", f"{q.lines_min} / {q.lines_max}"),
            ("largest gap in k (lines)", str(q.max_gap_k)),
            ("largest gap in t (frames, periodic)", str(q.max_gap_t)),
            ("never-sampled lines", f"{100 * q.unsampled_fraction:.2f} %"),
            ("PSF side lobe / peak", f"{q.psf_sidelobe:.4f}"),
        ]
        for name, value in rows:
            table.add_row(name, value)
        console.print(table)
        console.print(f"wrote {path}")

    app.add_typer(masks, name="masks")
