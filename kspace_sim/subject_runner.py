"""Running one task per store row (serially or on Dask) and logging the run in the store.

Shared by the build (:mod:`kspace_sim.build`) and ``add-mask`` (:mod:`kspace_sim.add_mask`):
the same loop, progress bar, build-log entry, achieved-acceleration rule and mask attributes
(written, read back as a spec, and counted again from a mask's rows).
"""

from __future__ import annotations

import datetime as _dt
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kspace_sim.cluster import dask_client
from kspace_sim.simulate import MaskSpec

if TYPE_CHECKING:
    import zarr

__all__ = [
    "achieved_acceleration",
    "git_commit",
    "log_entry",
    "mask_attributes",
    "mask_line_counts",
    "mask_spec_from_attributes",
    "progress_bar",
    "run_rows",
    "scan_written_rows",
    "utc_now",
]


def git_commit() -> str:
    """The simulator's git commit, or 'unknown' outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001 - provenance only
        return "unknown"


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (the build log's timestamps)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def log_entry(head: dict[str, Any], processed: int, skipped_done: int, tail: dict[str, Any]) -> dict[str, Any]:
    """One entry of the store's ``builds`` log: ``head`` (what ran), the finish time, the rows
    processed and the done rows skipped, then ``tail`` (failures, provenance)."""
    return {**head, "finished": utc_now(), "processed": processed, "skipped_done": skipped_done, **tail}


def mask_line_counts(mask: np.ndarray, acs: np.ndarray) -> tuple[int, int, int, int]:
    """(lines, sampled lines, lines outside the ACS block, sampled lines outside it) of a mask.

    Args:
        mask: (..., W) bool, one subject's (S, T, W) mask or a block of rows (B, S, T, W).
        acs: (W,) bool, the pattern's always-sampled ACS lines.
    """
    outside = mask[..., ~acs]
    return int(mask.size), int(mask.sum()), int(outside.size), int(outside.sum())


def scan_written_rows(
    arr: zarr.Array, done: np.ndarray, acs: np.ndarray, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """One pass over ``masks/<name>`` (N, S, T, W) bool in blocks of rows (bounded memory at any N).

    Args:
        arr: the mask array.
        done: (N,) bool, the rows whose subject is done.
        acs: (W,) bool, the pattern's ACS lines.

    Returns:
        ``finished`` (N,) bool: rows already written (every frame of every slice samples a line);
        the counts (total, sampled, total without ACS, sampled without ACS) of the finished done rows.
    """
    n = arr.shape[0]
    finished = np.zeros(n, dtype=bool)
    counts = np.zeros(4, dtype=np.int64)
    for start in range(0, n, block):
        m = arr[start : start + block]
        fin = m.any(axis=-1).all(axis=(1, 2))
        finished[start : start + block] = fin
        counts += mask_line_counts(m[fin & done[start : start + block]], acs)
    return finished, counts


def achieved_acceleration(counts: Any) -> tuple[float, float]:
    """Achieved R with and without the ACS lines from summed :func:`mask_line_counts`:
    lines / sampled lines; NaN where nothing was sampled (no done subject, or no line outside
    the ACS block): the ratio is undefined there."""
    total, sampled, total_na, sampled_na = counts
    return (
        total / sampled if sampled else float("nan"),
        total_na / sampled_na if sampled_na else float("nan"),
    )


def mask_attributes(spec: Any, counts: Any) -> dict[str, Any]:
    """A mask's entry in the store's ``masks`` attribute, as the build and ``add-mask`` both write it:
    the :class:`~kspace_sim.simulate.MaskSpec` fields, the achieved R with and without the ACS lines
    (:func:`achieved_acceleration`) and ``_counts``, the four summed :func:`mask_line_counts` over
    the done subjects (a later run resumes the achieved R from them).

    Args:
        spec: the mask's ``MaskSpec``.
        counts: (4,) ints, (lines, sampled lines, lines outside the ACS block, sampled outside it).
    """
    total = [int(c) for c in counts]
    r, r_na = achieved_acceleration(total)
    return {**spec.to_dict(), "achieved_acceleration": r, "achieved_acceleration_without_acs": r_na, "_counts": total}


SPEC_KEYS = ("pattern", "acceleration", "options", "bank_size")


def mask_spec_from_attributes(name: str, entry: Any) -> MaskSpec:
    """The :class:`~kspace_sim.simulate.MaskSpec` that mask ``name``'s entry in the store's ``masks``
    attribute records (the inverse of :func:`mask_attributes`), so that a later run can compute the
    mask's rows exactly as the build or ``add-mask`` that recorded it did.

    Raises:
        TypeError: the entry, or one of its fields, is not of a spec's type.
        ValueError: a field is missing, or the entry describes a mask of another name.
    """
    if not isinstance(entry, dict):
        raise TypeError(f"its entry in the masks attribute is {type(entry).__name__}, not a mask spec")
    missing = [k for k in SPEC_KEYS if k not in entry]
    if missing:
        raise ValueError(f"its entry in the masks attribute has no {', '.join(missing)}")
    pattern, acceleration, options, bank_size = (entry[k] for k in SPEC_KEYS)
    if not isinstance(pattern, str) or not isinstance(options, dict):
        raise TypeError("its entry's pattern is not a string or its options not a mapping")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (acceleration, bank_size)):
        raise TypeError("its entry's acceleration or bank_size is not a number")
    if isinstance(bank_size, float) and not bank_size.is_integer():
        raise ValueError(f"its entry's bank_size {bank_size} is not a whole number")
    spec = MaskSpec(pattern, float(acceleration), dict(options), int(bank_size))
    if spec.name != name:
        raise ValueError(f"its entry describes mask {spec.name}")
    return spec


class _NoBar:
    def update(self, n: int = 1) -> None: ...

    def close(self) -> None: ...


def progress_bar(total: int, enabled: bool, desc: str = "subjects") -> Any:
    """A tqdm bar of ``total`` subjects, or a silent stand-in (disabled, or nothing to do)."""
    if not enabled or total == 0:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="subj")


def run_rows(
    task: Callable[..., Any],
    rows: list[int],
    row_args: Callable[[int], tuple[Any, ...]],
    shared_args: Callable[[Any], tuple[Any, ...]],
    on_result: Callable[[Any], None],
    *,
    workers: int,
    scheduler: str | None,
    progress: bool,
    key: str,
) -> None:
    """Call ``task(*row_args(row), *shared)`` for every row and ``on_result`` (in this process) on
    each result as it arrives.

    Args:
        task: the per-row function (runs on a worker; must be picklable for Dask).
        rows: the rows to run, in submission order.
        row_args: the leading arguments of one row's call.
        shared_args: the trailing arguments of every call, made once: given the Dask client
            (``None`` when serial), e.g. to compute mask banks on the cluster.
        on_result: called on the client with each result, in completion order.
        workers: Dask worker processes; 0 or fewer = serially, in this process.
        scheduler: address of an existing Dask scheduler.
        progress: show a progress bar.
        key: Dask task key prefix (``<key>-<row>``).
    """
    bar = progress_bar(len(rows), progress)
    if workers <= 0:
        shared = shared_args(None) if rows else ()
        for row in rows:
            on_result(task(*row_args(row), *shared))
            bar.update(1)
    elif rows:
        from dask.distributed import as_completed

        with dask_client(workers, scheduler) as client:
            shared = shared_args(client)
            futures = [
                client.submit(task, *row_args(row), *shared, key=f"{key}-{row}", pure=False) for row in rows
            ]
            for fut in as_completed(futures):
                on_result(fut.result())
                fut.release()
                bar.update(1)
    bar.close()
