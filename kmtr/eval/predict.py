"""Load a trained stage-III run and collect its predictions and the ground truth over a split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from kmtr.analysis.predictions import Predictions
from kmtr.config import TrainConfig, config_from_dict
from kmtr.data import KSpaceDataset, prepare_batch, sample_cache_is_shared
from kmtr.methods import build_task_model, method_spec
from kmtr.tasks import get_task
from kmtr.train.checkpoint import load_checkpoint

__all__ = ["TrainedRun", "load_run", "Predictions", "predict_split", "run_folders", "find_experiment"]


@dataclass
class TrainedRun:
    """A stage-III run ready to predict: its config, training-split targets and model (eval mode)."""

    path: Path
    cfg: TrainConfig
    targets: dict[str, Any]
    model: Any  # kmtr.train.task_net.TaskModel


def run_folders(experiment: str | Path) -> list[Path]:
    """Stage-III run folders (holding ``last.pt`` and ``config.json``) of an experiment folder,
    or ``[experiment]`` itself when it is one run."""
    exp = Path(experiment)

    def is_run(p: Path) -> bool:  # a kmtr model, or an nnU-Net run's test predictions (kmtr.nnunet)
        return (p / "last.pt").exists() or (p / "predictions_test.npz").exists() and p.name.startswith("nnunet")

    candidates = [exp] if is_run(exp) else sorted(p for p in exp.iterdir() if p.is_dir())
    out = []
    for p in candidates:
        if is_run(p) and (p / "config.json").exists():
            import json

            if json.loads((p / "config.json").read_text()).get("stage") == 3:
                out.append(p)
    return out


def find_experiment(path: str | Path) -> Path:
    """The experiment folder to evaluate: ``path`` itself when it holds stage-III runs (or is one),
    else its only sub-folder that does (``kmtr train --out RUNS`` writes ``RUNS/<name>/``).

    Raises:
        FileNotFoundError: no stage-III run in ``path`` or one level below.
        ValueError: several experiments below ``path`` (the message lists them).
    """
    path = Path(path)
    if run_folders(path):
        return path
    found = sorted(p for p in path.iterdir() if p.is_dir() and run_folders(p)) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no stage-III run (last.pt + config.json) in {path} or its sub-folders")
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
        raise ValueError(f"{path} holds {len(found)} experiments ({names}): name one, e.g. "
                         f"`kmtr eval {found[0]}`")
    return found[0]


def load_run(path: str | Path, device: torch.device | str = "cpu", data: str | None = None) -> TrainedRun:
    """Rebuild a stage-III model from ``<path>/last.pt`` (``data`` overrides the store location)."""
    path = Path(path)
    state = load_checkpoint(path / "last.pt")
    raw = dict(state.get("config", {}))
    extra = raw.pop("extra_state", {}) or {}
    cfg = config_from_dict(raw)
    if data:
        cfg.data.data = data
    if cfg.stage != 3:
        raise ValueError(f"{path} is a stage-{cfg.stage} run; evaluation needs stage III runs")
    ds = KSpaceDataset(cfg.data.data, "all", cfg.data.mask, cfg.data.frames, with_seg=False, with_labels=False)
    targets = extra.get("targets", {})
    spec = method_spec(cfg.method)
    if spec.init_from and not spec.reads_spectrum and any(k.startswith("net.spectrum.") for k in state["model"]):
        raise ValueError(f"{path} was trained by an older kmtr whose {cfg.method} heads also read the k-space "
                         f"spectrum (not the paper's method): retrain it, or train --method kmtr_spectrum")
    model = build_task_model(cfg, ds.shape, ds.info.view_ids, targets, coils=ds.coils)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return TrainedRun(path, cfg, targets, model)


@torch.no_grad()
def predict_split(run: TrainedRun, split: str, device: torch.device | str = "cpu", batch_size: int | None = None,
                  limit: int | None = None) -> Predictions:
    """Predict every done subject of ``split`` (at most ``limit``) without augmentation (inside
    :func:`kmtr.data.shared_sample_cache`, through the shared cache when the run trained with
    ``data.cache``; outside it one pass has nothing to reuse, so nothing is cached)."""
    cfg, task = run.cfg, get_task(run.cfg.task)
    ds = KSpaceDataset(cfg.data.data, split, cfg.data.mask, cfg.data.frames, with_seg=task.with_seg,
                       cache=cfg.data.cache and sample_cache_is_shared())
    if limit is not None:
        ds.rows = ds.rows[:limit]
    loader = DataLoader(ds, batch_size=batch_size or cfg.data.batch_size, shuffle=False, num_workers=0)
    preds: list[np.ndarray] = []
    truth: dict[str, list[np.ndarray]] = {}
    variants: dict[str, list[np.ndarray]] = {}
    rows: list[np.ndarray] = []

    def keep(name: str, value: torch.Tensor) -> None:
        truth.setdefault(name, []).append(value.cpu().numpy())

    for raw in loader:
        batch = prepare_batch(raw, device)
        out = run.model.predict(batch)
        rows.append(raw["row"].numpy())
        preds.append(task.prediction_array(out))
        for name, value in task.prediction_variants(batch, out).items():
            variants.setdefault(name, []).append(task.prediction_array(value))
        task.collect_truth(batch, raw, ds, run.model, keep)
    arrays: dict[str, np.ndarray] = {k: np.concatenate(v) for k, v in truth.items()}
    arrays["view_names"] = np.asarray(ds.info.view_names)
    arrays["view_ids"] = np.asarray(ds.info.view_ids)
    return Predictions(task.name, np.concatenate(rows), np.concatenate(preds), arrays,
                       {k: np.concatenate(v) for k, v in variants.items()})
