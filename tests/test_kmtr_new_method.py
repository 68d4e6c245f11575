"""Issue 24: a new stage-III method is one registry entry. A toy method (a linear map of the
zero-filled undersampled magnitude image) is registered here, in this file only, then trained,
predicted and benchmarked through the ordinary code paths (train_one, load_run / predict_split,
run_benchmark); and no module of kmtr dispatches on the task string."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_kmtr_stages import SMALL, cfg_for, store8  # noqa: F401  (store8 is a fixture)
from torch import nn

from kmtr.eval.benchmark import run_benchmark
from kmtr.eval.predict import load_run, predict_split
from kmtr.fft import ifft2c
from kmtr.methods import METHODS, MethodSpec, method_label, register_method
from kmtr.pipeline import train_one

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


class ZeroFilledLinear(nn.Module):
    """(B, S, T, H, W) k-space, (B, S, T, W) mask → (B, out): a linear map of the zero-filled magnitude image."""

    def __init__(self, shape: tuple[int, int, int, int], out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(int(np.prod(shape)), out_dim)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        image = ifft2c(kspace * mask[..., None, :].to(kspace.dtype)).abs()
        return self.linear(image.flatten(1).float())


def _build(cfg, shape, view_ids, task, out_dim, state):  # noqa: ANN001, ANN202  (a NetBuilder)
    return ZeroFilledLinear(shape, out_dim)


@pytest.fixture
def toy_method():
    register_method("toy_linear", MethodSpec(
        "image_under", ("regression", "classification"), "", "toy linear", "none",
        "zero-filled magnitude image, flattened", "linear map, AdamW", build=_build))
    yield "toy_linear"
    METHODS.pop("toy_linear")


def test_a_registered_method_trains_predicts_and_is_benchmarked(store8, tmp_path, toy_method):  # noqa: F811
    summary = train_one(cfg_for(store8, tmp_path, 3, "regression", method=toy_method))
    run_path = Path(summary["run_dir"])
    assert run_path.name == "toy_linear-regression" and np.isfinite(summary["last"]["loss"])
    run = load_run(run_path)
    assert isinstance(run.model.net, ZeroFilledLinear)
    test = predict_split(run, "test")
    assert test.pred.shape == test.truth["phenotypes"].shape and np.isfinite(test.pred).all()

    overrides = {"data.data": store8, "optim.epochs": "1", "data.batch_size": "2", **SMALL}
    report = run_benchmark("tiny", tasks=("regression",), accs=(4,), methods={"regression": (toy_method,)},
                           overrides=overrides, name="bench", out_dir=str(tmp_path / "b"), n_boot=20)
    values = pd.read_csv(report / "regression_r4_values.csv", index_col=0)
    assert list(values.columns) == [method_label(toy_method), "mean guess"] and method_label(toy_method) == "toy linear"
    assert np.isfinite(values[method_label(toy_method)]).all()
    text = (report / "benchmark.md").read_text()
    assert "zero-filled magnitude image, flattened" in text and "toy linear" in text


def test_registering_a_taken_name_or_an_unknown_task_fails(toy_method):
    with pytest.raises(ValueError, match="already registered"):
        register_method("kmtr", METHODS["kmtr"])
    with pytest.raises(ValueError, match="already registered"):
        register_method(toy_method, METHODS[toy_method])
    with pytest.raises(Exception, match="unknown task"):
        register_method("toy2", MethodSpec("image", ("denoising",), "", build=_build))


def test_no_task_string_dispatch_outside_the_task_classes():
    found = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "kmtr").rglob("*.py"))
             if "tasks" not in p.relative_to(ROOT).parts
             for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"task\s*[!=]=", line)]
    assert found == []
