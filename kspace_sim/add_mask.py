"""Add an undersampling mask to an existing store without touching its k-space.

``masks/<pattern>_r<R>`` gets one row per done subject, computed with the same seed derivation
as the build (so adding a mask reproduces what a build with that mask would have written).
Its entry in the ``masks`` attribute (achieved R and the line counts ``_counts``) is the one the
build writes (:func:`kspace_sim.subject_runner.mask_attributes`), and a later run of the build
reads the mask's spec back from it to write the mask's rows of the subjects it finishes
(:func:`kspace_sim.build.carried_masks`). Resumable: a row is finished
when every frame of every slice holds at least one sampled line (the array's fill value is
all-False and every mask samples ≥ 1 line per frame); each row is one chunk, written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from kspace_sim.masks import acs_lines_mask
from kspace_sim.masks.registry import validate_mask_request
from kspace_sim.simulate import MaskSpec, mask_banks, subject_masks
from kspace_sim.store.layout import STATUS_DONE, consolidate, create_mask_array, open_store
from kspace_sim.subject_runner import (
    git_commit,
    log_entry,
    mask_attributes,
    mask_line_counts,
    mask_spec_from_attributes,
    run_rows,
    scan_written_rows,
)

__all__ = ["AddMaskReport", "add_mask_to_store", "validate_mask_spec"]


@dataclass
class AddMaskReport:
    name: str
    written: int
    skipped: int
    seconds: float
    achieved_acceleration: float
    achieved_acceleration_without_acs: float


def _mask_row(
    url: str,
    row: int,
    subject_id: str,
    spec: MaskSpec,
    seed: int,
    shape: tuple[int, int, int],
    storage_options: dict[str, Any] | None,
    banks: dict[str, np.ndarray],
) -> tuple[int, int, int, int]:
    s, t, w = shape
    m = subject_masks(subject_id, [spec], seed, s, t, w, banks)[spec.name]
    kwargs: dict[str, Any] = {"storage_options": storage_options} if storage_options and "://" in url else {}
    zarr.open_group(url, mode="r+", use_consolidated=False, **kwargs)[f"masks/{spec.name}"][row] = m
    return mask_line_counts(m, acs_lines_mask(spec.pattern, w, spec.acceleration, **spec.options))


def add_mask_to_store(
    url: str,
    spec: MaskSpec,
    workers: int = 2,
    scheduler: str | None = None,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> AddMaskReport:
    """Write ``masks/<spec.name>`` for every done subject of the store at ``url``.

    Raises:
        ValueError: an unknown pattern, an R or options the pattern cannot make for the store's
            T and W (before anything is written; see :func:`validate_mask_spec`).
        StoreError: not a store of this format/version.

    A mask this call creates and cannot finish because of an error is removed again (an interrupted
    run keeps the rows it wrote: the rerun resumes them).
    """
    group = open_store(url, "r+", storage_options)
    n, s, t, _, w = group["kspace"].shape
    validate_mask_spec(spec, t, w)
    _refuse_other_settings(group, spec)
    t0 = time.perf_counter()
    status = group["subjects/status"][:]
    acs = acs_lines_mask(spec.pattern, w, spec.acceleration, **spec.options)
    if f"masks/{spec.name}" in group:  # r+ reads unconsolidated metadata: a mask an interrupted run created
        finished, counts = scan_written_rows(group[f"masks/{spec.name}"], status == STATUS_DONE, acs)
    else:
        create_mask_array(group, spec.name, n, s, t, w)
        try:
            return _fill(group, url, spec, workers, scheduler, progress, storage_options, t0, (n, s, t, w),
                         np.zeros(n, dtype=bool), np.zeros(4, dtype=np.int64))
        except Exception:
            # a mask this call created and could not finish is removed again: nothing is left behind
            # (an interrupted run keeps its rows: the rerun resumes them)
            del group[f"masks/{spec.name}"]
            raise
    return _fill(group, url, spec, workers, scheduler, progress, storage_options, t0, (n, s, t, w), finished, counts)


def _refuse_other_settings(group: Any, spec: MaskSpec) -> None:
    """Refuse to write mask ``spec.name`` when the store records that mask with other settings
    (another pattern option or bank size gives the same name): its rows would mix two masks.

    Raises:
        ValueError: one line naming both settings.
    """
    entry = (group.attrs.get("masks") or {}).get(spec.name)
    if entry is None:
        return
    try:
        recorded = mask_spec_from_attributes(spec.name, entry).to_dict()
    except (TypeError, ValueError):
        return  # an entry that cannot be read back: the build's check reports it
    requested = json.loads(json.dumps(spec.to_dict()))  # tuples as lists, as the attribute stores them
    if recorded != requested:
        raise ValueError(f"the store already holds mask {spec.name} made with other settings "
                         f"({recorded}; requested {requested}): its rows would mix two masks")


def validate_mask_spec(spec: MaskSpec, n_frames: int, n_lines: int) -> None:
    """Raise ``ValueError`` (before anything is written) unless ``spec`` can be made for T frames
    and W phase-encoding lines: the pattern's own checks (e.g. VISTA needs R > 1), its options,
    a bank size >= 0."""
    if spec.bank_size < 0:
        raise ValueError(f"mask bank size must be >= 0, got {spec.bank_size}")
    validate_mask_request(spec.pattern, spec.acceleration, n_frames, n_lines, **spec.options)
    acs_lines_mask(spec.pattern, n_lines, spec.acceleration, **spec.options)


def _fill(
    group: zarr.Group,
    url: str,
    spec: MaskSpec,
    workers: int,
    scheduler: str | None,
    progress: bool,
    storage_options: dict[str, Any] | None,
    t0: float,
    shape: tuple[int, int, int, int],
    finished: np.ndarray,
    counts: np.ndarray,
) -> AddMaskReport:
    """Write the missing rows of ``masks/<spec.name>``, log the run and consolidate."""
    n, s, t, w = shape
    seed = int(group.attrs["global_seed"])
    status = group["subjects/status"][:]
    ids = [str(x) for x in group["subjects/id"][:]]
    rows = [i for i in range(n) if status[i] == STATUS_DONE and not finished[i]]
    skipped = int(((status == STATUS_DONE) & finished).sum())

    def add(result: tuple[int, int, int, int]) -> None:
        counts[:] += result

    run_rows(
        _mask_row, rows, lambda row: (url, row, ids[row]),
        lambda client: (spec, seed, (s, t, w), storage_options, mask_banks([spec], seed, t, w)), add,
        workers=workers, scheduler=scheduler, progress=progress, key="mask-row",
    )
    # exact achieved R over every done subject: rows found written plus rows written now, recorded
    # as the build records it (with the line counts a later build resumes from)
    masks = dict(group.attrs.get("masks", {}))
    masks[spec.name] = entry = mask_attributes(spec, counts)
    builds = [
        *group.attrs.get("builds", []),
        log_entry({"kind": "add-mask", "mask": spec.name}, len(rows), skipped, {"git_commit": git_commit()}),
    ]
    group.attrs.update({"masks": masks, "builds": builds})
    consolidate(url, storage_options)
    return AddMaskReport(spec.name, len(rows), skipped, time.perf_counter() - t0, entry["achieved_acceleration"],
                         entry["achieved_acceleration_without_acs"])
