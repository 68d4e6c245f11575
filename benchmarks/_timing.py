"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn``, seconds."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def print_ratio_table(rows: list[tuple[str, float, float]], before: str, now: str, name_width: int = 30) -> None:
    """Print ``rows`` of (name, seconds before, seconds now) with the ratio before / now (> 1: now is faster)."""
    col = max(10, len(before) + 2, len(now) + 2)
    print(f"{'':<{name_width}}{before:>{col}}{now:>{col}}{'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<{name_width}}{a:>{col}.4f}{b:>{col}.4f}{a / b:>8.2f}")
