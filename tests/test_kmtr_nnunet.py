"""nnU-Net baselines (kmtr.nnunet): the export to nnU-Net's raw format, the missing-extra error, and
(slow) the whole path export → plan → preprocess → train → predict → Dice / HD95 on a tiny store."""

from __future__ import annotations

import json
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from kmtr_fixtures import write_store
from typer.testing import CliRunner

from cli.kmtr_app import app
from kmtr.fft import ifft2c
from kmtr.nnunet import INSTALL_HINT, nnunet_available
from kmtr.nnunet.export import (
    DATASET,
    ExportedDataset,
    case_id,
    export_dataset,
    parse_case_id,
    read_label_map,
    splits_final,
    write_image,
)

torch.set_num_threads(1)

#: rows 0-2 train, 3 validation, 4-5 test
SPLITS = [0, 0, 0, 1, 2, 2]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return write_store(tmp_path_factory.mktemp("nnunet") / "s.zarr", n=6, t=6, h=32, w=32, status=[1] * 6,
                       split=SPLITS)


def _store_arrays(store: str) -> dict[str, np.ndarray]:
    import zarr

    g = zarr.open_group(store, mode="r")
    return {k: np.asarray(g[k][:]) for k in ("kspace", "seg", "masks/vista_r4", "subjects/seg_present",
                                              "subjects/pixel_spacing")}


def test_case_ids_round_trip():
    assert case_id(12, 6, 25) == "r000012_v06_f025"
    assert parse_case_id("r000012_v06_f025") == (12, 6, 25)
    with pytest.raises(ValueError):
        parse_case_id("BRATS_001")


@pytest.mark.parametrize("kind", ["image", "image_under"])
def test_export_writes_nnunet_raw_format(store, tmp_path, kind):
    """File names, dataset.json, splits, label values 0-5 and geometry of the export; no training."""
    exp = export_dataset(store, tmp_path / "raw", kind, "vista_r4", frames=3)
    root = tmp_path / "raw" / DATASET
    assert exp.folder == root and not (tmp_path / "raw" / f"{DATASET}.partial").exists()
    a = _store_arrays(store)
    frames = [0, 2, 4]  # 3 of T = 6, evenly spaced
    assert exp.frames == frames
    present = a["subjects/seg_present"]
    assert not present[:, 7].any()  # the fixture's 3ch view has no segmentation: no case

    def expected(rows: list[int]) -> list[str]:
        return [case_id(r, s, f) for r in rows for s in np.flatnonzero(present[r]) for f in frames]

    assert exp.cases == {"train": expected([0, 1, 2]), "validation": expected([3]), "test": expected([4, 5])}
    training = exp.cases["train"] + exp.cases["validation"]
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == sorted(f"{c}_0000.nii.gz" for c in training)
    assert sorted(p.name for p in (root / "labelsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in training)
    assert sorted(p.name for p in (root / "imagesTs").iterdir()) == sorted(f"{c}_0000.nii.gz"
                                                                          for c in exp.cases["test"])
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "LV blood pool": 1, "LV myocardium": 2, "RV blood pool": 3,
                              "LA": 4, "RA": 5}
    assert meta["numTraining"] == len(training) and meta["file_ending"] == ".nii.gz"
    assert list(meta["channel_names"]) == ["0"] and meta["channel_names"]["0"] != "CT"  # z-scored, not CT
    assert meta["kmtr"]["input"] == kind and meta["kmtr"]["mask"] == "vista_r4"
    assert splits_final(exp) == [{"train": exp.cases["train"], "val": exp.cases["validation"]}]
    assert ExportedDataset.load(root).cases == exp.cases

    # content and geometry of one training and one test case
    k = torch.from_numpy(a["kspace"])
    for row, s, f, folder in ((1, 6, 2, "imagesTr"), (5, 2, 4, "imagesTs")):
        ks = k[row, s, f]
        if kind == "image_under":
            ks = ks * torch.from_numpy(a["masks/vista_r4"][row, s, f])[None, :].to(ks.dtype)
        want = ifft2c(ks).abs().numpy()
        img = nib.load(str(root / folder / f"{case_id(row, s, f)}_0000.nii.gz"))
        dy, dx = a["subjects/pixel_spacing"][row, s]
        assert img.shape == (32, 32) and np.allclose(img.header.get_zooms(), (dx, dy))
        np.testing.assert_allclose(np.asarray(img.dataobj).T, want, rtol=1e-5, atol=1e-6)
    labels = np.stack([read_label_map(p) for p in sorted((root / "labelsTr").iterdir())])
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= set(range(6))
    np.testing.assert_array_equal(read_label_map(root / "labelsTr" / f"{case_id(0, 3, 4)}.nii.gz"),
                                  a["seg"][0, 3, 4])


def test_exported_case_reads_as_nnunet_reads_it(store, tmp_path):
    """nnU-Net's SimpleITK reader sees a (1, 1, H, W) image with spacing (999·max, dy, dx) and the
    same pixels; a label map it writes back with that geometry reads back unchanged."""
    sitk_io = pytest.importorskip("nnunetv2.imageio.simpleitk_reader_writer", reason=INSTALL_HINT)
    exp = export_dataset(store, tmp_path / "raw", "image", "vista_r4", frames=2)
    case = exp.cases["train"][0]
    image, props = sitk_io.SimpleITKIO().read_images([str(exp.folder / "imagesTr" / f"{case}_0000.nii.gz")])
    row, s, _ = parse_case_id(case)
    dy, dx = _store_arrays(store)["subjects/pixel_spacing"][row, s]
    assert image.shape == (1, 1, 32, 32)
    np.testing.assert_allclose(props["spacing"][1:], (dy, dx), rtol=1e-6)
    ours = np.asarray(nib.load(str(exp.folder / "imagesTr" / f"{case}_0000.nii.gz")).dataobj).T
    np.testing.assert_allclose(image[0, 0], ours, rtol=1e-6)
    seg = (np.arange(32 * 32).reshape(1, 32, 32) % 6).astype(np.uint8)
    sitk_io.SimpleITKIO().write_seg(seg, str(tmp_path / "pred.nii.gz"), props)
    np.testing.assert_array_equal(read_label_map(tmp_path / "pred.nii.gz"), seg[0])


def test_write_image_geometry(tmp_path):
    img = np.arange(12, dtype=np.float32).reshape(3, 4)  # (H, W)
    write_image(tmp_path / "a.nii.gz", img, (1.5, 2.0))
    nii = nib.load(str(tmp_path / "a.nii.gz"))
    assert nii.shape == (4, 3) and np.allclose(nii.header.get_zooms(), (2.0, 1.5))
    np.testing.assert_array_equal(read_label_map(tmp_path / "a.nii.gz"), img.astype(np.uint8))


def test_nnunet_without_the_extra_is_one_line_exit_2(store, tmp_path, monkeypatch):
    import kmtr.nnunet

    monkeypatch.setattr(kmtr.nnunet, "nnunet_available", lambda: False)
    runner = CliRunner()
    out = tmp_path / "runs"
    res = runner.invoke(app, ["train", "--stage", "3", "--task", "segmentation", "--method", "nnunet_u", "--data",
                              store, "--out", str(out)])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pip install -e ".[nnunet]"' in lines[0], res.output
    res = runner.invoke(app, ["benchmark", "--task", "segmentation", "--method", "nnunet", "--data", store,
                              "--out", str(out), "--name", "b"])
    assert res.exit_code == 2 and 'pip install -e ".[nnunet]"' in res.output, res.output
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.skipif(not nnunet_available(), reason=INSTALL_HINT)
def test_nnunet_whole_path_on_a_tiny_store(store, tmp_path, capsys):
    """``kmtr benchmark --method nnunet_u``: export → nnUNetv2_plan_and_preprocess → training (1 epoch
    of 10 iterations) → prediction of the test split → the benchmark's Dice table; then the run's
    Dice / HD95 tables (kmtr eval), a rerun that redoes nothing and a conflicting config."""
    from kmtr.analysis.metrics import segmentation_metrics
    from kmtr.eval.benchmark import compare_segmentation
    from kmtr.eval.report import evaluate_experiment
    from kmtr.nnunet.predictions import load_predictions
    from kmtr.pipeline import is_finished, stage_config, train_one
    from kmtr.train.run_guard import RunConflictError

    trainer = "nnUNetTrainer_1epoch_10iters"
    start = time.perf_counter()
    res = CliRunner().invoke(app, [
        "benchmark", "--task", "segmentation", "--method", "nnunet_u", "--data", store, "--out", str(tmp_path),
        "--name", "b", "--n-boot", "20", "--device", "cpu", "--set", "data.frames=2",
        "--set", f"heads.nnunet_trainer={trainer}"])
    seconds = time.perf_counter() - start
    assert res.exit_code == 0, res.output
    run = tmp_path / "b" / "vista_r4" / "nnunet_u-segmentation"
    with capsys.disabled():  # the figures for the CI budget (wall clock; CPU of each nnU-Net step's processes)
        cpu = [line for log in sorted((run / "logs").glob("*.log")) for line in log.read_text().splitlines()
               if line.startswith("kmtr: step")]
        print(f"\nkmtr benchmark with nnU-Net^u on the tiny store: {seconds:.1f} s", *cpu, sep="\n", flush=True)
    md = (tmp_path / "b" / "report" / "benchmark.md").read_text()
    assert "nnU-Net^u" in md and "LV blood pool" in md and "nnU-Net's own recipe" in md

    fold = run / "nnUNet_results" / DATASET / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").exists()
    splits = json.loads((run / "nnUNet_preprocessed" / DATASET / "splits_final.json").read_text())
    assert {parse_case_id(c)[0] for c in splits[0]["val"]} == {3}  # the store's validation subject
    plans = json.loads((run / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["2d"]["patch_size"] == [32, 32]

    preds, targets = load_predictions(run)
    assert preds.pred.shape == (2, 9, 2, 32, 32) and list(preds.rows) == [4, 5]
    assert targets["names"][1] == "LV blood pool"
    assert preds.pred.max() <= 5 and not preds.pred[:, 7].any()  # no prediction where there is no ground truth
    dice = compare_segmentation({"nnunet_u": preds}, targets["names"], n_boot=20).values["nnU-Net^u"]
    assert dice.between(0, 1).all() and dice["LV blood pool"] > 0  # the disk is found after 10 iterations
    table = segmentation_metrics(preds.pred, preds.truth["seg"], preds.truth["seg_present"].astype(bool),
                                 list(preds.truth["view_names"]), targets["names"], preds.truth["pixel_spacing"])
    assert {"dice", "hd95"} <= set(table.columns) and (table["view"] == "all").any()

    overrides = {"data.data": store, "method": "nnunet_u", "data.frames": "2", "data.mask": "vista_r4",
                 "run.out_dir": str(tmp_path), "run.name": "b/vista_r4", "heads.nnunet_trainer": trainer}
    cfg = stage_config("tiny", 3, "segmentation", overrides)
    assert is_finished(cfg, same_config=True)
    again = train_one(cfg)  # everything is there: nothing is redone
    assert again["already_trained"] and again["seconds"] == {} and again["global_step"] == 10
    other = stage_config("tiny", 3, "segmentation", {**overrides, "data.frames": "3"})
    with pytest.raises(RunConflictError, match="data.frames"):
        train_one(other)

    report = evaluate_experiment(tmp_path / "b" / "vista_r4", n_boot=20)
    text = (report / "report.md").read_text()
    assert "nnunet_u" in text and "HD95" in text
    assert (report / "nnunet_u-segmentation_segmentation.csv").exists()
