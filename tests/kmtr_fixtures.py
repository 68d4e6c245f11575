"""A tiny store written directly with zarr, following docs/store-format.md (format version 1).

Used by the kmtr tests and benchmarks; it does not use the simulator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

VIEW_ORDER = ["sax0", "sax1", "sax2", "sax3", "sax4", "sax5", "la_2ch", "la_3ch", "la_4ch"]


def _fft2c(x: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), norm="ortho"), axes=ax).astype(np.complex64)


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


def write_store(
    path: str | Path,
    n: int = 6,
    s: int = 9,
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
) -> str:
    """Write a store of ``n`` synthetic subjects; returns its path.

    Defaults: rows 0-3 train, row 4 validation, row 5 test but *failed* (so 'test' is empty).
    ``storage='float16'`` writes (N, S, T, H, W, 2) float16 pairs of ``k / subjects/kspace_scale``.
    """
    rng = np.random.default_rng(seed)
    masks = masks if masks is not None else {"vista_r4": 4.0, "gaussian_r8": 8.0}
    status = status if status is not None else [1] * (n - 1) + [2]
    split = split if split is not None else ([0] * max(n - 2, 0) + [1, 2])[:n]
    g = zarr.open_group(str(path), mode="w-")
    if storage == "float16":
        ks = g.create_array("kspace", shape=(n, s, t, h, w, 2), chunks=(1, 1, t, h, w, 2), shards=(1, s, t, h, w, 2),
                            dtype="float16", fill_value=0, compressors=None)
    else:
        ks = g.create_array("kspace", shape=(n, s, t, h, w), chunks=(1, 1, t, h, w), shards=(1, s, t, h, w),
                            dtype="complex64", fill_value=0j, compressors=None)
    ks.attrs["storage"] = storage
    kscale = np.ones(n, np.float32)
    sg = g.create_array("seg", shape=(n, s, t, h, w), chunks=(1, 1, t, h, w), shards=(1, s, t, h, w),
                        dtype="uint8", fill_value=0)
    marrs = {
        name: g.create_array(f"masks/{name}", shape=(n, s, t, w), chunks=(1, s, t, w), dtype=bool, fill_value=False)
        for name in masks
    }
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = _smooth(rng, (s,), h, w, cutoff=0.06)
        phase = 2 * np.pi * (_smooth(rng, (s,), h, w, cutoff=0.03) - 0.5)
        tt = np.arange(t)[:, None, None]
        radius = 0.25 * min(h, w) * (1 + 0.2 * np.sin(2 * np.pi * tt / t))
        disk = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < radius**2).astype(np.float64)  # (T, H, W)
        mag = np.clip(0.6 * base[:, None] + 0.4 * disk[None], 0, 1)  # (S, T, H, W)
        img = mag * np.exp(1j * phase[:, None])
        k = _fft2c(img)
        if storage == "float16":
            kscale[i] = max(np.abs(k.real).max(), np.abs(k.imag).max()) / 2.0**15
            ks[i] = np.stack([k.real / kscale[i], k.imag / kscale[i]], axis=-1).astype(np.float16)
        else:
            ks[i] = k
        sg[i] = (disk[None] * (1 + (base[:, None] > 0.5))).astype(np.uint8)  # (S, T, H, W) labels 0, 1, 2
        for name, r in masks.items():
            marrs[name][i] = _line_mask(rng, s, t, w, r)
    present = np.ones((n, s), bool)
    present[:, 7] = False  # 3ch never has a segmentation
    small = {
        "id": np.array([f"S{i:04d}" for i in range(n)]),
        "status": np.asarray(status, np.int8),
        "reason": np.array(["" if st == 1 else "synthetic failure" for st in status]),
        "checksum": np.zeros((n, 32), np.uint8),
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
        dtype = str if values.dtype.kind == "U" else values.dtype
        g.create_array(f"subjects/{key}", shape=values.shape, chunks=values.shape, dtype=dtype)[:] = values
    g["subjects/split"].attrs["codes"] = {"train": 0, "validation": 1, "test": 2}
    if with_labels:
        ph = rng.standard_normal((n, 18)).astype(np.float32)
        ph[0, 3] = np.nan
        pa = g.create_array("labels/phenotypes", shape=(n, 18), chunks=(n, 18), dtype="float32")
        pa[:] = ph
        pa.attrs.update({"columns": [f"p{j}" for j in range(18)], "units": ["" for _ in range(18)]})
        da = g.create_array("labels/diseases", shape=(n, 3), chunks=(n, 3), dtype="int8")
        da[:] = rng.integers(-1, 2, size=(n, 3)).astype(np.int8)
        da.attrs["columns"] = ["cad", "af", "hf"]
    g.attrs.update({
        "format": "kspace-mri-store",
        "format_version": format_version,
        "simulator_version": "fixture",
        "git_commit": "",
        "created": "2026-01-01T00:00:00Z",
        "parameters": {"frames": t, "crop": h},
        "global_seed": seed,
        "fft_convention": "centred orthonormal 2D DFT over (H, W): fftshift(fft2(ifftshift(x), norm='ortho')); "
                          "phase-encoding direction W",
        "view_order": VIEW_ORDER[:s],
        "views": {"sax": [v for v in range(min(s, 6))], "lax": [v for v in range(6, s)]},
        "label_map": {"0": "bg", "1": "LV", "2": "MYO"},
        "masks": {name: {"pattern": name.split("_r")[0], "acceleration": r} for name, r in masks.items()},
        "builds": [],
        "pseudonymised": False,
    })
    zarr.consolidate_metadata(str(path))
    return str(path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: Any) -> str:
    """A default fixture store (6 subjects, 9 × 10 × 32 × 32)."""
    return write_store(tmp_path_factory.mktemp("kmtr_store") / "store.zarr")
