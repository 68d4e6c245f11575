"""One nnU-Net baseline run: export → plan and preprocess → train → predict the test split.

``train_nnunet(cfg)`` for ``cfg.method`` ``nnunet`` (fully sampled magnitude images) or
``nnunet_u`` (zero-filled with ``cfg.data.mask``), task segmentation. The run folder
``runs/<name>/<method>-segmentation/`` holds::

    config.json                kmtr's configuration of the run
    nnUNet_raw/Dataset001_KMTR/         the export (kmtr.nnunet.export)
    nnUNet_preprocessed/Dataset001_KMTR/ nnU-Net's plans, preprocessed data, splits_final.json
    nnUNet_results/Dataset001_KMTR/<trainer>__nnUNetPlans__2d/fold_<f>/  nnU-Net's checkpoints and logs
    nnunet_predictions_test/   nnU-Net's label maps of the test cases
    logs/<step>.log            each nnU-Net step's output
    predictions_test.npz       the test predictions as k-MTR's tables read them (kmtr.nnunet.predictions)

Steps: ``nnUNetv2_plan_and_preprocess -d 1 -c 2d --verify_dataset_integrity`` (nnU-Net's CLI), then
``splits_final.json`` with fold 0 = the store's training subjects / validation subjects (fold
``all`` when the store has no validation subject), then :mod:`kmtr.nnunet.worker` ``train`` and
``predict`` (nnU-Net's trainer and predictor). Each step is skipped when its result is complete
(export.json, splits_final.json, checkpoint_final.pth, predictions_test.npz): an interrupted run
resumes (training from nnU-Net's latest checkpoint) without redoing finished steps. nnU-Net's
training is not seeded (as upstream), so two runs differ slightly.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kmtr.config import TrainConfig, config_to_dict, save_config
from kmtr.nnunet import NNUNET_METHODS, NNUNET_TASKS, require_nnunet
from kmtr.nnunet.export import DATASET, NUM_CLASSES, ExportedDataset, export_dataset, splits_final
from kmtr.nnunet.predictions import PREDICTIONS, collect_predictions, save_predictions
from kmtr.nnunet.worker import CONFIGURATION, PLANS
from kmtr.train.runner import ConfigError, run_dir

__all__ = ["NnUNetFailed", "is_finished", "nnunet_env", "train_nnunet"]

PREDICTION_FOLDER = "nnunet_predictions_test"


class NnUNetFailed(RuntimeError):
    """An nnU-Net step exited with an error (its log is named in the message)."""


def nnunet_env(run: Path, processes: int, augmentation_processes: int) -> dict[str, str]:
    """The environment of nnU-Net's processes: its three folders inside ``run``, the number of
    processes for preprocessing / unpacking (``nnUNet_def_n_proc``) and data augmentation
    (``nnUNet_n_proc_DA``, 0 = in the training process), no torch.compile."""
    env = dict(os.environ)
    env.update({
        "nnUNet_raw": str(run / "nnUNet_raw"),
        "nnUNet_preprocessed": str(run / "nnUNet_preprocessed"),
        "nnUNet_results": str(run / "nnUNet_results"),
        "nnUNet_def_n_proc": str(max(1, processes)),
        "nnUNet_n_proc_DA": str(max(0, augmentation_processes)),
        "nnUNet_compile": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _console_script(name: str) -> str:
    """Path of one of nnU-Net's console scripts (beside this Python, else on PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        require_nnunet()
        raise NnUNetFailed(f"nnU-Net's {name} is not beside {sys.executable} nor on PATH")
    return found


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _step(name: str, command: list[str], env: dict[str, str], run: Path) -> float:
    """Run one nnU-Net step with its output in ``<run>/logs/<name>.log``; returns seconds taken
    (wall clock; the step's CPU seconds, its processes together, go to the log's last line).

    Raises:
        NnUNetFailed: the step exited with an error (the log's last lines are in the message).
    """
    logs = run / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{name}.log"
    start, cpu = time.perf_counter(), _children_cpu()
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(command)}\n")
        fh.flush()
        code = subprocess.call(command, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=run)
        seconds = time.perf_counter() - start
        fh.write(f"kmtr: step {name} exit {code}, {seconds:.1f} s wall, {_children_cpu() - cpu:.1f} s CPU\n")
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise NnUNetFailed(f"nnU-Net step {name!r} failed (exit {code}); log {log}:\n{tail}")
    return seconds


def _device(cfg: TrainConfig) -> str:
    import torch

    if cfg.run.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.run.device


def _prepare_run_folder(cfg: TrainConfig, run: Path, mode: str) -> None:
    """The run guard of ``kmtr train`` (:mod:`kmtr.train.run_guard`) for a folder without ``last.pt``:
    its ``config.json`` is the saved config. ``auto``: continue a matching run, stop on another;
    ``resume``: continue whatever; ``restart``: delete the folder.

    Raises:
        RunConflictError: ``auto`` and the folder holds an nnU-Net run of another config.
    """
    from kmtr.train.run_guard import MODES, RunConflictError, config_differences

    if mode not in MODES:
        raise ValueError(f"run mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "restart":
        if run.exists():
            shutil.rmtree(run)
            print(f"--restart: removed the previous run in {run}", flush=True)
        return
    saved = run / "config.json"
    if mode == "auto" and saved.exists():
        diffs = config_differences(json.loads(saved.read_text()), config_to_dict(cfg))
        if diffs:
            state = "finished" if (run / PREDICTIONS).exists() else "unfinished"
            raise RunConflictError(
                f"{run} holds an nnU-Net run ({state}) with another config ({'; '.join(diffs[:4])}): --resume "
                f"continues it with the new config, --restart deletes it and starts over, or choose another --name")


def _fold_dir(run: Path, trainer: str, fold: str) -> Path:
    return run / "nnUNet_results" / DATASET / f"{trainer}__{PLANS}__{CONFIGURATION}" / f"fold_{fold}"


def is_finished(cfg: TrainConfig, same_config: bool = False) -> bool:
    """True when the run folder holds its test predictions (``predictions_test.npz``); with
    ``same_config``, only when its ``config.json`` also matches ``cfg`` (bookkeeping aside)."""
    from kmtr.train.run_guard import config_differences

    run = run_dir(cfg)
    if not (run / PREDICTIONS).exists():
        return False
    if same_config:
        saved = run / "config.json"
        return saved.exists() and not config_differences(json.loads(saved.read_text()), config_to_dict(cfg))
    return True


def _check_trainer(cfg: TrainConfig, env: dict[str, str]) -> None:
    """ConfigError unless ``heads.nnunet_trainer`` names nnU-Net's or kmtr's trainer (nnU-Net's are
    looked up in a process of its own: importing nnunetv2 here would fix its folders for this process)."""
    from kmtr.nnunet.trainers import KMTR_TRAINERS

    if cfg.heads.nnunet_trainer in KMTR_TRAINERS:
        return
    code = subprocess.call([sys.executable, "-m", "kmtr.nnunet.worker", "check-trainer", cfg.heads.nnunet_trainer],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if code != 0:
        raise ConfigError(f"heads.nnunet_trainer: {cfg.heads.nnunet_trainer!r} is neither one of nnU-Net's trainers "
                          "nor one of kmtr/nnunet/trainers")


def train_nnunet(cfg: TrainConfig, resume: bool | str = False) -> dict[str, Any]:
    """Run (or resume) the nnU-Net baseline ``cfg.method`` on the store's segmentations.

    ``resume``: ``auto`` (False) | ``resume`` (True) | ``restart``, as for every stage
    (:mod:`kmtr.train.run_guard`); finished steps of a continued run are not redone.

    Returns a summary like the other stages' (``run_dir``, ``global_step`` = nnU-Net's training
    iterations, ``last`` = {``loss``: nnU-Net's last training loss}, ``seconds`` per step run now,
    ``predictions``).

    Raises:
        NnUNetMissing: nnunetv2 is not installed (checked first).
        ConfigError: not a segmentation run or an unknown trainer.
        RunConflictError: the folder holds an nnU-Net run of another config (``auto``).
        StoreError: no segmentations or an empty training / test split.
        NnUNetFailed: an nnU-Net step failed.
    """
    if cfg.method not in NNUNET_METHODS:
        raise ConfigError(f"{cfg.method} is not an nnU-Net method ({', '.join(NNUNET_METHODS)})")
    require_nnunet(cfg.method)
    if cfg.task not in NNUNET_TASKS:
        raise ConfigError(f"method {cfg.method} does not do {cfg.task} (it does {', '.join(NNUNET_TASKS)})")
    from kmtr.data import KSpaceDataset

    KSpaceDataset(cfg.data.data, cfg.data.train_split, cfg.data.mask, cfg.data.frames)  # store, mask, frames
    run = run_dir(cfg)
    processes = max(1, cfg.data.num_workers)
    env = nnunet_env(run, processes, cfg.data.num_workers)
    _check_trainer(cfg, env)
    _prepare_run_folder(cfg, run, {False: "auto", True: "resume"}.get(resume, resume))  # type: ignore[arg-type]
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.json")
    seconds: dict[str, float] = {}
    raw = run / "nnUNet_raw"
    if not (raw / DATASET / "export.json").exists():
        start = time.perf_counter()
        print(f"nnU-Net {cfg.method}: exporting {cfg.data.data} ({NNUNET_METHODS[cfg.method]}) to {raw}", flush=True)
        export_dataset(cfg.data.data, raw, NNUNET_METHODS[cfg.method], cfg.data.mask, cfg.data.frames,
                       cfg.data.train_split, cfg.data.val_split, "test")
        seconds["export"] = time.perf_counter() - start
    export = ExportedDataset.load(raw / DATASET)
    pre = run / "nnUNet_preprocessed" / DATASET
    if not (pre / "splits_final.json").exists():
        if pre.exists():
            shutil.rmtree(pre)  # an interrupted preprocessing: start it again
        print(f"nnU-Net {cfg.method}: planning and preprocessing ({export.n_training} training cases)", flush=True)
        plan_env = {**env, "nnUNet_n_proc_DA": str(processes)}  # the planner sets torch threads from it
        seconds["plan_and_preprocess"] = _step("plan_and_preprocess", [
            _console_script("nnUNetv2_plan_and_preprocess"), "-d", "1", "-c", CONFIGURATION, "-np", str(processes),
            "-npfp", str(processes), "-gpu_memory_target", f"{cfg.heads.nnunet_gpu_memory_gb:g}",
            "--verify_dataset_integrity"], plan_env, run)
        tmp = pre / "splits_final.json.tmp"
        tmp.write_text(json.dumps(splits_final(export), indent=1))
        tmp.replace(pre / "splits_final.json")
    fold = "0" if export.cases["validation"] else "all"
    trainer, device = cfg.heads.nnunet_trainer, _device(cfg)
    fold_dir = _fold_dir(run, trainer, fold)
    if not (fold_dir / "checkpoint_final.pth").exists():
        print(f"nnU-Net {cfg.method}: training {trainer}, fold {fold}, on {device}", flush=True)
        args = [sys.executable, "-m", "kmtr.nnunet.worker", "train", DATASET, fold, trainer, device]
        if (fold_dir / "checkpoint_latest.pth").exists():
            args.append("--continue")
        seconds["train"] = _step("train", args, env, run)
    if not (run / PREDICTIONS).exists():
        out = run / PREDICTION_FOLDER
        print(f"nnU-Net {cfg.method}: predicting {len(export.cases['test'])} test cases", flush=True)
        seconds["predict"] = _step("predict", [
            sys.executable, "-m", "kmtr.nnunet.worker", "predict", DATASET, fold, trainer, device,
            str(raw / DATASET / "imagesTs"), str(out)] + ([] if cfg.heads.nnunet_tta else ["--disable_tta"]), env, run)
        from kmtr.store import open_store, read_store_info

        info = read_store_info(open_store(cfg.data.data), cfg.data.data)
        preds = collect_predictions(cfg.data.data, "test", cfg.data.mask, cfg.data.frames, export.cases["test"], out)
        names = [info.label_map.get(str(i), str(i)) for i in range(NUM_CLASSES)]  # as kmtr's task_targets
        save_predictions(preds, {"out_dim": len(names), "names": names}, run)
    steps, loss = _training_record(fold_dir)
    return {"run_dir": run, "global_step": steps, "last": {"loss": loss}, "seconds": seconds,
            "predictions": run / PREDICTIONS, "already_trained": not seconds}


def _training_record(fold_dir: Path) -> tuple[int, float]:
    """(training iterations, last epoch's mean training loss) from nnU-Net's ``debug.json`` and
    ``checkpoint_final.pth`` of the fold."""
    import torch

    debug = json.loads((fold_dir / "debug.json").read_text())
    ckpt = torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    losses = ckpt.get("logging", {}).get("train_losses") or [float("nan")]
    epochs = int(ckpt.get("current_epoch", 0))
    return epochs * int(debug.get("num_iterations_per_epoch", 0)), float(losses[-1])
