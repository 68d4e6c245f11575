"""Tables the CLIs print."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table

__all__ = ["failures_table"]


def failures_table(rows: Iterable[tuple[str, str]], id_label: str = "subject") -> Table:
    """A rich table of ``(subject id, reason)`` rows."""
    t = Table(title="failed subjects")
    t.add_column(id_label)
    t.add_column("reason")
    for sid, reason in rows:
        t.add_row(sid, reason)
    return t
