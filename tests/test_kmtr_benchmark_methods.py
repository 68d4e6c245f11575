"""Issue 21: the spectrum baseline as its own method, no unsampled line reaching any model, what
each method is, the learning-rate search, and the benchmark's bad-input checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kmtr_fixtures import write_store
from test_kmtr_stages import SMALL, cfg_for, store8  # noqa: F401  (store8 is a fixture)
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from cli.kmtr_app import app
from kmtr.data import KSpaceDataset, prepare_batch
from kmtr.eval.lr_search import LR_GRIDS, last_val_loss, lr_grid, tries
from kmtr.pipeline import train_one
from kmtr.stage3 import METHODS, build_task_model, method_spec, task_targets

torch.set_num_threads(1)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_spectrum_ridge_fits_linear_models_chosen_on_validation(store8, tmp_path, task):  # noqa: F811
    from sklearn.linear_model import LogisticRegression, Ridge

    from kmtr.eval.predict import load_run, predict_split
    from kmtr.train.spectrum_ridge import LOGISTIC_CS, RIDGE_ALPHAS, split_features

    summary = train_one(cfg_for(store8, tmp_path, 3, task, method="spectrum_ridge"))
    run_path = Path(summary["run_dir"])
    assert run_path.name == f"spectrum_ridge-{task}" and np.isfinite(summary["last"]["loss"])
    record = json.loads((run_path / "regularisation.json").read_text())
    grid = list(RIDGE_ALPHAS if task == "regression" else LOGISTIC_CS)
    assert record["grid"] == grid
    for out in record["outputs"]:  # the value with the lowest validation loss
        losses = np.array(out["val_loss"], float)
        if np.isfinite(losses).any():
            assert out["chosen"] == grid[int(np.nanargmin(losses))]
    run = load_run(run_path)
    net = run.model.net
    assert not any(isinstance(m, torch.nn.TransformerEncoderLayer) for m in net.modules())  # no encoder
    # the saved linear map reproduces scikit-learn's fit on the standardised training features
    train_ds = KSpaceDataset(store8, "train", "vista_r4", 5)
    val = predict_split(run, "validation")
    x = (split_features(net.spectrum, train_ds) - net.spectrum.mean.double().numpy()) / net.spectrum.std.double().numpy()
    xv = split_features(net.spectrum, KSpaceDataset(store8, "validation", "vista_r4", 5))
    xv = (xv - net.spectrum.mean.double().numpy()) / net.spectrum.std.double().numpy()
    j = 0
    if task == "regression":
        mu, sd = np.asarray(run.targets["mean"]), np.asarray(run.targets["std"])
        y = (train_ds.split_labels("phenotypes")[:, j] - mu[j]) / sd[j]
        ok = np.isfinite(y)
        ref = Ridge(alpha=record["outputs"][j]["chosen"]).fit(x[ok], y[ok]).predict(xv) * sd[j] + mu[j]
    else:
        col = run.targets["columns"][j]
        y = train_ds.split_labels("diseases")[:, col]
        ok = y >= 0
        ref = LogisticRegression(C=record["outputs"][j]["chosen"], class_weight="balanced", max_iter=5000
                                 ).fit(x[ok], y[ok]).predict_proba(xv)[:, 1]
    np.testing.assert_allclose(val.pred[:, j], ref, rtol=1e-3, atol=1e-3)
    # a second call keeps the fitted run (same config): nothing refitted
    stamp = (run_path / "last.pt").stat().st_mtime_ns
    again = train_one(cfg_for(store8, tmp_path, 3, task, method="spectrum_ridge"))
    assert again["already_trained"] and (run_path / "last.pt").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("method,task", [("kmtr", "regression"), ("spectrum_ridge", "classification"),
                                         ("resnet50_u", "regression"), ("resnet50_k", "classification"),
                                         ("kmtr", "segmentation"), ("unet_u", "segmentation"),
                                         ("mae", "reconstruction")])
def test_no_unsampled_line_reaches_a_model(store8, method, task):  # noqa: F811
    """Whatever the unsampled k-space lines hold, every model that reads undersampled data gives the
    same outputs (the normalisation reads only the sampled lines; issue 21)."""
    cfg = cfg_for(store8, Path("unused"), 3, task, method=method, init="scratch")
    ds = KSpaceDataset(store8, "validation", "vista_r4", 5)
    targets = task_targets(cfg, KSpaceDataset(store8, "train", "vista_r4", 5))
    torch.manual_seed(0)
    model = build_task_model(cfg, ds.shape, ds.info.view_ids, targets).eval()
    raw = next(iter(DataLoader(ds, batch_size=2)))
    other = dict(raw, kspace=raw["kspace"].clone())
    unsampled = ~raw["mask"][..., None, :].expand_as(other["kspace"])
    other["kspace"][unsampled] = other["kspace"][unsampled] * 30.0 + 5.0
    with torch.no_grad():
        a = model.outputs(prepare_batch(raw, "cpu"))
        b = model.outputs(prepare_batch(other, "cpu"))
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)


def test_every_method_says_what_it_is():
    from kmtr.eval.benchmark import DEFAULT_METHODS, method_table

    table = method_table(list(METHODS))
    assert list(table["method"]) == list(METHODS)
    for col in ("in the tables", "input", "pre-training", "features", "recipe"):
        assert (table[col].str.len() > 1).all(), col
    assert table.set_index("method").loc["spectrum_ridge", "in the tables"] == "spectrum ridge"
    assert "no encoder" in method_spec("spectrum_ridge").pretraining
    # the spectrum is its own method: in the benchmark's defaults as the baseline, never inside k-MTR
    for task in ("regression", "classification"):
        assert "spectrum_ridge" in DEFAULT_METHODS[task] and "kmtr_spectrum" not in DEFAULT_METHODS[task]


def test_learning_rate_grids_and_choice(tmp_path):
    assert lr_grid("kmtr", 1e-5) == [1e-6, 3e-6, 1e-5, 3e-5, 1e-4]  # around the paper's fine-tuning rate
    assert lr_grid("resnet50_u", 1e-5) == [3e-5, 1e-4, 3e-4, 1e-3, 3e-3]  # from scratch: its own grid
    assert lr_grid("spectrum_ridge", 1e-5) is None
    assert {len(v) for _, v in LR_GRIDS.values()} == {5}  # the same budget for every method
    grid = lr_grid("resnet50", 1.0)
    assert tries(grid, 1) == [3e-4] and tries(grid, 3) == [3e-5, 3e-4, 3e-3] and tries(grid, 5) == grid
    with pytest.raises(ValueError, match="1 to 5"):
        tries(grid, 6)
    (tmp_path / "metrics.csv").write_text("step,epoch,phase,name,value\n2,0,val,loss,0.5\n2,0,train,loss,0.1\n"
                                          "4,1,val,retrieval,0.2\n4,1,val,loss,0.25\n")
    assert last_val_loss(tmp_path) == 0.25
    assert last_val_loss(tmp_path / "nothing") == float("inf")


def _bench_args(store: str, out: Path, *extra: str) -> list[str]:
    args = ["benchmark", "--data", store, "--name", "b", "--out", str(out), "--n-boot", "10", "--epochs", "1",
            "--device", "cpu", *extra]
    for key, value in SMALL.items():
        args += ["--set", f"{key}={value}"]
    return args + ["--set", "data.batch_size=2"]


def test_listed_methods_go_to_the_tasks_they_do():
    from kmtr.eval.benchmark import methods_per_task

    got = methods_per_task(["regression", "segmentation"], ["kmtr", "nnunet", "resnet50", "mae"])
    assert got == {"regression": ["kmtr", "resnet50", "mae"], "segmentation": ["kmtr", "nnunet", "mae"]}


def test_benchmark_bad_input_is_one_line_and_exit_2_before_any_run(store8, tmp_path):  # noqa: F811
    runner = CliRunner()
    cases = [
        (["--method", "resnet51"], "unknown method 'resnet51'"),
        (["--task", "segmentation", "--method", "resnet50"], "method resnet50 does none of the tasks asked for"),
        (["--task", "regression", "--task", "segmentation", "--method", "resnet50"], "no listed method does segmentation"),
        (["--task", "regression", "--lr-search", "9"], "--lr-search takes 0 (off) to 5"),
    ]
    no_labels = write_store(tmp_path / "nolabels.zarr", n=6, t=5, h=32, w=32)
    import zarr

    g = zarr.open_group(no_labels, mode="r+")
    del g["labels/diseases"]
    zarr.consolidate_metadata(no_labels)
    for extra, message in cases:
        res = runner.invoke(app, _bench_args(store8, tmp_path / "runs", *extra))
        assert res.exit_code == 2 and message in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1, res.output
    res = runner.invoke(app, _bench_args(no_labels, tmp_path / "runs", "--task", "classification"))
    assert res.exit_code == 2 and "has no labels/diseases" in res.output and "--table" in res.output, res.output
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.slow
def test_benchmark_describes_methods_searches_learning_rates_and_reports_thresholds(store8, tmp_path):  # noqa: F811
    runner = CliRunner()
    args = _bench_args(store8, tmp_path, "--task", "regression", "--task", "classification", "--method",
                       "resnet50_k", "--method", "spectrum_ridge", "--lr-search", "2", "--lr-search-epochs", "1")
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    report = tmp_path / "b" / "report"
    md = (report / "benchmark.md").read_text()
    assert "## Methods compared" in md and "zero-filled undersampled k-space" in md and "spectrum ridge" in md
    recipes = pd.read_csv(report / "recipes.csv")
    assert set(recipes["task"]) == {"regression", "classification"}
    for task in ("regression", "classification"):
        record = json.loads((tmp_path / "b" / "vista_r4" / "lr-search" / f"resnet50_k-{task}.json").read_text())
        assert record["tried"] == [3e-5, 3e-3] and record["chosen"] == record["tried"][int(np.argmin(record["val_loss"]))]
        saved = json.loads((tmp_path / "b" / "vista_r4" / f"resnet50_k-{task}" / "config.json").read_text())
        assert saved["optim"]["lr"] == record["chosen"]  # the chosen value is in the run's config
        row = recipes[(recipes["task"] == task) & (recipes["method"] == "ResNet-50^k")].iloc[0]
        assert float(row["learning rate"]) == record["chosen"] and "searched" in row["chosen by"]
    thr = pd.read_csv(report / "classification_r4_thresholds.csv")
    assert {"threshold", "f1_at_threshold", "f1_at_0.5", "recall_at_0.5", "precision_at_threshold"} <= set(thr.columns)
    assert set(thr["method"]) == {"ResNet-50^k", "spectrum ridge"}
    assert "at the threshold chosen on the validation split" in md
