"""A store's images and segmentations in nnU-Net's raw dataset format (nnU-Net v2, 2-D cases).

One case per (subject, view, kept frame) that has a ground truth (``subjects/seg_present``; the
3ch view has none), named ``r<row>_v<slice>_f<frame>`` (store row, slice index in the store's view
order, frame index in the store's T axis: no subject id reaches a file name)::

    <raw>/Dataset001_KMTR/
        dataset.json             channel_names, labels 0..5, numTraining, file_ending .nii.gz
        imagesTr/<case>_0000.nii.gz   training and validation subjects' images (float32)
        labelsTr/<case>.nii.gz        their label maps (uint8, 0 background .. 5 RA)
        imagesTs/<case>_0000.nii.gz   test subjects' images
        export.json              what was exported (store, mask, frames, input) and every case list

Images are 2-D NIfTI files (nibabel) of the magnitude image in the store's units: ``|ifft2c(k)|``
(``image``, fully sampled) or ``|ifft2c(k · mask)|`` (``image_under``, zero-filled with the store's
acquisition mask), the same inputs as the image baselines (:func:`kmtr.models.baselines.baseline_input`).
nnU-Net z-scores every image itself, so no per-subject scale is applied.

On a store with coils (docs/multicoil.md) the images are the magnitude of the **SENSE-1**
combination with the true maps, ``|Σ_c conj(S_c) IFFT(k_c)|`` (``image``) or
``|Σ_c conj(S_c) IFFT(k_c · mask)|`` (``image_under``), of the coil k-space synthesised with the
store's **stored (evaluation) noise draw** for every split: nnU-Net trains offline from these
files, so its training images carry one fixed noise draw per subject (no fresh draw per epoch,
unlike the baselines trained in kmtr), and its test images are the noisy images every other
method is evaluated on. ``dataset.json`` (its ``kmtr`` provenance) records the coils and the noise. The pixel spacing is the
store's (``subjects/pixel_spacing``, mm): nnU-Net reads a (H, W) case as (1, 1, H, W) with spacing
(999 · max, dy, dx) and resamples to the dataset's median spacing as it always does.

The store's validation subjects go into ``imagesTr`` as well; :func:`splits_final` makes them
nnU-Net's validation fold (``splits_final.json``: fold 0 = store train / store validation), so
nnU-Net's own validation and checkpoint selection never see a training subject's frames and the
test subjects are never seen at all.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from kmtr.data import KSpaceDataset, prepare_batch
from kmtr.models.baselines import baseline_input
from kmtr.store import StoreError
from kmtr.tasks.segmentation import NUM_CLASSES  # the trainer's label map: 0 background … 5 RA

__all__ = [
    "DATASET",
    "FILE_ENDING",
    "NUM_CLASSES",
    "ExportedDataset",
    "case_id",
    "dataset_json",
    "export_dataset",
    "label_names",
    "magnitude_images",
    "parse_case_id",
    "read_label_map",
    "splits_final",
    "write_image",
]

DATASET = "Dataset001_KMTR"
FILE_ENDING = ".nii.gz"
_CASE = re.compile(r"^r(\d{6})_v(\d{2})_f(\d{3})$")


def case_id(row: int, slice_: int, frame: int) -> str:
    """nnU-Net case identifier of store row ``row``, slice ``slice_`` and frame ``frame`` (of T)."""
    return f"r{row:06d}_v{slice_:02d}_f{frame:03d}"


def parse_case_id(case: str) -> tuple[int, int, int]:
    """Inverse of :func:`case_id`: (row, slice, frame).

    Raises:
        ValueError: not a case identifier written by :func:`case_id`.
    """
    m = _CASE.match(case)
    if m is None:
        raise ValueError(f"{case!r} is not a kmtr nnU-Net case identifier (r<row>_v<slice>_f<frame>)")
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def magnitude_images(kspace: torch.Tensor, mask: torch.Tensor, kind: str, maps: torch.Tensor | None = None
                     ) -> np.ndarray:
    """Magnitude images (S, T, H, W) float32 of one subject's k-space (S, T, H, W) complex and line
    mask (S, T, W): ``kind`` ``image`` (fully sampled) or ``image_under`` (zero-filled). For a store
    with coils, ``kspace`` is the coil k-space (C, S, T, H, W) and ``maps`` (C, S, H, W) the true
    maps: the magnitude of the SENSE-1 image (:func:`kmtr.models.baselines.baseline_input`)."""
    if kind not in ("image", "image_under"):
        raise ValueError(f"nnU-Net segments images: kind must be 'image' or 'image_under', not {kind!r}")
    return baseline_input(kspace[None], mask[None], kind, maps=None if maps is None else maps[None])[0].abs().float().numpy()


def _subject_images(ds: KSpaceDataset, sample: dict[str, torch.Tensor], kind: str) -> np.ndarray:
    """:func:`magnitude_images` of a Dataset sample, in the store's units; with coils, of the coil
    k-space with the sample's noise (the stored draw: the export's datasets read ``coil_noise="stored"``)."""
    if ds.coils is None:
        return magnitude_images(sample["kspace"], sample["mask"], kind)
    batch = prepare_batch({k: v[None] for k, v in sample.items()}, "cpu")  # coil k-space, normalised
    coil_k = batch["kspace"][0] * batch["scale"][0]  # back to the store's units
    return magnitude_images(coil_k, sample["mask"], kind, batch["maps"][0])


def label_names(label_map: dict[str, str]) -> list[str]:
    """Names of labels 0..5 for dataset.json: 'background', then the store's ``label_map`` names
    (``class<i>`` where a name is missing or repeated)."""
    names = ["background"]
    for i in range(1, NUM_CLASSES):
        name = str(label_map.get(str(i), "")).strip()
        names.append(name if name and name not in names else f"class{i}")
    return names


def dataset_json(names: Sequence[str], n_training: int, kind: str, provenance: dict[str, Any]) -> dict[str, Any]:
    """nnU-Net v2's ``dataset.json``: one non-CT channel (so nnU-Net z-scores each image), labels
    name → value with background 0, the number of training cases, the file ending and the
    reader (SimpleITKIO reads 2-D NIfTI natively); ``kmtr`` records where the data came from."""
    return {
        "channel_names": {"0": "cine_magnitude" if kind == "image" else "cine_magnitude_zero_filled"},
        "labels": {name: i for i, name in enumerate(names)},
        "numTraining": int(n_training),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": "SimpleITKIO",
        "name": DATASET,
        "description": "cine MRI magnitude images from a kspace-mri-store, one 2-D case per subject, view and frame",
        "kmtr": provenance,
    }


def write_image(path: Path, image: np.ndarray, spacing: Sequence[float]) -> None:
    """Write a (H, W) array as a 2-D NIfTI file; ``spacing`` = (dy, dx) mm (row, column).

    NIfTI's first axis is x (the column index W), so the array is stored transposed with zooms
    (dx, dy): SimpleITK (nnU-Net's reader) gives it back as (H, W) with spacing (dx, dy).
    """
    dy, dx = float(spacing[0]), float(spacing[1])
    img = nib.Nifti1Image(np.ascontiguousarray(image.T), np.diag([dx, dy, 1.0, 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def read_label_map(path: Path) -> np.ndarray:
    """A 2-D label map written by nnU-Net (or :func:`write_image`) → (H, W) uint8."""
    data = np.asarray(nib.load(str(path)).dataobj)
    if data.ndim != 2:
        data = data.reshape(data.shape[0], data.shape[1])
    return np.ascontiguousarray(data.T).astype(np.uint8)


@dataclass
class ExportedDataset:
    """What :func:`export_dataset` wrote: the dataset folder and the case lists per store split."""

    folder: Path
    kind: str
    mask: str
    frames: list[int]
    cases: dict[str, list[str]] = field(default_factory=dict)  # train / validation / test → case ids

    @property
    def n_training(self) -> int:
        return len(self.cases.get("train", [])) + len(self.cases.get("validation", []))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "mask": self.mask, "frames": self.frames, "cases": self.cases}

    @classmethod
    def load(cls, folder: Path) -> ExportedDataset:
        """Read ``<folder>/export.json`` (raises FileNotFoundError when the export is not complete)."""
        d = json.loads((folder / "export.json").read_text())
        return cls(folder, d["kind"], d["mask"], list(d["frames"]), {k: list(v) for k, v in d["cases"].items()})


def _split_dataset(location: str, split: str | None, mask: str, frames: int | None) -> KSpaceDataset | None:
    if not split:
        return None
    try:
        return KSpaceDataset(location, split, mask, frames, with_seg=True, with_labels=False, coil_noise="stored")
    except StoreError as err:
        if "has no subject with status done" in str(err):
            return None  # an empty split exports no case
        raise


def _export_split(ds: KSpaceDataset, kind: str, images: Path, labels: Path | None) -> list[str]:
    spacing = np.asarray(ds.group["subjects/pixel_spacing"][:], dtype=np.float64)
    cases: list[str] = []
    for i, row in enumerate(ds.rows):
        sample = ds[i]
        present = sample["seg_present"].numpy().astype(bool)
        mags = _subject_images(ds, sample, kind)
        seg = sample["seg"].numpy()
        if seg.size and int(seg.max()) >= NUM_CLASSES:
            raise StoreError(f"{ds.location}: row {int(row)} has segmentation label {int(seg.max())}; "
                             f"labels must be 0..{NUM_CLASSES - 1}")
        for s in np.flatnonzero(present):
            for j, frame in enumerate(ds.frames):
                case = case_id(int(row), int(s), int(frame))
                write_image(images / f"{case}_0000{FILE_ENDING}", mags[s, j], spacing[row, s])
                if labels is not None:
                    write_image(labels / f"{case}{FILE_ENDING}", seg[s, j].astype(np.uint8), spacing[row, s])
                cases.append(case)
    return cases


def export_dataset(location: str, raw: Path, kind: str, mask: str, frames: int | None,
                   train_split: str = "train", val_split: str | None = "validation",
                   test_split: str = "test") -> ExportedDataset:
    """Write the store's segmentation data as ``<raw>/Dataset001_KMTR`` (see the module docstring).

    The folder is written as ``Dataset001_KMTR.partial`` and renamed when complete, so an
    interrupted export leaves no dataset that looks finished (a rerun starts it again).

    Args:
        location: store path, fsspec URL or Croissant manifest.
        raw: the run's ``nnUNet_raw`` folder.
        kind: ``image`` (fully sampled magnitude) or ``image_under`` (zero-filled with ``mask``).
        mask: the store's ``masks/<mask>`` (used for ``image_under``; recorded for both).
        frames: frames kept out of T (:func:`kmtr.data.frame_indices`), None = all.

    Raises:
        StoreError: no segmentations in the store, an empty training or test split, a label > 5.
    """
    if kind not in ("image", "image_under"):
        raise ValueError(f"nnU-Net segments images: kind must be 'image' or 'image_under', not {kind!r}")
    train = _split_dataset(location, train_split, mask, frames)
    if train is None:
        raise StoreError(f"{location}: split {train_split!r} has no subject with status done")
    if not train.info.has_seg:
        raise StoreError(f"{location} has no 'seg' array (built without segmentations): nothing to segment")
    val = _split_dataset(location, val_split, mask, frames)
    test = _split_dataset(location, test_split, mask, frames)
    if test is None:
        raise StoreError(f"{location}: split {test_split!r} has no subject with status done")
    final = Path(raw) / DATASET
    tmp = Path(raw) / f"{DATASET}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (tmp / sub).mkdir(parents=True)
    out = ExportedDataset(final, kind, mask, [int(f) for f in train.frames])
    out.cases["train"] = _export_split(train, kind, tmp / "imagesTr", tmp / "labelsTr")
    out.cases["validation"] = _export_split(val, kind, tmp / "imagesTr", tmp / "labelsTr") if val else []
    out.cases["test"] = _export_split(test, kind, tmp / "imagesTs", None)
    if not out.cases["train"] or not out.cases["test"]:
        raise StoreError(f"{location}: no training or no test subject has a segmented view")
    provenance = {"store": train.info.url, "mask": mask, "input": kind, "frames": out.frames,
                  "splits": {"train": train_split, "validation": val_split, "test": test_split}}
    if train.info.coils is not None:
        provenance["coils"] = {"summary": train.info.coils.summary(), "image": "|SENSE-1| with the true maps",
                               "noise": "the store's stored (evaluation) draw, every split"}
    names = label_names(train.info.label_map)
    (tmp / "dataset.json").write_text(json.dumps(dataset_json(names, out.n_training, kind, provenance), indent=2))
    (tmp / "export.json").write_text(json.dumps(out.to_json(), indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return out


def splits_final(export: ExportedDataset) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` content: one fold (0) training on the store's training
    subjects' cases and validating on its validation subjects' cases."""
    return [{"train": list(export.cases["train"]), "val": list(export.cases["validation"])}]
