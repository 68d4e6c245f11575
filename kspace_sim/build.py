"""Build a k-space store from a cohort with Dask: one task per subject.

Workers load a subject, simulate it and write its rows of ``kspace``, ``seg`` and ``masks/*``
(whole shards: never two writers in one shard), then return a small :class:`SubjectRecord`.
The client alone writes the subject table and the labels, marks subjects done after their
task returned, and consolidates the metadata at the end. Re-running the same build resumes:
subjects already done are skipped, failed ones are retried, and every mask the store holds (the
requested ones and those ``add-mask`` gave it since) is written for the subjects the run finishes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import kspace_sim
from kspace_sim.coil_settings import CoilSettings, subject_coils
from kspace_sim.fft import FFT_CONVENTION
from kspace_sim.masks import acs_lines_mask
from kspace_sim.sharing.splits import SplitOptions, assign_splits, default_test_size
from kspace_sim.simulate import MaskSpec, SimulationParams, mask_banks, simulate_subject, validate_masks
from kspace_sim.sources.discover import SubjectSource, scan_input
from kspace_sim.sources.subject import SubjectError
from kspace_sim.store.checksum import DEFAULT_CHECKSUM, store_checksum_algorithm, subject_checksum
from kspace_sim.store.coil_arrays import CoilTable, coil_checksum_rows, encode_maps
from kspace_sim.store.kspace_codec import decode_float16, encode_float16, image_nrmse
from kspace_sim.store.layout import (
    STATUS_DONE,
    STATUS_FAILED,
    StoreError,
    consolidate,
    create_schema_array,
    create_store,
    layout_problems,
    open_store,
)
from kspace_sim.store.subject_table import SubjectRecord, SubjectTable
from kspace_sim.subject_runner import (
    git_commit,
    log_entry,
    mask_attributes,
    mask_line_counts,
    mask_spec_from_attributes,
    run_rows,
    scan_written_rows,
    utc_now,
)
from kspace_sim.views import LABEL_MAP

__all__ = [
    "BuildConfig",
    "BuildReport",
    "build_store",
    "carried_masks",
    "discover",
    "finalise_labels",
    "git_commit",
    "plan",
    "process_subject",
    "publish_run",
    "run_subjects",
    "validate_build",
    "validate_split",
]


@dataclass
class BuildConfig:
    """Everything a build needs. ``params`` and ``masks`` change the data; the rest does not."""

    input_dir: str
    out: str
    masks: list[MaskSpec]
    params: SimulationParams = field(default_factory=SimulationParams)
    seed: int = 0
    workers: int = 2
    scheduler: str | None = None
    compression: str = "none"
    storage: str = "complex64"
    chunking: str = "subject"
    pseudonym_key: bytes | None = None
    test_size: float | None = None
    val_fraction: float = 0.1
    storage_options: dict[str, Any] | None = None
    seg_dir: str | None = None
    labels: bool = True
    table: str | None = None
    policy: str = "any"
    codes: str | None = None
    labels_parquet: str | None = None
    manifest: str | None = None
    manifest_version: str = "1.0.0"
    ukb_application: str | None = None
    progress: bool = True
    flush_seconds: float = 2.0
    coils: CoilSettings = field(default_factory=CoilSettings)

    def data_parameters(self) -> dict[str, Any]:
        """The parameters recorded in the store and compared on resume (``coils`` only in a store
        with coils, so that a single-coil build records what it always did)."""
        coils = {"coils": self.coils.to_dict()} if self.coils.enabled else {}
        return {
            "simulation": self.params.to_dict(),
            "masks": [m.to_dict() for m in self.masks],
            "kspace_compression": self.compression,
            "kspace_storage": self.storage,
            "chunking": self.chunking,
            "pseudonymised": self.pseudonym_key is not None,
            "split": {"test_size": self.test_size, "val_fraction": self.val_fraction},
            **coils,
        }


@dataclass
class BuildReport:
    """Summary of one build run."""

    store: str
    n_subjects: int
    processed: int
    skipped: int
    done: int
    failed: list[tuple[str, str]]
    seconds: float
    achieved_acceleration: dict[str, dict[str, float]]
    store_bytes: int | None
    float16_image_nrmse: float | None = None
    splits: dict[str, int] = field(default_factory=dict)
    skipped_entries: list[tuple[str, str]] = field(default_factory=list)  # input entries that are not subjects
    labels: Any = None  # pandas DataFrame of phenotypes + diseases indexed by subject id
    label_summary: list[Any] = field(default_factory=list)
    disease_report: Any = None
    coils: str = ""  # e.g. "8 birdcage coils, SNR 20 dB"; "" for a single-coil store

    @property
    def subjects_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")


def _open_rows(url: str, storage_options: dict[str, Any] | None) -> zarr.Group:
    kwargs: dict[str, Any] = {"storage_options": storage_options} if storage_options and "://" in url else {}
    return zarr.open_group(url, mode="r+", use_consolidated=False, **kwargs)


def process_subject(
    source: SubjectSource,
    row: int,
    url: str,
    params: SimulationParams,
    masks: list[MaskSpec],
    seed: int,
    storage_options: dict[str, Any] | None = None,
    phenotypes: Callable[[Any], tuple[np.ndarray, list[str]]] | None = None,
    storage: str = "complex64",
    banks: dict[str, np.ndarray] | None = None,
    checksum: str = DEFAULT_CHECKSUM,
    coils: CoilSettings | None = None,
) -> SubjectRecord:
    """Load, simulate and write one subject (runs on a worker); returns its small record.

    Input problems (:class:`SubjectError`) and unexpected errors both give a failed record with
    a reason; nothing is marked done here. With pseudonymised ids, the raw id (the source folder
    or zip name) is scrubbed from every reason. With ``coils`` enabled, the task also writes the
    subject's row of ``coils/maps`` and returns its geometry, seeds and per-view noise sigma.
    """
    t0 = time.perf_counter()
    try:
        vol = source.load()
        sim = simulate_subject(vol, params, masks, seed, banks)
        scale, nrmse, stored = 1.0, 0.0, sim.kspace
        if storage == "float16":
            stored, scale = encode_float16(sim.kspace)
            nrmse = image_nrmse(sim.kspace, decode_float16(stored, scale))
        coil = None
        if coils is not None and coils.enabled:
            v = sim.views
            coil = subject_coils(vol.subject_id, seed, v.images, coils, v.seg, v.seg_present)
        # a subject's rows are written whole: skip zarr's comparison of every chunk with the fill
        # value (a full pass over 60 MB, about 20 % of a task), and write each row as a (1, ...)
        # block so that zarr takes it as the complete chunk instead of copying it into a new
        # fill-valued chunk first
        with zarr.config.set({"array.write_empty_chunks": True}):
            group = _open_rows(url, storage_options)
            rows = slice(row, row + 1)
            group["kspace"][rows] = stored[None]
            if "seg" in group:
                group["seg"][rows] = sim.views.seg[None]
            for name, m in sim.masks.items():
                group[f"masks/{name}"][rows] = m[None]
            coil_rows: tuple[np.ndarray, ...] = ()
            if coil is not None:
                stored_maps = encode_maps(coil.maps, storage)
                group["coils/maps"][rows] = stored_maps[None]
                coil_rows = coil_checksum_rows(stored_maps, coil.geometry, coil.field_seed, coil.noise_seed, coil.noise_sigma)
        counts: dict[str, tuple[int, int, int, int]] = {}
        for name, m in sim.masks.items():
            spec = next(s for s in masks if s.name == name)
            counts[name] = mask_line_counts(m, acs_lines_mask(spec.pattern, m.shape[-1], spec.acceleration, **spec.options))
        pheno = phenotypes(vol) if phenotypes is not None else (None, [])
        v = sim.views
        return SubjectRecord(
            row=row,
            ok=True,
            checksum=subject_checksum(stored, v.seg, checksum, coil_rows),
            seg_present=v.seg_present,
            pixel_spacing=v.pixel_spacing,
            crop_box=v.crop_box,
            sax_slices=v.sax_slices,
            intensity_range=v.intensity_range,
            dt=float(vol.dt),
            source_frames=int(v.source_frames),
            kspace_scale=scale,
            storage_nrmse=nrmse,
            mask_counts=counts,
            phenotypes=pheno[0],
            phenotype_reasons=list(pheno[1]),
            seconds=time.perf_counter() - t0,
            coils=None if coil is None else (coil.geometry, coil.field_seed, coil.noise_seed, coil.noise_sigma),
        )
    except SubjectError as exc:
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad subject must not stop the build
        reason = f"unexpected {type(exc).__name__}: {exc}"
    return SubjectRecord(row=row, ok=False, reason=source.scrub(reason), seconds=time.perf_counter() - t0)


def validate_build(cfg: BuildConfig) -> None:
    """Check every parameter of a build, and their combinations, before anything is written.

    Raises:
        ValueError: one line naming the first problem (simulation parameters, a mask that cannot
            be made with its R and options, two masks of the same name, storage, compression,
            chunking, label policy, split fractions).
    """
    from kspace_sim.store.layout import CHUNKINGS, COMPRESSIONS, STORAGES

    cfg.params.validate()
    cfg.coils.validate()
    if not cfg.masks:
        raise ValueError("at least one mask (pattern, R) is needed")
    validate_masks(cfg.masks, cfg.params)
    for what, value, allowed in (
        ("storage", cfg.storage, STORAGES),
        ("compression", cfg.compression, COMPRESSIONS),
        ("chunking", cfg.chunking, CHUNKINGS),
        ("policy", cfg.policy, ("any", "prevalent")),
    ):
        if value not in allowed:
            raise ValueError(f"{what} must be one of {', '.join(allowed)}, not {value!r}")
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")


def validate_split(cfg: BuildConfig, n_subjects: int) -> None:
    """The split the build ends with is possible for ``n_subjects`` subjects (the same counting as
    :func:`kspace_sim.sharing.splits.stratified_split`): checked before anything is written."""
    from kspace_sim.sharing.splits import _as_count

    test_size = default_test_size(n_subjects) if cfg.test_size is None else cfg.test_size
    n_test = _as_count(test_size, n_subjects, "test_size")
    n_val = int(round(cfg.val_fraction * n_subjects))
    if n_test + n_val > n_subjects:
        raise ValueError(f"test ({n_test}) + validation ({n_val}) subjects exceed the {n_subjects} subjects of the input")


def _cluster_mask_banks(client: Any, cfg: BuildConfig, masks: list[MaskSpec]) -> Any:
    """Compute every bank member of ``masks`` as its own Dask task; returns the banks scattered to the workers."""
    from kspace_sim.masks.registry import bank_member
    from kspace_sim.simulate import bank_seed

    t, w = cfg.params.frames, cfg.params.crop
    futures = {
        spec.name: client.map(
            lambda j, spec=spec: bank_member(spec.pattern, j, t, w, spec.acceleration, bank_seed(spec, cfg.seed), **spec.options),
            range(spec.bank_size),
            key=[f"mask-bank-{spec.name}-{j}" for j in range(spec.bank_size)],
        )
        for spec in masks
        if spec.bank_size > 0
    }
    if not futures:
        return {}
    banks = {name: np.stack(client.gather(futs)) for name, futs in futures.items()}
    return client.scatter(banks, broadcast=True)


def _store_attrs(cfg: BuildConfig) -> dict[str, Any]:
    return {
        "simulator_version": kspace_sim.__version__,
        "git_commit": git_commit(),
        "created": utc_now(),
        "global_seed": cfg.seed,
        "parameters": cfg.data_parameters(),
        "fft_convention": FFT_CONVENTION,
        "label_map": {str(k): v for k, v in LABEL_MAP.items()},
        "masks": {},
        "builds": [],
        "pseudonymised": cfg.pseudonym_key is not None,
        "input": _input_description(cfg.input_dir),
        "subject_seed_rule": "derive_seed(global_seed, subject_id, purpose, ...): SHA-256 of the seed and keys",
        **({"coils": cfg.coils.store_attrs()} if cfg.coils.enabled else {}),
    }


def _input_description(input_dir: str) -> dict[str, Any]:
    """What the input was (no paths, no subject ids): demo cohort note or cohort kind."""
    root = Path(input_dir)
    note = root / "DEMO_COHORT.txt"
    if note.exists():
        return {"kind": "demo", "synthetic": True, "note": note.read_text()[:2000]}
    zips = any(root.glob("*_2020[89]_*.zip"))
    return {"kind": "cohort", "synthetic": False, "format": "UKB DICOM zips (20208/20209)" if zips else "UKB NIfTI layout"}


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _prepare_store(cfg: BuildConfig, sources: list[SubjectSource]) -> zarr.Group:
    ids = [s.subject_id for s in sources]
    try:
        group = open_store(cfg.out, mode="r+", storage_options=cfg.storage_options)
    except StoreError as exc:
        if "no store" not in str(exc):
            raise
        group = None
    if group is None:
        return create_store(
            cfg.out,
            ids,
            frames=cfg.params.frames,
            size=cfg.params.crop,
            mask_names=[m.name for m in cfg.masks],
            attrs=_store_attrs(cfg),
            compression=cfg.compression,
            storage=cfg.storage,
            chunking=cfg.chunking,
            storage_options=cfg.storage_options,
            n_coils=cfg.coils.n_coils if cfg.coils.enabled else None,
        )
    stored = group.attrs.get("parameters")
    wanted = _normalise(cfg.data_parameters())
    if stored == wanted:  # same parameters: the arrays must be what the schema says they are
        problems = layout_problems(
            group, frames=cfg.params.frames, size=cfg.params.crop, storage=cfg.storage, mask_names=[m.name for m in cfg.masks]
        )
        if problems:
            raise StoreError(f"{cfg.out} does not have the layout of its parameters ({'; '.join(problems)}): use another --out")
    if stored != wanted:
        diff = sorted(k for k in set(stored or {}) | set(wanted) if (stored or {}).get(k) != wanted.get(k))
        raise StoreError(
            f"{cfg.out} was built with different parameters ({', '.join(diff)}); "
            "resume needs identical parameters: use another --out"
        )
    if int(group.attrs.get("global_seed", -1)) != cfg.seed:
        raise StoreError(f"{cfg.out} was built with seed {group.attrs.get('global_seed')}, not {cfg.seed}")
    stored_ids = [str(x) for x in group["subjects/id"][:]]
    if stored_ids != ids:
        missing = len(set(stored_ids) - set(ids))
        extra = len(set(ids) - set(stored_ids))
        raise StoreError(
            f"{cfg.out} holds a different subject list ({missing} stored subjects not in the input, "
            f"{extra} input subjects not in the store): use another --out"
        )
    return group


def phenotype_hook(vol: Any) -> tuple[np.ndarray, list[str]]:
    """The 18 phenotypes of a loaded subject, run inside its k-space task (one pass over the files)."""
    from kspace_sim.labels.phenotypes import subject_phenotypes

    res = subject_phenotypes(vol)
    return res.values, list(res.reasons)


def _mask_summary(counts: dict[str, list[int]], masks: list[MaskSpec]) -> dict[str, dict[str, Any]]:
    return {spec.name: mask_attributes(spec, counts.get(spec.name, [0, 0, 0, 0])) for spec in masks}


def carried_masks(cfg: BuildConfig, group: zarr.Group) -> list[MaskSpec]:
    """The masks a resumed build carries on besides the requested ones: every other mask the store
    holds (given to it by ``add-mask``), its spec read back from its entry in the store's ``masks``
    attribute (:func:`kspace_sim.subject_runner.mask_spec_from_attributes`), in that attribute's
    order. The build writes their rows for the subjects it finishes, with the per-subject seeds
    ``add-mask`` uses, and keeps their entries. ``[]`` for a new store.

    Raises:
        StoreError: one line naming the first mask whose spec cannot be read back (an array with
            no entry, as an interrupted ``add-mask`` leaves; an entry that is not a spec of that
            name or that this build's T and W cannot make; an array missing or of another shape).
    """
    requested = {m.name for m in cfg.masks}
    entries = group.attrs.get("masks") or {}
    arrays = sorted(group["masks"].array_keys()) if "masks" in group else []
    out = []
    for name in dict.fromkeys([*entries, *arrays]):
        if name in requested:
            continue
        try:
            if name not in entries:
                raise ValueError(f"masks/{name} has no entry in the store's masks attribute")
            spec = mask_spec_from_attributes(name, entries[name])
            validate_masks([spec], cfg.params)
            problems = layout_problems(group, frames=cfg.params.frames, size=cfg.params.crop, storage=cfg.storage, mask_names=[name])
            if problems:
                raise ValueError("; ".join(problems))
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"{cfg.out} holds mask {name}, whose spec cannot be read back from the store ({exc}), so a resumed "
                f"build cannot write its rows: finish it with kspace-sim add-mask (its pattern and R) first"
            ) from None
        out.append(spec)
    return out


def _done_mask_counts(group: zarr.Group, masks: list[MaskSpec], done: np.ndarray) -> dict[str, list[int]]:
    """Each mask's summed :func:`~kspace_sim.subject_runner.mask_line_counts` over the subjects
    already done, which this run adds to: its recorded ``_counts`` when they cover exactly the done
    subjects (S·T·W lines each), else (a run killed after marking subjects done but before
    recording the counts, or an entry without them) counted again from its rows of the done subjects.

    Args:
        done: (N,) bool, the rows whose subject is done.
    """
    entries = group.attrs.get("masks") or {}
    n_done = int(done.sum())
    out: dict[str, list[int]] = {}
    for spec in masks:
        arr = group[f"masks/{spec.name}"]
        recorded = (entries.get(spec.name) or {}).get("_counts")
        lines = int(np.prod(arr.shape[1:]))
        if isinstance(recorded, list) and len(recorded) == 4 and recorded[0] == n_done * lines:
            out[spec.name] = [int(c) for c in recorded]
        elif n_done == 0:
            out[spec.name] = [0, 0, 0, 0]
        else:
            acs = acs_lines_mask(spec.pattern, arr.shape[-1], spec.acceleration, **spec.options)
            out[spec.name] = [int(c) for c in scan_written_rows(arr, done, acs)[1]]
    return out


def _store_size(url: str) -> int | None:
    p = Path(url)
    if "://" in url or not p.exists():
        return None
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


@dataclass
class Discovery:
    """What the input holds: the subjects (pseudonymised and sorted when asked), the entries that
    are not subjects, and the participant table with its disease definitions."""

    sources: list[SubjectSource]
    skipped_entries: list[tuple[str, str]]
    table_path: str | None
    diseases: list[Any]


@dataclass
class BuildPlan:
    """The store opened (or created) for this run, its subject table, the rows still to do and the
    masks to write: the requested ones, then those the store holds besides (:func:`carried_masks`)."""

    group: zarr.Group
    table: SubjectTable
    pending: list[int]
    skipped: int
    checksum: str
    started: str
    masks: list[MaskSpec]


@dataclass
class SubjectRun:
    """What the subject tasks of one run reported: summed mask line counts, failures, float16 errors."""

    counts: dict[str, list[int]]
    failures: list[tuple[str, str]] = field(default_factory=list)
    storage_errors: list[float] = field(default_factory=list)


def discover(cfg: BuildConfig) -> Discovery:
    """Step 1: check the configuration, scan the input and the participant table (before any write)."""
    validate_build(cfg)
    scan = scan_input(cfg.input_dir, cfg.seg_dir)
    sources = scan.sources
    validate_split(cfg, len(sources))
    table_path, diseases = _resolve_table(cfg)
    if cfg.pseudonym_key is not None:
        sources = sorted((s.pseudonymised(cfg.pseudonym_key) for s in sources), key=lambda s: s.subject_id)
    return Discovery(sources, list(scan.skipped), table_path, diseases)


def plan(cfg: BuildConfig, found: Discovery) -> BuildPlan:
    """Step 2: create the store, or reopen it for a resume with identical parameters; the rows left
    to do and the masks to write (a resume carries on the masks ``add-mask`` gave the store)."""
    group = _prepare_store(cfg, found.sources)
    masks = [*cfg.masks, *carried_masks(cfg, group)]  # before any write: a mask it cannot carry stops the build
    n = len(found.sources)
    if "labels/phenotypes" not in group and cfg.labels:
        from kspace_sim.labels.phenotypes import PHENOTYPE_COLUMNS, PHENOTYPE_UNITS

        dims = {"N": n, "P": len(PHENOTYPE_COLUMNS)}
        ph = create_schema_array(group, "labels/phenotypes", dims)
        ph.attrs.update({"columns": list(PHENOTYPE_COLUMNS), "units": list(PHENOTYPE_UNITS)})
        reasons = create_schema_array(group, "labels/phenotype_qc", dims)
        reasons[:] = np.full(n, "", dtype=object).astype(str)
    table = SubjectTable(group)
    pending = table.pending_rows()
    # a store resumed keeps the checksum algorithm it was started with
    return BuildPlan(group, table, pending, n - len(pending), store_checksum_algorithm(group), utc_now(), masks)


def run_subjects(
    cfg: BuildConfig, found: Discovery, todo: BuildPlan, on_failure: Callable[[str, str], None] | None = None
) -> SubjectRun:
    """Step 3: simulate and write every pending subject (serially or on Dask); the client records
    each result in the subject table as it arrives and flushes it every ``cfg.flush_seconds``."""
    table = todo.table
    run = SubjectRun(_done_mask_counts(todo.group, todo.masks, table.status == STATUS_DONE))
    hook = phenotype_hook if cfg.labels else None
    coil_table = CoilTable(todo.group) if cfg.coils.enabled else None
    last_flush = time.monotonic()

    def flush() -> None:
        if coil_table is not None:  # before the subject table marks the subjects done
            coil_table.flush()
        table.flush()

    def finished(rec: SubjectRecord) -> None:
        nonlocal last_flush
        if rec.ok and coil_table is not None and rec.coils is not None:
            coil_table.record(rec.row, *rec.coils)
        table.record(rec)
        if rec.ok:
            run.storage_errors.append(rec.storage_nrmse)
            for name, c in rec.mask_counts.items():
                acc = run.counts.setdefault(name, [0, 0, 0, 0])
                for i in range(4):
                    acc[i] += c[i]
        else:
            sid = table.ids[rec.row]
            run.failures.append((sid, rec.reason))
            if on_failure:
                on_failure(sid, rec.reason)
        if time.monotonic() - last_flush > cfg.flush_seconds:
            flush()
            last_flush = time.monotonic()

    def shared(client: Any) -> tuple[Any, ...]:
        if client is None:
            banks = mask_banks(todo.masks, cfg.seed, cfg.params.frames, cfg.params.crop)
        else:
            banks = _cluster_mask_banks(client, cfg, todo.masks)
        coils = cfg.coils if cfg.coils.enabled else None
        return (cfg.out, cfg.params, todo.masks, cfg.seed, cfg.storage_options, hook, cfg.storage, banks, todo.checksum, coils)

    run_rows(
        process_subject, todo.pending, lambda row: (found.sources[row], row), shared, finished,
        workers=cfg.workers, scheduler=cfg.scheduler, progress=cfg.progress, key="subject-row",
    )
    flush()
    return run


def finalise_labels(cfg: BuildConfig, found: Discovery, todo: BuildPlan, disease_job: Any) -> tuple[Any, dict[str, int]]:
    """Step 4: ``labels/diseases`` (from the participant table read alongside the subjects) and
    ``subjects/split``; returns the disease report and the subjects per split."""
    disease_report = _write_disease_labels(todo.group, disease_job, found.sources)
    splits = assign_splits(todo.group, SplitOptions(cfg.seed, cfg.test_size, cfg.val_fraction))
    return disease_report, splits


def publish_run(cfg: BuildConfig, found: Discovery, todo: BuildPlan, run: SubjectRun) -> dict[str, dict[str, Any]]:
    """Step 5: the masks' achieved R, the build log and float16 statistics into the group
    attributes, consolidated metadata, and the Croissant manifest when asked; returns the masks' attributes."""
    group = todo.group
    mask_attrs = _mask_summary(run.counts, todo.masks)
    entry = log_entry(
        {"started": todo.started},
        len(todo.pending),
        todo.skipped,
        {
            "failed": [{"id": sid, "reason": r} for sid, r in run.failures],
            "skipped_entries": [{"entry": name, "reason": r} for name, r in _logged_entries(found.skipped_entries, cfg)],
            "simulator_version": kspace_sim.__version__,
            "git_commit": git_commit(),
            "workers": cfg.workers,
            **({"masks_carried": [m.name for m in todo.masks[len(cfg.masks):]]} if len(todo.masks) > len(cfg.masks) else {}),
        },
    )
    update: dict[str, Any] = {"masks": mask_attrs, "builds": [*group.attrs.get("builds", []), entry]}
    if cfg.storage == "float16" and run.storage_errors:
        prev = group.attrs.get("float16_image_nrmse", {})
        update["float16_image_nrmse"] = {
            "max": max([float(prev.get("max", 0.0)), *run.storage_errors]),
            "mean_this_run": float(np.mean(run.storage_errors)),
        }
    group.attrs.update(_normalise(update))
    consolidate(cfg.out, cfg.storage_options)
    if cfg.manifest:
        from kspace_sim.sharing.manifest import PublishOptions, ReadOptions, publish

        publish(
            cfg.out, cfg.manifest,
            PublishOptions(name=Path(cfg.manifest).stem, version=cfg.manifest_version, ukb_application=cfg.ukb_application),
            ReadOptions(cfg.storage_options, progress=cfg.progress),
        )
    return mask_attrs


def build_store(cfg: BuildConfig, on_failure: Callable[[str, str], None] | None = None) -> BuildReport:
    """Build (or resume) the store ``cfg.out`` from ``cfg.input_dir``:
    discover → plan → run subjects → finalise labels and splits → publish.

    Args:
        cfg: the build configuration.
        on_failure: called with (subject id, reason) for each failed subject as it happens.

    Raises:
        InputError, ValueError, StoreError: before any work, for a missing input, a bad mask
            request or an incompatible existing store.
    """
    found = discover(cfg)
    t0 = time.perf_counter()
    todo = plan(cfg, found)
    disease_job = _start_disease_labels(found.table_path, found.sources, cfg, found.diseases)  # read alongside
    run = run_subjects(cfg, found, todo, on_failure)
    disease_report, splits = finalise_labels(cfg, found, todo, disease_job)
    seconds = time.perf_counter() - t0
    mask_attrs = publish_run(cfg, found, todo, run)
    return _report(cfg, found, todo, run, seconds, mask_attrs, disease_report, splits)


def _report(
    cfg: BuildConfig, found: Discovery, todo: BuildPlan, run: SubjectRun, seconds: float,
    mask_attrs: dict[str, dict[str, Any]], disease_report: Any, splits: dict[str, int],
) -> BuildReport:
    """The run's summary; writes the label table (Parquet) beside a local store or where asked."""
    table = todo.table
    c = table.counts()
    labels_df, summary = _label_table(todo.group, table)
    if labels_df is not None and (cfg.labels_parquet or "://" not in cfg.out):
        _write_parquet(labels_df, cfg.labels_parquet or _default_parquet(cfg.out), found.diseases, disease_report, cfg.policy)
    errors = run.storage_errors
    return BuildReport(
        store=cfg.out,
        n_subjects=len(found.sources),
        processed=len(todo.pending),
        skipped=todo.skipped,
        done=c["done"],
        failed=[(table.ids[i], str(table.reason[i])) for i in np.flatnonzero(table.status == STATUS_FAILED)],
        seconds=seconds,
        achieved_acceleration={k: {kk: v[kk] for kk in ("achieved_acceleration", "achieved_acceleration_without_acs")} for k, v in mask_attrs.items()},
        store_bytes=_store_size(cfg.out),
        float16_image_nrmse=max(errors) if cfg.storage == "float16" and errors else None,
        splits=splits,
        skipped_entries=list(found.skipped_entries),
        labels=labels_df,
        label_summary=summary,
        disease_report=disease_report,
        coils=cfg.coils.summary() if cfg.coils.enabled else "",
    )


def _logged_entries(skipped: list[tuple[str, str]], cfg: BuildConfig) -> list[tuple[str, str]]:
    """Skipped input entries as the store logs them: under pseudonymisation an entry's name (it
    may be an eid) is replaced by its keyed-hash pseudonym."""
    if cfg.pseudonym_key is None:
        return list(skipped)
    from kspace_sim.privacy import pseudonymise

    return [(pseudonymise(name, cfg.pseudonym_key), reason) for name, reason in skipped]


def _resolve_table(cfg: BuildConfig) -> tuple[str | None, list[Any]]:
    """The participant table (``--table``, else the cohort's ``participants.csv``) and the disease
    definitions, checked before any work (a bad table is a clear error, not a failed build)."""
    table = cfg.table
    if not cfg.labels:
        return None, []
    if table is None and (Path(cfg.input_dir) / "participants.csv").exists():
        table = str(Path(cfg.input_dir) / "participants.csv")
    if table is None:
        return None, []
    from kspace_sim.labels.codes import load_disease_codes
    from kspace_sim.labels.diseases import check_table

    diseases = load_disease_codes(cfg.codes)
    check_table(table, cfg.policy, diseases)
    return table, diseases


def _start_disease_labels(table: str | None, sources: list[SubjectSource], cfg: BuildConfig, diseases: list[Any]) -> Any:
    """Read the participant table in a background thread while the subject tasks run."""
    if table is None:
        return None
    from concurrent.futures import ThreadPoolExecutor

    from kspace_sim.labels.diseases import disease_labels

    raw_ids = [s.source_id or s.subject_id for s in sources]
    pool = ThreadPoolExecutor(1, thread_name_prefix="disease-labels")
    fut = pool.submit(disease_labels, table, raw_ids, cfg.policy, diseases, "64MB", 1)
    pool.shutdown(wait=False)
    return fut


def _write_disease_labels(group: zarr.Group, job: Any, sources: list[SubjectSource]) -> Any:
    """``labels/diseases`` (N, D) int8 in row order (raw ids mapped to the stored ids)."""
    if job is None:
        return None
    result = job.result()
    lab = result.labels
    raw_ids = [s.source_id or s.subject_id for s in sources]
    values = lab.loc[raw_ids].to_numpy(dtype=np.int8)
    arr = create_schema_array(group, "labels/diseases", {"N": values.shape[0], "D": values.shape[1]}, overwrite=True)
    arr[...] = values
    rep = result.report
    arr.attrs.update(
        _normalise(
            {
                "columns": list(lab.columns),
                "policy": rep.policy,
                "unknown": -1,
                "report": {k: v for k, v in vars(rep).items() if k not in ("path", "malformed_examples")},
                "paper_prevalence_percent": {d.name: d.paper_prevalence for d in result.diseases},
            }
        )
    )
    return rep


def _label_table(group: zarr.Group, table: SubjectTable) -> tuple[Any, list[Any]]:
    """Phenotypes + diseases of the done subjects as a DataFrame, and its summary rows."""
    if "labels/phenotypes" not in group and "labels/diseases" not in group:
        return None, []
    import pandas as pd

    from kspace_sim.labels.codes import load_disease_codes
    from kspace_sim.labels.summary import summary_table

    done = table.status == STATUS_DONE
    ids = [sid for sid, ok in zip(table.ids, done) if ok]
    df = pd.DataFrame(index=pd.Index(ids, name="subject_id"))
    if table.phenotypes is not None:
        columns = group["labels/phenotypes"].attrs["columns"]
        df = df.join(pd.DataFrame(table.phenotypes[done], index=df.index, columns=columns))
        df["qc_reasons"] = table.phenotype_qc[done].astype(str)
    diseases = []
    if "labels/diseases" in group:
        dz = group["labels/diseases"]
        df = df.join(pd.DataFrame(dz[:][done], index=df.index, columns=dz.attrs["columns"]))
        diseases = [d for d in load_disease_codes() if d.name in dz.attrs["columns"]]
    return df, summary_table(df, diseases)


def _default_parquet(url: str) -> str:
    p = Path(url)
    return str(p.with_name(p.name.removesuffix(".zarr") + ".labels.parquet"))


def _write_parquet(df: Any, path: str, diseases: list[Any], report: Any, policy: str) -> None:
    from kspace_sim.labels.label_table import label_table_metadata, write_label_table

    write_label_table(df, path, label_table_metadata(diseases or None, report, policy))
