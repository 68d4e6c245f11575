"""A tiny store of synthetic arrays, written through the simulator's own layout code.

The trainer's tests and benchmarks need stores of any size, fast, with chosen statuses and splits;
building one from phantom subjects (tests/test_contract.py does that) would take too long for
each of them. So the arrays here are synthetic (smooth random magnitudes, a beating disk, random
line masks), but the store around them is the simulator's: created by
:func:`kspace_sim.store.layout.create_store` and ``create_schema_array`` from the declarative schema
:mod:`kspace_sim.store.schema` (arrays, dtypes, chunks, fill values, the 16-byte xxh3 checksum
column, split and status codes), with the simulator's label map (6 classes), its 18 phenotype
column names and units, its disease columns (``labels/disease_codes.toml``), its FFT convention
and the real checksum of every subject's rows. Drift between the two halves of the contract
then breaks these tests too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from kspace_sim.fft import FFT_CONVENTION, fft2c
from kspace_sim.labels.codes import load_disease_codes
from kspace_sim.labels.phenotypes import PHENOTYPE_COLUMNS, PHENOTYPE_UNITS
from kspace_sim.store.checksum import subject_checksum
from kspace_sim.store.layout import consolidate, create_schema_array, create_store
from kspace_sim.views import LABEL_MAP, VIEW_ORDER

#: a tiny model and schedule for every stage and task on 5 frames of a 32 × 32 store (seconds per
#: stage on a CPU): ``--set`` overrides of the tiny preset
TINY_OVERRIDES: dict[str, str] = {
    "data.frames": "5", "data.num_workers": "0", "arch.patch": "5,8,8", "arch.width": "32", "arch.depth": "2",
    "arch.heads": "2", "arch.dec_width": "32", "arch.dec_depth": "1", "arch.dec_heads": "2",
    "optim.warmup_epochs": "0.5", "run.progress": "false", "run.png_every_epochs": "0", "run.tensorboard": "false",
    "heads.seg_width": "16", "heads.seg_features": "2", "heads.head_hidden": "16", "heads.resnet_width": "0.0625",
    "heads.unet_channels": "4,8,16,32",
}

#: the simulator's disease columns, in its order (CAD, high_blood_pressure, hypertension, ...)
DISEASE_COLUMNS: list[str] = [d.name for d in load_disease_codes()]


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], h: int, w: int, cutoff: float) -> np.ndarray:
    """Real random fields (..., H, W), low-pass filtered, scaled to [0, 1]."""
    noise = rng.standard_normal(shape + (h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    filt = np.exp(-(fy**2 + fx**2) / (2 * cutoff**2))
    field = np.fft.ifft2(np.fft.fft2(noise) * filt).real
    lo = field.min(axis=(-2, -1), keepdims=True)
    hi = field.max(axis=(-2, -1), keepdims=True)
    return (field - lo) / np.maximum(hi - lo, 1e-9)


def _line_mask(rng: np.random.Generator, s: int, t: int, w: int, r: float) -> np.ndarray:
    mask = rng.random((s, t, w)) < (1.0 / r)
    c = w // 2
    mask[..., c - 2 : c + 2] = True  # ACS lines
    return mask


def _labels(disk: np.ndarray, base: np.ndarray, s: int) -> np.ndarray:
    """(S, T, H, W) uint8 in the simulator's label map: short-axis views LV blood pool (1) with
    myocardium (2) where the smooth field is high and RV (3) where it is low; long-axis views the
    LV (1), LA (4) and, in the 4ch view, RA (5); no labels in the 3ch view (never segmented)."""
    seg = np.zeros((s,) + disk.shape, np.uint8)
    hi = base[:, None] > 0.6
    lo = base[:, None] < 0.25
    seg[:] = disk[None]
    seg[:6][hi[:6] & (seg[:6] == 1)] = 2
    seg[:6][lo[:6] & (seg[:6] == 1)] = 3
    seg[6:][hi[6:] & (seg[6:] == 1)] = 4
    seg[8][lo[8] & (seg[8] == 1)] = 5
    seg[7] = 0
    return seg


def write_store(
    path: str | Path,
    n: int = 6,
    t: int = 10,
    h: int = 32,
    w: int = 32,
    masks: dict[str, float] | None = None,
    status: list[int] | None = None,
    split: list[int] | None = None,
    format_version: int = 1,
    seed: int = 0,
    with_labels: bool = True,
    storage: str = "complex64",
    n_coils: int | None = None,
    snr_db: float | None = 20.0,
    noise_correlation: float = 0.0,
) -> str:
    """Write a store of ``n`` synthetic subjects (9 views × ``t`` × ``h`` × ``h``); returns its path.

    Defaults: rows 0-3 train, row 4 validation, row 5 test but *failed* (so 'test' is empty).
    ``storage='float16'`` writes (N, S, T, H, W, 2) float16 pairs of ``k / subjects/kspace_scale``.
    ``format_version`` other than 1 gives a store the reader must refuse. ``w`` must equal ``h``
    (the simulator's crops are square). ``n_coils`` = K gives a store with coils (format version 2,
    docs/multicoil.md) written by the simulator's own coil code (:mod:`kspace_sim.coil_settings`:
    birdcage maps per view, sigma at ``snr_db`` in each view's heart region (None = noise-free),
    noise correlation ``noise_correlation``, the ``coils`` group attribute).
    """
    if w != h:
        raise ValueError(f"the simulator's crops are square: h = {h}, w = {w}")
    rng = np.random.default_rng(seed)
    masks = masks if masks is not None else {"vista_r4": 4.0, "gaussian_r8": 8.0}
    status = status if status is not None else [1] * (n - 1) + [2]
    split = split if split is not None else ([0] * max(n - 2, 0) + [1, 2])[:n]
    s = len(VIEW_ORDER)
    attrs: dict[str, Any] = {
        "simulator_version": "fixture",
        "git_commit": "",
        "created": "2026-01-01T00:00:00+00:00",
        "global_seed": seed,
        "parameters": {"simulation": {"frames": t, "crop": h}, "kspace_storage": storage},
        "fft_convention": FFT_CONVENTION,
        "label_map": {str(k): v for k, v in LABEL_MAP.items()},
        "masks": {name: {"pattern": name.split("_r")[0], "acceleration": r} for name, r in masks.items()},
        "builds": [],
        "pseudonymised": False,
    }
    ids = [f"S{i:04d}" for i in range(n)]
    coil_settings = None
    if n_coils is not None:
        from kspace_sim.coil_settings import CoilSettings

        coil_settings = CoilSettings(n_coils=n_coils, snr_db=snr_db, noise_correlation=noise_correlation)
        attrs["coils"] = coil_settings.store_attrs()
    g = create_store(str(path), ids, frames=t, size=h, mask_names=list(masks), attrs=attrs, storage=storage,
                     chunking="sharded", n_coils=n_coils)
    yy, xx = np.mgrid[0:h, 0:w]
    kscale = np.ones(n, np.float32)
    checksums = np.zeros(g["subjects/checksum"].shape, np.uint8)
    for i in range(n):
        base = _smooth(rng, (s,), h, w, cutoff=0.06)
        phase = 2 * np.pi * (_smooth(rng, (s,), h, w, cutoff=0.03) - 0.5)
        tt = np.arange(t)[:, None, None]
        radius = 0.25 * min(h, w) * (1 + 0.2 * np.sin(2 * np.pi * tt / t))
        disk = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < radius**2).astype(np.uint8)  # (T, H, W)
        mag = np.clip(0.6 * base[:, None] + 0.4 * disk[None], 0, 1)  # (S, T, H, W)
        k = fft2c(mag * np.exp(1j * phase[:, None])).astype(np.complex64)
        if storage == "float16":
            kscale[i] = max(np.abs(k.real).max(), np.abs(k.imag).max()) / 2.0**15
            stored = np.stack([k.real / kscale[i], k.imag / kscale[i]], axis=-1).astype(np.float16)
        else:
            stored = k
        seg = _labels(disk, base, s)
        g["kspace"][i] = stored
        g["seg"][i] = seg
        for name, r in masks.items():
            g[f"masks/{name}"][i] = _line_mask(rng, s, t, w, r)
        coil_rows = _write_coils(g, i, ids[i], seed, k, seg, coil_settings, storage) if coil_settings is not None else ()
        checksums[i] = np.frombuffer(subject_checksum(stored, seg, extra=coil_rows), np.uint8)
    present = np.ones((n, s), bool)
    present[:, VIEW_ORDER.index("la_3ch")] = False  # 3ch never has a segmentation
    done = np.asarray(status) == 1
    small = {
        "status": np.asarray(status, np.int8),
        "reason": np.array(["" if st == 1 else "synthetic failure" for st in status]),
        "checksum": np.where(done[:, None], checksums, 0).astype(np.uint8),
        "split": np.asarray(split, np.int8),
        "seg_present": present,
        "pixel_spacing": np.full((n, s, 2), 1.8, np.float32),
        "crop_box": np.zeros((n, s, 4), np.int32),
        "sax_slices": np.tile(np.arange(6, dtype=np.int16), (n, 1)),
        "intensity_range": np.zeros((n, s, 2), np.float32),
        "dt": np.full(n, 0.02, np.float32),
        "kspace_scale": kscale,
        "source_frames": np.full(n, t, np.int16),
    }
    for key, values in small.items():
        g[f"subjects/{key}"][...] = values
    if with_labels:
        ph = rng.standard_normal((n, len(PHENOTYPE_COLUMNS))).astype(np.float32)
        ph[0, 3] = np.nan
        pa = create_schema_array(g, "labels/phenotypes", {"N": n, "P": ph.shape[1]})
        pa[:] = ph
        pa.attrs.update({"columns": list(PHENOTYPE_COLUMNS), "units": list(PHENOTYPE_UNITS)})
        dz = rng.integers(-1, 2, size=(n, len(DISEASE_COLUMNS))).astype(np.int8)
        da = create_schema_array(g, "labels/diseases", {"N": n, "D": dz.shape[1]})
        da[:] = dz
        da.attrs.update({"columns": DISEASE_COLUMNS, "unknown": -1})
    if format_version != 1:
        g.attrs["format_version"] = format_version
    consolidate(str(path))
    return str(path)


def _write_coils(g: zarr.Group, row: int, subject_id: str, seed: int, k: np.ndarray, seg: np.ndarray,
                 settings: Any, storage: str) -> tuple[np.ndarray, ...]:
    """Row ``row``'s ``coils/*`` entries, as the simulator computes them for a subject; returns
    them as the subject's checksum covers them."""
    from kspace_sim.coil_settings import subject_coils
    from kspace_sim.fft import ifft2c
    from kspace_sim.store.coil_arrays import coil_checksum_rows, encode_maps

    present = np.ones(len(VIEW_ORDER), bool)
    present[VIEW_ORDER.index("la_3ch")] = False
    sc = subject_coils(subject_id, seed, np.abs(ifft2c(k)), settings, seg, present)
    g["coils/geometry"][row] = sc.geometry
    g["coils/field_seed"][row] = sc.field_seed
    g["coils/noise_seed"][row] = np.uint64(sc.noise_seed)
    g["coils/noise_sigma"][row] = sc.noise_sigma
    stored_maps = encode_maps(sc.maps, storage)
    g["coils/maps"][row] = stored_maps
    return coil_checksum_rows(stored_maps, sc.geometry, sc.field_seed, sc.noise_seed, sc.noise_sigma)


@pytest.fixture(scope="module")
def store(tmp_path_factory: Any) -> str:
    """A default fixture store (6 subjects, 9 × 10 × 32 × 32)."""
    return write_store(tmp_path_factory.mktemp("kmtr_store") / "store.zarr")
