"""Torch Dataset over a store, and the batch-level transform that runs on the training device.

Per subject the Dataset yields (shapes from the store; ``T'`` = selected frames):

* ``kspace`` (S, T', H, W) complex64 — fully sampled, coil-free, *un-normalised*, augmented if
  asked (float16-stored k-space is decoded here: ``(re + 1j·im) · subjects/kspace_scale[row]``);
* ``mask`` (S, T', W) bool — the chosen acquisition mask (True = sampled line);
* ``row`` int64 — the store row;
* ``seg`` (S, T', H, W) uint8 and ``seg_present`` (S,) bool — when the store has ``seg``;
* ``phenotypes`` (P,) float32 (NaN = missing), ``diseases`` (D,) int8 — when present;
* stores with coils (format version 2, docs/multicoil.md): ``maps`` (C, S, H, W) complex64,
  ``sigma`` (S,) float32 (per-coil noise standard deviation per view), ``noise_cov`` (C, C)
  complex64 when the coils' noise is correlated, and either ``coil_noise`` (C, S, T', H, W)
  complex64 — the stored (evaluation) white noise, numpy draw of the store's ``noise_rule`` (kept frames only)
  (``coil_noise="stored"``) — or ``noise_seed`` int64, the seed of a fresh draw per (run seed,
  epoch, row) made on the device (``coil_noise="fresh"``, the training augmentation).

:func:`prepare_batch` then moves a collated batch to the device and, there, (for stores with
coils) synthesises the coil k-space ``k_c = FFT(S_c · IFFT(k)) + σ (L n)_c`` of the kept frames
(:mod:`kmtr.coils`), normalises k-space per subject from its sampled lines only
(``batch["scale"]`` (B,), see :mod:`kmtr.normalise`) and computes the complex image
``batch["image"]`` (B, S, T', H, W): ``ifft2c(kspace)``, or for coils the SENSE-1 combination
with the true maps ``Σ_c conj(S_c) IFFT(k_c)`` of the same noisy coil k-space — on the GPU when
training on one. With coils ``batch["kspace"]`` is (B, C, S, T', H, W).

The store is opened lazily, once per process (DataLoader workers open their own handle;
the handle is dropped when the Dataset is pickled), so it is fork- and spawn-safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from kmtr.augment import augment_sample, sample_params
from kmtr.coils import coil_kspace, fresh_coil_acquisition, sense1, stored_white_noise
from kmtr.fft import fft2c, ifft2c
from kmtr.normalise import normalise, subject_scale
from kmtr.store import StoreError, StoreInfo, open_store, read_coil_maps, read_store_info

__all__ = ["AugmentConfig", "COIL_NOISE_MODES", "frame_indices", "KSpaceDataset", "prepare_batch", "sample_cache_is_shared",
           "shared_sample_cache", "zero_filled_image", "data_consistent_image"]

#: ``KSpaceDataset(coil_noise=…)``: the store's fixed evaluation draw, or a fresh draw per epoch
COIL_NOISE_MODES = ("stored", "fresh")

#: The caches that :func:`shared_sample_cache` opens, per (what a dataset reads): None outside it.
_shared_caches: dict[tuple[Any, ...], dict[int, dict[str, torch.Tensor]]] | None = None


@contextmanager
def shared_sample_cache() -> Iterator[None]:
    """Within this block, datasets made with ``cache=True`` that read the same things (store,
    storage options, mask, frames, segmentations, coil noise) share one in-memory cache, so the
    successive stages of one ``kmtr train`` (or the runs of one ``kmtr eval``) read each subject
    from the store once instead of once per stage. The samples are the ones each dataset would
    cache itself (before augmentation), so nothing computed changes. Blocks nest (an inner one uses
    the outer cache); on leaving the outermost block the cache is dropped, so a store changed
    afterwards is read afresh.
    """
    global _shared_caches
    outermost = _shared_caches is None
    if outermost:
        _shared_caches = {}
    try:
        yield
    finally:
        if outermost:
            _shared_caches = None


def sample_cache_is_shared() -> bool:
    """True inside :func:`shared_sample_cache` (a dataset's cache then outlives the dataset)."""
    return _shared_caches is not None


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
            later epochs skip the store (inside :func:`shared_sample_cache`, later datasets that
            read the same do too). It lives in the process that reads, so use it with
            ``num_workers = 0`` (or persistent workers, one copy each); about
            S·T'·H·W·8 bytes per subject (5.9 MB at 9 × 5 × 128 × 128), plus for coils the maps
            (C·S·H·W·8: 9.4 MB at C = 8) and, with ``coil_noise="stored"``, the noise draw
            (C·S·T'·H·W·8: 47 MB at C = 8, T' = 5).
        coil_noise: stores with coils only: ``"stored"`` — the store's fixed noise draw (evaluation,
            prediction: bit-stable) — or ``"fresh"`` — a new draw per epoch on the device (training
            augmentation; seeded by (``augment.seed``, epoch, row)).

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
        coil_noise: str = "stored",
    ) -> None:
        if coil_noise not in COIL_NOISE_MODES:
            raise StoreError(f"coil_noise must be one of {', '.join(COIL_NOISE_MODES)}, not {coil_noise!r}")
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
        self.coil_noise = coil_noise
        coils = self.info.coils
        self.noisy = coils is not None and bool(np.any(coils.noise_sigma[self.rows] > 0))
        self._cache: dict[int, dict[str, torch.Tensor]] = {}
        if cache and _shared_caches is not None:
            reads = (self.location, repr(sorted((storage_options or {}).items())), mask, tuple(self.frames.tolist()),
                     self.with_seg, (coil_noise, self.noisy) if coils is not None else None)
            self._cache = _shared_caches.setdefault(reads, {})
        self._group: zarr.Group | None = None
        self._labels: dict[str, np.ndarray] = {}
        self._labels_loaded = False
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

    @property
    def coils(self) -> int | None:
        """C for a store with coils (the k-space MAE's ``coils``), None for a single-coil store."""
        return self.info.coils.n_coils if self.info.coils is not None else None

    def set_epoch(self, epoch: int) -> None:
        """Changes the augmentation draw (call before each epoch; workers see it on their next start)."""
        self.epoch = int(epoch)

    # -- lazy store handle ----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_group"] = None
        state["_labels"] = {}
        state["_cache"] = {}
        state["_labels_loaded"] = False
        return state

    @property
    def group(self) -> zarr.Group:
        """The open store (opened on first use in each process; the label arrays are read with it)."""
        return self._group if self._group is not None else self._open()

    def _open(self) -> zarr.Group:
        """Open the store and read the label arrays this dataset yields."""
        group = self._group = open_store(self.location, self.storage_options)
        self._labels_loaded = True
        if self.with_labels:
            if self.info.has_phenotypes:
                self._labels["phenotypes"] = np.asarray(group["labels/phenotypes"][:], dtype=np.float32)
            if self.info.has_diseases:
                self._labels["diseases"] = np.asarray(group["labels/diseases"][:], dtype=np.int8)
        if self.info.storage == "float16":
            self._labels["kspace_scale"] = np.asarray(group["subjects/kspace_scale"][:], dtype=np.float32)
        if self.with_seg:
            self._labels["seg_present"] = np.asarray(group["subjects/seg_present"][:], dtype=bool)
        return group

    def split_labels(self, key: str) -> np.ndarray:
        """``'phenotypes'`` (n, P) float32 or ``'diseases'`` (n, D) int8 of this split's subjects (store order).

        Raises:
            StoreError: the store has no such labels (or the Dataset was made without labels).
        """
        if not self._labels_loaded:
            self._open()  # reads the label arrays
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

    def _load(self, row: int) -> dict[str, torch.Tensor]:
        """What row ``row`` stores, frames selected (kspace, mask, seg; maps and the stored noise
        draw for coils), through the cache when on."""
        if self.cache and row in self._cache:
            return self._cache[row]
        kspace = torch.from_numpy(np.ascontiguousarray(self._read("kspace", row)))
        if self.info.storage == "float16":
            kspace = torch.view_as_complex(kspace.float()) * float(self._labels["kspace_scale"][row])
        out = {"kspace": kspace, "mask": torch.from_numpy(np.ascontiguousarray(self._read(f"masks/{self.mask_name}", row)))}
        if self.with_seg:
            out["seg"] = torch.from_numpy(np.ascontiguousarray(self._read("seg", row)))
        coils = self.info.coils
        if coils is not None:
            out["maps"] = torch.from_numpy(read_coil_maps(self.group, row, coils.maps_storage))
            if self.noisy and self.coil_noise == "stored":
                shape = (coils.n_coils, self.info.s, self.info.t, self.info.h, self.info.w)
                out["coil_noise"] = torch.from_numpy(stored_white_noise(int(coils.noise_seed[row]), shape, self.frames))
        if self.cache:
            self._cache[row] = out
        return out

    def unaugmented(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(kspace (S, T', H, W) complex as stored, mask (S, T', W)) of the i-th subject, no augmentation."""
        stored = self._load(int(self.rows[i]))
        return stored["kspace"], stored["mask"]

    def fresh_noise_seed(self, row: int) -> int:
        """Seed (63-bit) of row ``row``'s fresh coil-noise draw this epoch, from (augment seed, epoch, row)."""
        seq = np.random.SeedSequence([int(self.augment.seed), self.epoch, int(row), 0xC011])
        return int(seq.generate_state(1, np.uint64)[0] >> np.uint64(1))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        stored = self._load(row)
        if not self._labels_loaded:  # every sample came from a shared cache so far: the labels are read with the store
            self._open()
        kspace, mask, seg = stored["kspace"], stored["mask"], stored.get("seg")
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
        coils = self.info.coils
        if coils is not None:
            out["maps"] = stored["maps"]
            if self.noisy:
                out["sigma"] = torch.from_numpy(coils.noise_sigma[row].copy())
                if not coils.independent:
                    out["noise_cov"] = torch.from_numpy(coils.noise_cov.astype(np.complex64))
                if self.coil_noise == "stored":
                    out["coil_noise"] = stored["coil_noise"]
                else:
                    out["noise_seed"] = torch.tensor(self.fresh_noise_seed(row), dtype=torch.int64)
        return out


def prepare_batch(batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Move a collated batch to ``device`` and compute, there, the (coil) k-space, its normalisation and images.

    Args:
        batch: collated Dataset samples (``kspace`` (B, S, T, H, W) complex, ``mask`` (B, S, T, W) …;
            for stores with coils also ``maps`` (B, C, S, H, W) and the noise entries).

    Returns:
        The batch on ``device`` with ``kspace`` normalised per subject by the RMS of its sampled
        lines (``mask``; all coils' sampled lines for coils), ``scale`` (B,) float32
        (``kspace · scale`` is the acquired k-space) and ``image`` (B, S, T, H, W) divided by the
        same scale. Single-coil: ``kspace`` (B, S, T, H, W), ``image = ifft2c(kspace)``. Coils:
        ``kspace`` (B, C, S, T, H, W) = ``FFT(S_c · IFFT(k)) + σ (L n)_c`` with the stored white
        noise ``coil_noise`` (bit-stable), a fresh draw seeded by ``noise_seed`` (one torch
        generator per subject on ``device``) or no noise (noise-free store), and ``image`` its
        SENSE-1 combination with the true maps ``Σ_c conj(S_c) IFFT(k_c)``.
    """
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if "maps" in out:
        coil_k, image = _coil_acquisition(out)
        out["kspace"] = coil_k
    else:
        image = None
    k = out["kspace"]
    scale = torch.stack([subject_scale(k[b], out["mask"][b]) for b in range(k.shape[0])])  # sampled lines only
    out["scale"] = scale
    if image is None:
        out["kspace"] = normalise(k, scale)
        out["image"] = ifft2c(out["kspace"])
    else:  # the coil k-space and image were made here: normalised in place
        out["kspace"] = k.div_(scale.reshape(-1, *(1,) * (k.ndim - 1)))
        out["image"] = image.div_(scale.reshape(-1, *(1,) * (image.ndim - 1)))
    return out


def _coil_acquisition(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(coil k-space (B, C, S, T, H, W), SENSE-1 image (B, S, T, H, W)) of a batch on its device;
    removes the noise entries from ``out``."""
    k, maps = out["kspace"], out["maps"]
    sigma = out.pop("sigma", None)
    cov = out.pop("noise_cov", None)
    cov = cov[0] if cov is not None else None  # one covariance per store
    white = out.pop("coil_noise", None)
    seeds = out.pop("noise_seed", None)
    if seeds is not None:
        gens = [torch.Generator(device=k.device).manual_seed(int(v)) for v in seeds.tolist()]
        return fresh_coil_acquisition(k, maps, sigma, cov, gens)
    coil_k = coil_kspace(k, maps, sigma if white is not None else None, cov, white_noise=white)
    return coil_k, sense1(coil_k, maps)


def zero_filled_image(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Zero-filled image of a prepared batch's undersampled k-space (B, S, T, H, W) complex:
    ``ifft2c(k · mask)``, or for coils the SENSE-1 combination of the zero-filled coil k-space."""
    k, mask = batch["kspace"], batch["mask"]
    if k.ndim == 6:
        return sense1(k * mask[:, None, ..., None, :].to(k.dtype), batch["maps"])
    return ifft2c(k * mask[..., None, :].to(k.dtype))


def data_consistent_image(image: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A reconstruction with the acquired k-space samples put back (hard data consistency, the
    noise-free DC of Schlemper et al., IEEE TMI 2018): the prediction's k-space is kept where the
    line was not sampled and replaced by the measured value where it was. It uses nothing but the
    undersampled k-space the model read.

    Args:
        image: (B, S, T, H, W) complex predicted image, in the batch's normalisation.
        batch: a prepared batch (:func:`prepare_batch`): ``kspace`` (B, S, T, H, W), or coil
            k-space (B, C, S, T, H, W) with ``maps`` (B, C, S, H, W); ``mask`` (B, S, T, W).

    Returns:
        (B, S, T, H, W) complex: ``ifft2c(M·k + (1 − M)·fft2c(x))``; for coils
        ``Σ_c conj(S_c) ifft2c(M·k_c + (1 − M)·fft2c(S_c·x))`` (each coil's acquired lines kept,
        combined as the target is: SENSE-1 with the true maps).
    """
    k, mask = batch["kspace"], batch["mask"]
    if k.ndim == 6:
        maps = batch["maps"].to(device=k.device, dtype=k.dtype).unsqueeze(3)  # (B, C, S, 1, H, W)
        predicted = fft2c(maps * image.to(k.dtype).unsqueeze(1))
        sampled = mask[:, None, ..., None, :]
        return sense1(torch.where(sampled, k, predicted), batch["maps"])
    predicted = fft2c(image.to(k.dtype))
    return ifft2c(torch.where(mask[..., None, :], k, predicted))
