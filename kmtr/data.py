"""Torch Dataset over a store, and the batch-level transform that runs on the training device.

Per subject the Dataset yields (shapes from the store; ``T'`` = selected frames):

* ``kspace`` (S, T', H, W) complex64 — fully sampled, *un-normalised*, augmented if asked
  (float16-stored k-space is decoded here: ``(re + 1j·im) · subjects/kspace_scale[row]``);
* ``mask`` (S, T', W) bool — the chosen acquisition mask (True = sampled line);
* ``row`` int64 — the store row;
* ``seg`` (S, T', H, W) uint8 and ``seg_present`` (S,) bool — when the store has ``seg``;
* ``phenotypes`` (P,) float32 (NaN = missing), ``diseases`` (D,) int8 — when present.

:func:`prepare_batch` then moves a collated batch to the device and, there, normalises k-space
per subject from its sampled lines only (``batch["scale"]`` (B,), see :mod:`kmtr.normalise`) and computes the complex image
``batch["image"] = ifft2c(kspace)`` (B, S, T', H, W) — on the GPU when training on one.

The store is opened lazily, once per process (DataLoader workers open their own handle;
the handle is dropped when the Dataset is pickled), so it is fork- and spawn-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from kmtr.augment import augment_sample, sample_params
from kmtr.fft import ifft2c
from kmtr.normalise import normalise, subject_scale
from kmtr.store import StoreError, StoreInfo, open_store, read_store_info

__all__ = ["AugmentConfig", "frame_indices", "KSpaceDataset", "prepare_batch"]


@dataclass(frozen=True)
class AugmentConfig:
    """k-space-valid augmentation (see :mod:`kmtr.augment`); off when ``enabled`` is False."""

    enabled: bool = False
    flip_p: float = 0.5
    max_angle: float = 0.0
    phase_amplitude: float = 0.0  # rad; > 0: a fresh smooth B0 phase per slice (kmtr.augment)
    seed: int = 0


def frame_indices(t: int, frames: int | None) -> np.ndarray:
    """``frames`` evenly spaced indices out of ``t`` (``floor(i · t / frames)``), e.g. 50 → 25 → 0, 2, …

    Raises:
        StoreError: ``frames`` < 1 or > ``t``.
    """
    if frames is None or frames == t:
        return np.arange(t)
    if not 1 <= frames <= t:
        raise StoreError(f"cannot sub-sample {frames} frames out of T = {t}")
    return (np.arange(frames) * t) // frames


class KSpaceDataset(Dataset):
    """Subjects of one split of a store (done rows only), one sample per subject.

    Args:
        location: store path, fsspec URL or Croissant manifest.
        split: 'train', 'validation', 'test' or 'all'.
        mask: name of a ``masks/*`` array, e.g. ``'vista_r4'``.
        frames: number of frames to keep (None = all T).
        augment: augmentation settings (deterministic per (seed, epoch, row)).
        with_seg, with_labels: also yield segmentations / labels when the store has them.
        storage_options: fsspec options for URLs.
        cache: keep every sample read in memory (after frame selection, before augmentation):
            later epochs skip the store. It lives in the process that reads, so use it with
            ``num_workers = 0`` (or persistent workers, one copy each); about
            S·T'·H·W·8 bytes per subject (5.9 MB at 9 × 5 × 128 × 128).

    Raises:
        StoreError: bad format version, missing mask, empty split or bad frame count — at
        construction, before any training starts.
    """

    def __init__(
        self,
        location: str,
        split: str = "train",
        mask: str = "vista_r4",
        frames: int | None = None,
        augment: AugmentConfig | None = None,
        with_seg: bool = True,
        with_labels: bool = True,
        storage_options: dict[str, Any] | None = None,
        cache: bool = False,
    ) -> None:
        group = open_store(location, storage_options)
        self.info: StoreInfo = read_store_info(group, str(location))
        self.info.check_mask(mask)
        self.location = str(location)
        self.storage_options = storage_options
        self.split = split
        self.mask_name = mask
        self.rows = self.info.rows(split)
        self.frames = frame_indices(self.info.t, frames)
        self.augment = augment or AugmentConfig()
        self.with_seg = with_seg and self.info.has_seg
        self.with_labels = with_labels
        self.epoch = 0
        self.cache = cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = {}
        self._group: zarr.Group | None = None
        self._labels: dict[str, np.ndarray] = {}
        step = self.frames[1] - self.frames[0] if len(self.frames) > 1 else 1
        regular = len(self.frames) == 1 or bool(np.all(np.diff(self.frames) == step))
        self._tsel: slice | np.ndarray = (
            slice(int(self.frames[0]), int(self.frames[-1]) + 1, int(step)) if regular else self.frames
        )

    # -- shape of a sample ----------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(S, T', H, W) of every sample's k-space."""
        return (self.info.s, len(self.frames), self.info.h, self.info.w)

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation draw (call before each epoch; workers see it on their next start)."""
        self.epoch = int(epoch)

    # -- lazy store handle ----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group"] = None
        state["_labels"] = {}
        state["_cache"] = {}
        return state

    @property
    def group(self) -> zarr.Group:
        if self._group is None:
            self._group = open_store(self.location, self.storage_options)
            if self.with_labels:
                if self.info.has_phenotypes:
                    self._labels["phenotypes"] = np.asarray(self._group["labels/phenotypes"][:], dtype=np.float32)
                if self.info.has_diseases:
                    self._labels["diseases"] = np.asarray(self._group["labels/diseases"][:], dtype=np.int8)
            if self.info.storage == "float16":
                self._labels["kspace_scale"] = np.asarray(self._group["subjects/kspace_scale"][:], dtype=np.float32)
            if self.with_seg:
                self._labels["seg_present"] = np.asarray(self._group["subjects/seg_present"][:], dtype=bool)
        return self._group

    def split_labels(self, key: str) -> np.ndarray:
        """``'phenotypes'`` (n, P) float32 or ``'diseases'`` (n, D) int8 of this split's subjects (store order).

        Raises:
            StoreError: the store has no such labels (or the Dataset was made without labels).
        """
        self.group  # loads the label arrays
        if key not in self._labels:
            raise StoreError(f"{self.location} has no labels/{key}")
        return self._labels[key][self.rows]

    def _read(self, name: str, row: int) -> np.ndarray:
        arr = self.group[name]
        if isinstance(self._tsel, slice):
            return arr[row, :, self._tsel]
        return arr.oindex[row, :, self._tsel]

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, row: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(kspace, mask, seg) of one row as stored (frames selected), through the cache when on."""
        if self.cache and row in self._cache:
            return self._cache[row]
        kspace = torch.from_numpy(np.ascontiguousarray(self._read("kspace", row)))
        if self.info.storage == "float16":
            kspace = torch.view_as_complex(kspace.float()) * float(self._labels["kspace_scale"][row])
        mask = torch.from_numpy(np.ascontiguousarray(self._read(f"masks/{self.mask_name}", row)))
        seg = torch.from_numpy(np.ascontiguousarray(self._read("seg", row))) if self.with_seg else None
        if self.cache:
            self._cache[row] = (kspace, mask, seg)
        return kspace, mask, seg

    def unaugmented(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(kspace (S, T', H, W) complex as stored, mask (S, T', W)) of the i-th subject, no augmentation."""
        kspace, mask, _ = self._load(int(self.rows[i]))
        return kspace, mask

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        kspace, mask, seg = self._load(row)
        if self.augment.enabled:
            rng = np.random.default_rng([self.augment.seed, self.epoch, row])
            s, _, h, w = kspace.shape
            params = sample_params(rng, self.augment.flip_p, self.augment.max_angle, self.augment.phase_amplitude, (s, h, w))
            kspace, seg = augment_sample(kspace, seg, params)
        out: dict[str, torch.Tensor] = {"kspace": kspace, "mask": mask, "row": torch.tensor(row, dtype=torch.int64)}
        if seg is not None:
            out["seg"] = seg
            out["seg_present"] = torch.from_numpy(self._labels["seg_present"][row].copy())
        for key in ("phenotypes", "diseases"):
            if key in self._labels:
                out[key] = torch.from_numpy(self._labels[key][row].copy())
        return out


def prepare_batch(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move a collated batch to ``device`` and compute, there, the normalised k-space and images.

    Args:
        batch: collated Dataset samples (``kspace`` (B, S, T, H, W) complex, ``mask`` (B, S, T, W) …).

    Returns:
        The batch on ``device`` with ``kspace`` normalised per subject by the RMS of its sampled
        lines (``mask``), ``scale`` (B,) float32
        (``kspace · scale`` is the stored k-space) and ``image`` = ``ifft2c(kspace)`` (B, S, T, H, W).
    """
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    k = out["kspace"]
    scale = torch.stack([subject_scale(k[b], out["mask"][b]) for b in range(k.shape[0])])  # sampled lines only
    out["kspace"] = normalise(k, scale)
    out["scale"] = scale
    out["image"] = ifft2c(out["kspace"])
    return out
