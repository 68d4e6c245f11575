"""Stage-I training on the fixture store: losses fall, exact resume, NaN guard, early errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from cli.kmtr_app import app
from kmtr.config import TrainConfig, apply_overrides, config_from_dict, config_to_dict, preset
from kmtr.train.checkpoint import load_checkpoint
from kmtr.train.loop import NonFiniteLossError
from kmtr.data import prepare_batch
from kmtr.train.stage1 import ConfigError, build_datasets, build_stage1_model, train_stage1, validate_config
from kmtr_fixtures import store, write_store  # noqa: F401

torch.set_num_threads(1)


def small_config(data: str, out: Path, name: str, **extra: str) -> TrainConfig:
    cfg = preset("tiny")
    apply_overrides(cfg, {
        "data.data": data, "data.frames": "10", "data.num_workers": "0", "data.batch_size": "2",
        "arch.patch": "5,8,8", "arch.width": "32", "arch.depth": "1", "arch.heads": "2",
        "arch.dec_width": "32", "arch.dec_depth": "1", "arch.dec_heads": "2",
        "optim.epochs": "4", "optim.warmup_epochs": "0.5", "optim.lr_image": "3e-3", "optim.lr_kspace": "3e-3",
        "run.out_dir": str(out), "run.name": name, "run.progress": "false", "run.png_every_epochs": "2",
        "run.tensorboard": "false", **extra,
    })
    return cfg


def _eval_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor], repeats: int = 8) -> dict[str, float]:
    """Mean losses over ``repeats`` fixed image-masking draws (same draws for every model)."""
    torch.manual_seed(1234)
    model.eval()
    with torch.no_grad():
        outs = [model(batch) for _ in range(repeats)]
    return {k: float(np.mean([float(o[k]) for o in outs])) for k in ("image_loss", "kspace_loss")}


def test_tiny_training_lowers_both_losses(tmp_path):
    # one training subject, so that a few dozen CPU steps make a clear difference
    path = write_store(tmp_path / "one.zarr", n=3, status=[1, 1, 1], split=[0, 1, 2])
    cfg = small_config(path, tmp_path, "fit", **{"optim.epochs": "40", "data.batch_size": "1", "data.augment": "false",
                                                  "run.png_every_epochs": "40", "arch.width": "64", "arch.heads": "4",
                                                  "data.frames": "5", "optim.lr_image": "5e-3",
                                                  "optim.lr_kspace": "5e-3",
                                                  "optim.warmup_epochs": "3", "data.val_split": "none"})
    trained = train_stage1(cfg)["model"]
    train_ds, _ = build_datasets(cfg)
    torch.manual_seed(cfg.run.seed)  # train_stage1 seeds like this before building the model
    initial = build_stage1_model(cfg, validate_config(cfg, train_ds.shape), train_ds.info.view_ids)
    batch = prepare_batch(next(iter(DataLoader(train_ds, batch_size=1))), "cpu")
    before, after = _eval_losses(initial, batch), _eval_losses(trained, batch)
    assert after["image_loss"] < 0.9 * before["image_loss"], (before, after)
    assert after["kspace_loss"] < 0.7 * before["kspace_loss"], (before, after)
    run = tmp_path / "fit" / "stage1"
    assert json.loads((run / "config.json").read_text())["arch"]["patch"] == [5, 8, 8]
    assert (run / "recon_epoch0040.png").exists() and (run / "metrics.csv").exists()
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["global_step"] == 40 and ckpt["epoch"] == 40


def test_resume_is_exact(store, tmp_path):  # noqa: F811
    extra = {"data.batch_size": "1", "optim.epochs": "2", "data.augment": "true", "data.max_angle": "5",
             "run.png_every_epochs": "0"}
    full = train_stage1(small_config(store, tmp_path, "full", **extra))["model"]
    part = small_config(store, tmp_path, "part", **extra, **{"run.max_steps": "3"})
    assert train_stage1(part)["global_step"] == 3  # stops mid-epoch (4 steps per epoch)
    resumed = train_stage1(small_config(store, tmp_path, "part", **extra), resume=True)
    assert resumed["global_step"] == 8
    a, b = full.state_dict(), resumed["model"].state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    path = write_store(tmp_path / "nan.zarr", n=6, t=5, h=16, w=16)
    g = zarr.open_group(str(path), mode="r+")
    g["kspace"][2] = np.full(g["kspace"].shape[1:], np.nan, dtype=np.complex64)
    cfg = small_config(path, tmp_path, "nan", **{"data.frames": "5", "data.batch_size": "1",
                                                  "run.ckpt_every_steps": "1",
                                                  "data.val_split": "none"})
    with pytest.raises(NonFiniteLossError, match=r"at step (\d+)") as err:
        train_stage1(cfg)
    step = int(str(err.value).split("at step ")[1].split()[0])
    ckpt_path = tmp_path / "nan" / "stage1" / "last.pt"
    if step > 1:
        ckpt = load_checkpoint(ckpt_path)
        assert ckpt["global_step"] == step - 1
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_bad_config_fails_before_training(store, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="does not divide"):
        train_stage1(small_config(store, tmp_path, "bad", **{"data.frames": "5", "arch.patch": "5,16,12"}))
    with pytest.raises(ConfigError, match="divisible by the head count"):
        train_stage1(small_config(store, tmp_path, "bad", **{"arch.heads": "3"}))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="unknown config key"):
        apply_overrides(preset("tiny"), {"arch.widht": "3"})


def test_config_roundtrip_and_presets():
    cfg = preset("paper")
    assert cfg.arch.width % cfg.arch.heads == 0 and cfg.arch.patch == (5, 8, 8)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    other_version = config_to_dict(cfg)
    other_version["heads"]["readout_rank"] = 8
    with pytest.raises(ValueError, match="heads.readout_rank"):
        config_from_dict(other_version)
    tiny = apply_overrides(preset("tiny"), {"data.frames": "none", "optim.epochs": "3", "optim.lr_image": "1"})
    assert tiny.data.frames is None and tiny.optim.epochs == 3 and tiny.optim.lr_image == 1.0


def test_cli_train_and_errors(store, tmp_path):  # noqa: F811
    runner = CliRunner()
    args = ["train", "--stage", "1", "--preset", "tiny", "--data", store, "--epochs", "1", "--lr", "1e-3",
            "--model", "kspace", "--workers", "0", "--frames", "5", "--out", str(tmp_path), "--name", "cli",
            "--set", "run.progress=false", "--set", "arch.width=32", "--set", "arch.heads=2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "kspace MAE:" in res.output and "image MAE:" not in res.output
    saved = json.loads((tmp_path / "cli" / "stage1" / "config.json").read_text())
    assert saved["models"] == "kspace" and saved["optim"]["lr_kspace"] == 1e-3
    res = runner.invoke(app, args[:-6] + ["--mask", "radial_r4", "--name", "badmask"])  # a new run folder
    assert res.exit_code == 2 and "mask 'radial_r4' not in" in res.output
