"""Runs are never discarded silently (issue 20): a rerun continues a matching run, stops on another
config, --resume / --restart; a stage killed with SIGKILL resumes exactly; eval finds the run under
`train --out`; --device cuda without CUDA is one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli.kmtr_app import app
from kmtr.config import config_to_dict, preset
from kmtr.eval.predict import find_experiment
from kmtr.train.checkpoint import load_checkpoint
from kmtr.train.run_guard import config_differences
from kmtr_fixtures import store  # noqa: F401

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


def train_args(data: str, out: Path, *extra: str) -> list[str]:
    small = ["run.progress=false", "run.tensorboard=false", "run.png_every_epochs=0", "arch.width=16",
             "arch.heads=2", "arch.depth=1", "arch.dec_width=16", "arch.dec_depth=1", "arch.dec_heads=2"]
    args = ["train", "--stage", "1", "--preset", "tiny", "--data", data, "--workers", "0", "--frames", "5",
            "--patch", "5,8,8", "--out", str(out), "--name", "guard", "--batch-size", "1", *extra]
    for item in small:
        args += ["--set", item]
    return args


def test_config_differences_ignore_bookkeeping_and_path_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = preset("tiny")
    a.data.data = "stores/x.zarr"
    b = preset("tiny")
    b.data.data = str(tmp_path / "stores" / "x.zarr")
    b.run.progress, b.run.device, b.data.num_workers, b.optim.chunk_size = False, "cpu", 7, 4
    b.arch.grad_checkpoint, b.run.max_steps, b.run.out_dir = True, 3, "elsewhere"
    assert config_differences(config_to_dict(a), config_to_dict(b)) == []
    b.optim.lr_image, b.arch.patch = 1e-2, (5, 8, 8)
    diffs = config_differences(config_to_dict(a), config_to_dict(b))
    assert diffs == ["arch.patch [5, 16, 16] → [5, 8, 8]", "optim.lr_image 0.001 → 0.01"]


def test_a_field_added_later_counts_as_its_default_in_older_runs():
    """A run saved before ``heads.seg_out_stride`` existed decoded at stride 1, the field's default."""
    old = config_to_dict(preset("tiny"))
    del old["heads"]["seg_out_stride"]
    assert config_differences(old, config_to_dict(preset("tiny"))) == []
    seg = config_to_dict(preset("tiny", 3, "segmentation"))  # the tiny preset decodes segmentation at stride 2
    old_seg = config_to_dict(preset("tiny", 3, "segmentation"))
    del old_seg["heads"]["seg_out_stride"]
    assert config_differences(old_seg, seg) == ["heads.seg_out_stride 1 → 2"]


def test_rerun_continues_a_matching_run_and_refuses_another_config(store, tmp_path):  # noqa: F811
    runner = CliRunner()
    ckpt = tmp_path / "guard" / "stage1" / "last.pt"
    res = runner.invoke(app, train_args(store, tmp_path, "--epochs", "1"))
    assert res.exit_code == 0, res.output
    first = ckpt.read_bytes()
    # same command: the finished run is kept and nothing is trained
    res = runner.invoke(app, train_args(store, tmp_path, "--epochs", "1", "--set", "run.log_every=3"))
    assert res.exit_code == 0 and "already trained" in res.output, res.output
    assert ckpt.read_bytes() == first
    # another learning rate: one line naming the difference and the choices, the run untouched
    res = runner.invoke(app, train_args(store, tmp_path, "--epochs", "1", "--lr", "0.5"))
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert "\n" not in line and "optim.lr_image 0.001 → 0.5" in line and "finished" in line
    assert "--resume" in line and "--restart" in line and "--name" in line
    assert ckpt.read_bytes() == first
    res = runner.invoke(app, train_args(store, tmp_path, "--epochs", "1", "--resume", "--restart"))
    assert res.exit_code == 2 and "exclude each other" in res.output
    # --resume continues it with the new config: two more epochs on top of the first
    res = runner.invoke(app, train_args(store, tmp_path, "--epochs", "3", "--resume"))
    assert res.exit_code == 0 and "resumed from" in res.output and "at epoch 1" in res.output, res.output
    assert load_checkpoint(ckpt)["epoch"] == 3 and load_checkpoint(ckpt)["global_step"] == 12
    # --restart deletes it and trains from scratch
    (ckpt.parent / "stale.txt").write_text("from the old run")
    res = runner.invoke(app, train_args(store, tmp_path, "--epochs", "1", "--restart"))
    assert res.exit_code == 0 and "removed the previous run" in res.output, res.output
    assert load_checkpoint(ckpt)["epoch"] == 1 and not (ckpt.parent / "stale.txt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_one_line(store, tmp_path):  # noqa: F811
    runner = CliRunner()
    res = runner.invoke(app, train_args(store, tmp_path, "--device", "cuda"))
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "CUDA is not available" in res.output
    assert not (tmp_path / "guard").exists()
    res = runner.invoke(app, ["eval", str(tmp_path), "--device", "cuda"])
    assert res.exit_code == 2 and "CUDA is not available" in res.output


def _fake_run(folder: Path, stage: int = 3) -> None:
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"")
    (folder / "config.json").write_text(json.dumps({"stage": stage}))


def test_eval_finds_the_experiment_under_the_train_out_folder(tmp_path):
    runs = tmp_path / "RUNS"
    _fake_run(runs / "kmtr" / "stage1", stage=1)
    with pytest.raises(FileNotFoundError, match="no stage-III run"):
        find_experiment(runs)
    _fake_run(runs / "kmtr" / "stage3-regression")
    assert find_experiment(runs) == runs / "kmtr"
    assert find_experiment(runs / "kmtr") == runs / "kmtr"
    assert find_experiment(runs / "kmtr" / "stage3-regression") == runs / "kmtr" / "stage3-regression"
    _fake_run(runs / "other" / "stage3-segmentation")
    res = CliRunner().invoke(app, ["eval", str(runs)])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "2 experiments (kmtr, other)" in res.output and f"kmtr eval {runs / 'kmtr'}" in res.output


# -- SIGKILL and rerun ---------------------------------------------------------------------------

def _final_train_loss(run: Path) -> str:
    with open(run / "metrics.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["phase"] == "train" and r["name"] == "loss"]
    return rows[-1]["value"]


@pytest.mark.slow
def test_a_stage_killed_with_sigkill_reruns_to_the_same_final_loss(store, tmp_path):  # noqa: F811
    """`kmtr train --stage 1` killed (SIGKILL) after an epoch checkpoint, rerun with the same command:
    it resumes at that epoch (finished epochs are not redone) and ends with the loss and weights of
    an uninterrupted run, to the last digit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    epochs = "12"

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "cli.kmtr_app", *train_args(store, out, "--epochs", epochs),
                "--set", "run.progress=true"]  # prints one line per finished epoch

    ref = subprocess.run(command(tmp_path / "ref"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    out = tmp_path / "killed"
    ckpt = out / "guard" / "stage1" / "last.pt"
    proc = subprocess.Popen(command(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(ckpt)["epoch"]
    assert 1 <= killed_at < int(epochs)
    rerun = subprocess.run(command(out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"at epoch {killed_at}, step {4 * killed_at}" in rerun.stdout, rerun.stdout
    trained = [int(line.split()[1].rstrip(":")) for line in rerun.stdout.splitlines() if line.startswith("epoch ")]
    assert trained == list(range(killed_at, int(epochs)))  # finished epochs are not redone
    a = load_checkpoint(tmp_path / "ref" / "guard" / "stage1" / "last.pt")
    b = load_checkpoint(ckpt)
    assert b["global_step"] == a["global_step"] == 4 * int(epochs)
    assert _final_train_loss(ckpt.parent) == _final_train_loss(tmp_path / "ref" / "guard" / "stage1")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
