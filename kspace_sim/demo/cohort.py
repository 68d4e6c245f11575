"""The demo cohort: phantom subjects in the UK Biobank NIfTI layout, with analytic ground truth.

Layout written by :func:`write_demo_cohort`::

    out_dir/DEMO_COHORT.txt            what this is, seed, generator version
    out_dir/participants.csv           UKB legacy-export style table (41270, 41280, 53, 6150, 2966)
    out_dir/ground_truth.csv           one row per subject: 18 phenotypes, disease flags, ES frame
    out_dir/<eid>/sa.nii.gz            (X, Y, Z, T) int16, Z = 10-12 short-axis slices, T = 50
    out_dir/<eid>/la_{2ch,3ch,4ch}.nii.gz   (X, Y, 1, T) int16
    out_dir/<eid>/seg_sa.nii.gz        uint8: 1 LV blood pool, 2 LV myocardium, 3 RV blood pool
    out_dir/<eid>/seg_la_2ch.nii.gz    uint8: 1 LA
    out_dir/<eid>/seg_la_4ch.nii.gz    uint8: 1 LA, 2 RA
    out_dir/<eid>/ground_truth.json    phenotypes, disease flags, heart parameters, curves

Every subject depends only on ``(seed, eid)``; files are written under a temporary name and
renamed, the JSON last, so a subject whose files all exist is complete and is skipped on a rerun.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from kspace_sim.demo.params import sample_heart_parameters
from kspace_sim.demo.participants import DISEASES, participants_table, sample_participant
from kspace_sim.demo.phantom import N_FRAMES, cycle_state
from kspace_sim.demo.render import TISSUE, align_sax_grid, render_view, sample_intensities, view_geometries
from kspace_sim.demo.truth import PHENOTYPE_COLUMNS, analytic_phenotypes, frame_interval_s, line_step_mm
from kspace_sim.seeding import derive_rng
from kspace_sim.sources.nifti import write_volume
from kspace_sim.sources.subject import IMAGE_FILES, SEG_FILES, SubjectVolumes

__all__ = [
    "DEMO_GENERATOR_VERSION",
    "SUBJECT_FILES",
    "demo_eids",
    "demo_subject",
    "write_demo_subject",
    "write_demo_cohort",
]

DEMO_GENERATOR_VERSION = "1.0.0"
SUBJECT_FILES: tuple[str, ...] = tuple(f"{n}.nii.gz" for n in (*IMAGE_FILES, *SEG_FILES)) + ("ground_truth.json",)
_EID_RANGE = (9_000_000, 10_000_000)  # 7 digits, above the range of real UK Biobank eids


def demo_eids(n_subjects: int, seed: int = 0) -> list[str]:
    """``n_subjects`` distinct fake 7-digit eids (strings, 9000000–9999999: outside the range of real
    UK Biobank eids, so clearly synthetic), drawn deterministically from ``seed``.

    The list for ``n`` is a prefix of the list for ``n + 1``, so a larger cohort contains the
    subjects of a smaller one with the same seed.
    """
    if n_subjects < 0:
        raise ValueError("n_subjects must be >= 0")
    rng = derive_rng(seed, "demo", "eids")
    eids: list[str] = []
    seen: set[int] = set()
    while len(eids) < n_subjects:
        eid = int(rng.integers(*_EID_RANGE))
        if eid not in seen:
            seen.add(eid)
            eids.append(str(eid))
    return eids


def demo_subject(
    eid: str, seed: int = 0, prevalence: Mapping[str, float] | None = None, prevalence_scale: float = 1.0
) -> tuple[SubjectVolumes, dict]:
    """One phantom subject in memory, and its ground truth.

    Args:
        eid: the subject id (any string; :func:`demo_eids` gives the cohort's).
        seed: global seed; the subject depends only on ``(seed, eid)`` (and the prevalences).
        prevalence, prevalence_scale: disease prevalence override / scale (see
            :func:`kspace_sim.demo.participants.sample_participant`).

    Returns:
        ``(volumes, truth)``. ``volumes.images``: ``sa`` ``(X, Y, Z, T)`` and ``la_2ch``, ``la_3ch``,
        ``la_4ch`` ``(X, Y, T)``, float32 holding integer intensities (0 … ≈ 1500); ``volumes.segs``:
        ``seg_sa``, ``seg_la_2ch``, ``seg_la_4ch`` uint8 of the same shapes; ``affines``: 4×4 voxel →
        RAS (mm) for every image and segmentation; ``spacing``: (dx, dy, dz) mm per image;
        ``dt``: frame interval (s), T = 50. ``truth``: JSON-ready dict with ``phenotypes`` (the 18
        REFERENCES.md columns, analytic), ``diseases`` (0/1, any time), ``diseases_prevalent``
        (diagnosed on or before the imaging visit), ``es_frame``, ``heart`` (sampled parameters),
        ``curves`` (per-frame analytic volumes) and ``views`` (matrix sizes, spacing).
    """
    eid = str(eid)
    record = sample_participant(eid, seed, prevalence, prevalence_scale)
    params = sample_heart_parameters(record, seed)
    state = cycle_state(params)
    views = view_geometries(params, derive_rng(seed, eid, "demo", "views"))
    steps = {name: line_step_mm(params, views[name].affine) for name in ("la_2ch", "la_4ch")}
    phenotypes, curves = analytic_phenotypes(params, state, steps)
    es = int(curves["es_frame"])
    myo_ed_ml = curves["lv_myocardium_volume_ml"][0]  # type: ignore[index]
    target_ml = {
        "lv_ed": phenotypes["LVEDV (mL)"],
        "lv_es": phenotypes["LVESV (mL)"],
        "myo_ed": myo_ed_ml,
        "rv_ed": phenotypes["RVEDV (mL)"],
        "rv_es": phenotypes["RVESV (mL)"],
    }
    views["sa"] = align_sax_grid(views["sa"], params, es, target_ml, derive_rng(seed, eid, "demo", "sax-offset"))
    intensities = sample_intensities(derive_rng(seed, eid, "demo", "intensities"))

    images: dict[str, np.ndarray] = {}
    segs: dict[str, np.ndarray] = {}
    affines: dict[str, np.ndarray] = {}
    spacing: dict[str, tuple[float, float, float]] = {}
    for name, view in views.items():
        image, tissue = render_view(view, params, state, intensities, derive_rng(seed, eid, "demo", "noise", name))
        if name == "sa":
            seg = np.where(tissue <= TISSUE["rv_blood"], tissue, 0).astype(np.uint8)
        else:
            image, tissue = image[:, :, 0], tissue[:, :, 0]
            seg = (tissue == TISSUE["la"]).astype(np.uint8)
            if name == "la_4ch":
                seg[tissue == TISSUE["ra"]] = 2
        images[name] = image
        affines[name] = view.affine.copy()
        spacing[name] = view.spacing
        if f"seg_{name}" in SEG_FILES:
            segs[f"seg_{name}"] = seg
            affines[f"seg_{name}"] = view.affine.copy()

    truth: dict = {
        "eid": eid,
        "seed": int(seed),
        "generator_version": DEMO_GENERATOR_VERSION,
        "phenotypes": phenotypes,
        "diseases": {d: int(record.has[d]) for d in DISEASES},
        "diseases_prevalent": {d: int(record.prevalent[d]) for d in DISEASES},
        "ed_frame": curves.pop("ed_frame"),
        "es_frame": curves.pop("es_frame"),
        "heart_rate_bpm": curves.pop("heart_rate_bpm"),
        "dt_s": curves.pop("dt_s"),
        "sex": record.sex,
        "age_at_imaging": record.age_at_imaging,
        "heart": params.to_dict(),
        "views": {
            n: {"shape": list(v.shape), "spacing_mm": list(v.spacing), "plane_angle_deg": v.plane_angle_deg}
            for n, v in views.items()
        },
        "curves": curves,
    }
    return SubjectVolumes(eid, images, affines, segs, spacing, frame_interval_s(params)), truth


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...]) -> None:
    """Write one ``.nii.gz`` (qform and sform from ``affine``) atomically and deterministically
    (:func:`kspace_sim.sources.nifti.write_volume`)."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_zooms(zooms)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    write_volume(img, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _subject_complete(subject_dir: Path) -> bool:
    return all((subject_dir / f).exists() for f in SUBJECT_FILES)


def write_demo_subject(
    out_dir: str | Path,
    eid: str,
    seed: int = 0,
    prevalence: Mapping[str, float] | None = None,
    prevalence_scale: float = 1.0,
) -> dict:
    """Write ``out_dir/<eid>/`` (7 NIfTI files + ground_truth.json) unless complete; return the truth dict."""
    subject_dir = Path(out_dir) / str(eid)
    if _subject_complete(subject_dir):
        return json.loads((subject_dir / "ground_truth.json").read_text())
    subject_dir.mkdir(parents=True, exist_ok=True)
    for stale in subject_dir.glob(".*.tmp*"):  # left by a killed run
        stale.unlink()
    vol, truth = demo_subject(eid, seed, prevalence, prevalence_scale)
    for name, arr in (*vol.images.items(), *vol.segs.items()):
        data = arr.astype(np.uint8) if name.startswith("seg_") else arr.astype(np.int16)
        if data.ndim == 3:
            data = data[:, :, None, :]
        sp = vol.spacing[name.removeprefix("seg_")]
        _write_nifti(subject_dir / f"{name}.nii.gz", data, vol.affines[name], (*sp, vol.dt))
    _write_text(subject_dir / "ground_truth.json", json.dumps(truth, indent=1))
    return truth


def _ground_truth_row(truth: dict) -> dict:
    row: dict[str, object] = {"eid": int(truth["eid"])}
    row.update({c: truth["phenotypes"][c] for c in PHENOTYPE_COLUMNS})
    row.update({d: truth["diseases"][d] for d in DISEASES})
    row.update({f"{d}_prevalent": truth["diseases_prevalent"][d] for d in DISEASES})
    row.update({"es_frame": truth["es_frame"], "HR (bpm)": truth["heart_rate_bpm"]})
    row.update({"sex": truth["sex"], "age": truth["age_at_imaging"]})
    return row


def write_demo_cohort(
    out_dir: str | Path,
    n_subjects: int,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
    prevalence: Mapping[str, float] | None = None,
    prevalence_scale: float = 1.0,
) -> list[str]:
    """Write a demo cohort of ``n_subjects`` phantoms (layout in the module docstring).

    Resumable and idempotent: complete subjects are skipped, every file is written atomically, and
    the cohort-level tables are rewritten from all subjects at the end. ``workers > 1`` uses a
    process pool; the output is identical to ``workers = 1``.

    Returns:
        The eids (:func:`demo_eids` order).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eids = demo_eids(n_subjects, seed)
    truths: dict[str, dict] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(eids), desc="demo cohort", unit="subject")
    args = [(out, eid, seed, dict(prevalence) if prevalence else None, prevalence_scale) for eid in eids]
    if workers > 1 and len(eids) > 1:
        # fork is cheap and safe from a single-threaded parent; otherwise start fresh interpreters
        fork_ok = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
        ctx = multiprocessing.get_context("fork" if fork_ok else "spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(eids)), mp_context=ctx) as pool:
            futures = {pool.submit(write_demo_subject, *a): a[1] for a in args}
            for fut in as_completed(futures):
                truths[futures[fut]] = fut.result()
                if bar is not None:
                    bar.update(1)
    else:
        for a in args:
            truths[a[1]] = write_demo_subject(*a)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    records = [sample_participant(eid, seed, prevalence, prevalence_scale) for eid in eids]
    _write_text(out / "participants.csv", participants_table(records).to_csv(index=False))
    truth_table = pd.DataFrame([_ground_truth_row(truths[e]) for e in eids])
    _write_text(out / "ground_truth.csv", truth_table.to_csv(index=False))
    _write_text(
        out / "DEMO_COHORT.txt",
        "Synthetic demo cohort of kspace_sim: beating 3D+t heart phantoms in the UK Biobank NIfTI layout.\n"
        "Not real data: every image, segmentation, eid and participant record is simulated.\n"
        f"generator: kspace_sim.demo {DEMO_GENERATOR_VERSION}\n"
        f"seed: {seed}\n"
        f"subjects: {len(eids)}\n"
        f"frames: {N_FRAMES}\n"
        f"prevalence_scale: {prevalence_scale}\n"
        f"prevalence_override: {json.dumps(dict(prevalence) if prevalence else {})}\n"
        "ground truth: <eid>/ground_truth.json and ground_truth.csv (analytic phenotypes of the phantom)\n",
    )
    return eids
