"""``kmtr benchmark``: k-MTR against the baselines on the same store, splits and metrics.

For each acceleration R (a mask ``<pattern>_r<R>`` already in the store) the experiment
``runs/<name>/<pattern>_r<R>/`` holds stage I and II of k-MTR and one stage-III run per
(method, task). Missing runs are trained, finished ones skipped, interrupted ones resumed; test
predictions are cached beside each run (``predictions_<split>.npz``), so an interrupted benchmark
continues with what is still missing.

The report starts with what was compared: one row per method (input, pre-training, features,
recipe; :data:`kmtr.methods.METHODS`) and the learning rate each (method, task) trained
with, searched on the validation split with the same budget for every method when asked
(``lr_search``, :mod:`kmtr.eval.lr_search`).

Per task and R, one comparison table in the layout of the paper's Tables 1 and 2 (rows =
phenotypes / diseases / classes, columns = methods, value [95 % bootstrap interval], best per row
in bold, † where a method is worse than the mean guess) and a table of paired tests of k-MTR
against each other method (Wilcoxon signed-rank on per-subject errors, or a paired bootstrap of
the AUC difference). With several R's, the headline row of each task is plotted against R
(the paper's Fig. 4).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from kmtr.analysis import figures
from kmtr.analysis.comparison import MEAN_GUESS, TaskComparison, relabel
from kmtr.errors import ConfigError
from kmtr.eval.predict import Predictions, load_run, predict_split
from kmtr.methods import METHODS, REFERENCE_LABELS, default_methods, method_label, method_spec
from kmtr.tasks import TASKS, get_task
from kmtr.tasks import classification as _classification
from kmtr.tasks import reconstruction as _reconstruction
from kmtr.tasks import regression as _regression
from kmtr.tasks import segmentation as _segmentation

__all__ = [
    "DEFAULT_METHODS",
    "METHOD_LABELS",
    "TaskComparison",
    "cached_predictions",
    "check_request",
    "compare_classification",
    "compare_reconstruction",
    "compare_regression",
    "compare_segmentation",
    "method_table",
    "methods_per_task",
    "run_benchmark",
    "threshold_table",
]

#: task → the methods compared when none are named (the registry's ``benchmark`` methods, :mod:`kmtr.methods`)
DEFAULT_METHODS: dict[str, tuple[str, ...]] = {t: default_methods(t) for t in TASKS}
#: method (or reference row) → its name in tables, from the registry
METHOD_LABELS = {**{m: method_label(m) for m in METHODS}, **REFERENCE_LABELS}
INPUT_WORDS = {"image": "fully sampled images", "image_under": "zero-filled undersampled images",
               "kspace_under": "undersampled k-space"}


def _label(method: str) -> str:
    return method_label(method)


def method_table(methods: Sequence[str]) -> pd.DataFrame:
    """What each method is: one row per method (name in the tables, input, pre-training, features,
    recipe), from the method registry :data:`kmtr.methods.METHODS`."""
    rows = []
    for m in methods:
        spec = method_spec(m)
        rows.append({"method": m, "in the tables": _label(m), "input": INPUT_WORDS.get(spec.input, spec.input),
                     "pre-training": spec.pretraining, "features": spec.features or "–",
                     "recipe": spec.recipe or "–"})
    return pd.DataFrame(rows)


def methods_per_task(tasks: Sequence[str], listed: Sequence[str]) -> dict[str, list[str]]:
    """``{task: the listed methods that do it}`` for ``kmtr benchmark --method …`` (in the listed order),
    so that one run can compare e.g. ``kmtr`` on every task and ``nnunet`` on segmentation.

    Raises:
        ConfigError: a listed method does none of ``tasks``, or no listed method does one of them.
    """
    for m in listed:
        spec = method_spec(m)
        if not set(spec.tasks) & set(tasks):
            raise ConfigError(f"method {m} does none of the tasks asked for ({', '.join(tasks)}; it does "
                              f"{', '.join(spec.tasks)}): leave it out or add one of its tasks")
    out = {t: [m for m in listed if t in method_spec(m).tasks] for t in tasks}
    for t, ms in out.items():
        if not ms:
            raise ConfigError(f"no listed method does {t} (methods that do: {', '.join(default_methods(t))})")
    return out


def check_request(preset_name: str, tasks: Sequence[str], methods: dict[str, Sequence[str]],
                  overrides: dict[str, Any], masks: Sequence[str], lr_search: int = 0) -> None:
    """Everything a benchmark needs, checked before any run folder is written.

    Raises:
        ConfigError: an unknown task or method, a method that does not do a task, a store without
            the labels (or segmentations) a task needs, a bad ``lr_search`` count.
        StoreError: a mask, split or frame count the store does not have.
    """
    from kmtr.data import KSpaceDataset
    from kmtr.eval.lr_search import MAX_TRIES
    from kmtr.pipeline import stage_config

    for task in tasks:
        get_task(task)
        for m in methods[task]:
            spec = method_spec(m)
            if task not in spec.tasks:
                raise ConfigError(f"method {m} does not do {task} (it does {', '.join(spec.tasks)}): leave it out, "
                                  f"or benchmark {task} with other --method options")
    for m in sorted({m for t in tasks for m in methods[t]}):
        require = method_spec(m).require
        if require is not None:
            require(m)  # optional dependencies (the nnunet extra), before anything is written
    if not 0 <= lr_search <= MAX_TRIES:
        raise ConfigError(f"--lr-search takes 0 (off) to {MAX_TRIES} learning rates, not {lr_search}")
    for mask in masks:
        for task in tasks:
            cfg = stage_config(preset_name, 3, task, {**overrides, "data.mask": mask})
            ds = KSpaceDataset(cfg.data.data, cfg.data.train_split, mask, cfg.data.frames, with_seg=False)
            get_task(task).targets(cfg, ds)  # labels present, diseases known and with both classes in training
            if cfg.data.val_split:
                KSpaceDataset(cfg.data.data, cfg.data.val_split, mask, cfg.data.frames, with_seg=False)
            elif lr_search or any(method_spec(m).needs_validation for m in methods[task]):
                raise ConfigError("the learning-rate search and spectrum_ridge choose their settings on the "
                                  "validation split: set data.val_split")


def threshold_table(method: str, val: Predictions, test: Predictions, names: Sequence[str], criterion: str
                    ) -> pd.DataFrame:
    """F1, recall and precision on the test split at the threshold chosen on validation and at 0.5."""
    from kmtr.analysis.metrics import choose_threshold, classification_metrics

    thresholds = [choose_threshold(val.pred[:, j], val.truth["diseases"][:, j], criterion) for j in range(len(names))]
    df = classification_metrics(test.pred, test.truth["diseases"], thresholds, names, n_boot=10)
    keep = ["disease", "threshold", "f1_at_threshold", "recall_at_threshold", "precision_at_threshold", "f1_at_0.5",
            "recall_at_0.5", "precision_at_0.5"]
    return df[keep].assign(method=_label(method))[["method", *keep]]


def compare_regression(preds: dict[str, Predictions], names: Sequence[str], train_mean: np.ndarray,
                       n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """MAE per phenotype (original units) of each method and of the training-mean guess, methods by their labels."""
    return relabel(_regression.compare_regression(preds, list(names), train_mean, n_boot, seed), _label)


def compare_classification(preds: dict[str, Predictions], names: Sequence[str], prevalence: np.ndarray,
                           n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """AUC-ROC per disease (the mean guess predicts the training prevalence), methods by their labels."""
    return relabel(_classification.compare_classification(preds, list(names), prevalence, n_boot, seed), _label)


def compare_segmentation(preds: dict[str, Predictions], class_names: Sequence[str], n_boot: int = 1000,
                         seed: int = 0) -> TaskComparison:
    """Per-subject Dice per class (all labelled views and frames), methods by their labels."""
    return relabel(_segmentation.compare_segmentation(preds, list(class_names), n_boot, seed), _label)


def compare_reconstruction(preds: dict[str, Predictions], n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """PSNR (dB) per method and of the zero-filled input, methods by their labels."""
    return relabel(_reconstruction.compare_reconstruction(preds, n_boot, seed), _label)


#: layout of ``predictions_<split>.npz``: 2 = with ``layout`` and the prediction variants (``variant_*``)
PREDICTION_CACHE_LAYOUT = 2


def _cache_layout(z: Any) -> int:
    return int(z["layout"]) if "layout" in z.files else 1


def cached_predictions(run_path: Path, split: str = "test", device: str | torch.device = "cpu",
                       data: str | None = None) -> tuple[Predictions, dict[str, Any]]:
    """Test predictions of a finished run, from ``<run>/predictions_<split>.npz`` when it is newer
    than the checkpoint, else computed and cached. Returns (predictions, the run's targets)."""
    cache = run_path / f"predictions_{split}.npz"
    ckpt = run_path / "last.pt"  # absent for runs that are not kmtr models (nnU-Net): the cache is all there is
    if cache.exists() and (not ckpt.exists() or cache.stat().st_mtime >= ckpt.stat().st_mtime):
        z = np.load(cache, allow_pickle=False)
        # self-contained (no model rebuilt) and of this layout; a cache of an earlier layout is
        # recomputed from the checkpoint (it lacks the prediction variants), else read as it is
        if "targets" in z.files and (not ckpt.exists() or _cache_layout(z) == PREDICTION_CACHE_LAYOUT):
            truth = {k[6:]: z[k] for k in z.files if k.startswith("truth_")}
            variants = {k[8:]: z[k] for k in z.files if k.startswith("variant_")}
            return (Predictions(str(z["task"]), z["rows"], z["pred"], truth, variants),
                    json.loads(str(z["targets"])))
    run = load_run(run_path, device, data)
    preds = predict_split(run, split, device)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, task=np.asarray(preds.task), rows=preds.rows, pred=preds.pred,
             layout=np.asarray(PREDICTION_CACHE_LAYOUT),
             targets=np.asarray(json.dumps(run.targets)), **{f"truth_{k}": v for k, v in preds.truth.items()},
             **{f"variant_{k}": v for k, v in preds.variants.items()})
    tmp.replace(cache)
    return preds, run.targets


def run_benchmark(
    preset_name: str,
    tasks: Sequence[str] = ("regression", "classification"),
    accs: Sequence[float] = (4,),
    pattern: str = "vista",
    methods: dict[str, Sequence[str]] | None = None,
    overrides: dict[str, Any] | None = None,
    name: str = "benchmark",
    out_dir: str = "runs",
    device: str = "cpu",
    n_boot: int = 1000,
    seed: int = 0,
    phenotype: str = "LVEF (%)",
    disease: str | None = None,
    lr_search: int = 0,
    lr_search_epochs: int | None = None,
) -> Path:
    """Train what is missing, evaluate every method on the test split, write tables and plots.

    Args:
        lr_search: learning rates tried per (method, task) on the validation split before the
            full run (0 = off: every method trains with its preset's learning rate); the same
            count and length for every method (:mod:`kmtr.eval.lr_search`).
        lr_search_epochs: epochs per try (default a quarter of the task's epochs, at least 1).

    Returns the report folder ``<out_dir>/<name>/report``.

    Raises:
        StoreError: a mask ``<pattern>_r<R>`` is not in the store (checked for every R first).
        ConfigError: see :func:`check_request` — all before any run folder is written.
    """
    from kmtr.eval.lr_search import search_lr
    from kmtr.eval.report import markdown_table
    from kmtr.pipeline import is_finished, stage_config, train_one, train_pipeline
    from kmtr.store import open_store, read_store_info
    from kmtr.train.runner import run_dir

    overrides = dict(overrides or {})
    methods = {t: tuple(methods[t]) if methods and t in methods else default_methods(t) for t in tasks}
    data = overrides.get("data.data") or stage_config(preset_name, 1, "", overrides).data.data
    info = read_store_info(open_store(data), data)
    masks = [f"{pattern}_r{int(r) if float(r).is_integer() else r}" for r in accs]
    for m in masks:
        info.check_mask(m)  # every R before any training
    check_request(preset_name, tasks, methods, {**overrides, "data.data": data}, masks, lr_search)
    report = Path(out_dir) / name / "report"
    report.mkdir(parents=True, exist_ok=True)
    every = list(dict.fromkeys(m for t in tasks for m in methods[t]))
    sections = [f"# Benchmark: {name} ({data}, test split)", "", "## Methods compared", "",
                markdown_table(method_table(every)), ""]
    recipes: list[dict[str, Any]] = []
    results: list[str] = []
    curves: dict[str, list[dict[str, Any]]] = {t: [] for t in tasks}
    guesses: dict[str, list[float]] = {t: [] for t in tasks}
    for r, mask in zip(accs, masks):
        base = {**overrides, "data.data": data, "data.mask": mask, "run.name": f"{name}/{mask}", "run.out_dir": out_dir}
        inits = {method_spec(m).init_from for t in tasks for m in methods[t]}
        if inits & {"stage1", "stage2"}:
            train_pipeline(preset_name, (1, 2) if "stage2" in inits else (1,), (), base)
        for task in tasks:
            preds: dict[str, Predictions] = {}
            vals: dict[str, Predictions] = {}
            targets: dict[str, Any] = {}
            for method in methods[task]:
                cfg = stage_config(preset_name, 3, task, {**base, "method": method})
                preset_lr = cfg.optim.lr
                searched = None
                if lr_search:
                    epochs = lr_search_epochs or max(1, cfg.optim.epochs // 4)
                    searched = search_lr(cfg, lr_search, epochs, Path(out_dir) / name / mask / "lr-search")
                    if searched is not None:
                        cfg.optim.lr = searched.chosen
                recipes.append(_recipe_row(r, method, task, cfg, preset_lr, searched))
                if not is_finished(cfg, same_config=True):
                    print(f"== R = {r:g}: {method} / {task}", flush=True)
                    train_one(cfg, resume="auto")
                preds[method], targets = cached_predictions(run_dir(cfg), "test", device)
                if get_task(task).threshold_on_validation:
                    vals[method], _ = cached_predictions(run_dir(cfg), cfg.data.val_split or "validation", device)
            rows0 = next(iter(preds.values())).rows
            if any(not np.array_equal(p.rows, rows0) for p in preds.values()):
                raise RuntimeError("methods were evaluated on different subjects")
            comp = _compare(task, preds, targets, n_boot, seed)
            tag = f"{task}_r{r:g}"
            comp.values.to_csv(report / f"{tag}_values.csv")
            comp.lo.to_csv(report / f"{tag}_lo.csv")
            comp.hi.to_csv(report / f"{tag}_hi.csv")
            if not comp.paired.empty:
                comp.paired.to_csv(report / f"{tag}_paired.csv", index=False)
            results += [f"## {task.capitalize()}, {mask} (R = {r:g}): {comp.metric}, {len(rows0)} test subjects", "",
                        comp.markdown(), ""]
            if not comp.paired.empty:
                results += ["Paired tests, k-MTR − method (negative = k-MTR lower):", "",
                            markdown_table(comp.paired), ""]
            if vals:
                criterion = stage_config(preset_name, 3, task, base).heads.threshold
                thr = pd.concat([threshold_table(m, vals[m], preds[m], targets["names"], criterion) for m in vals])
                thr.to_csv(report / f"{tag}_thresholds.csv", index=False)
                results += [f"F1, recall and precision on the test split at the threshold chosen on the validation "
                            f"split (max {criterion}; `*_at_threshold`) and at 0.5 (`*_at_0.5`):", "",
                            markdown_table(thr), ""]
            head = _headline(task, comp, phenotype, disease)
            if head is not None:
                for col in comp.values.columns:
                    if col == MEAN_GUESS:
                        guesses[task].append(float(comp.values.loc[head, col]))
                        continue
                    curves[task].append({"method": col, "acc": float(r), "value": comp.values.loc[head, col],
                                         "lo": comp.lo.loc[head, col], "hi": comp.hi.loc[head, col], "row": head})
    recipe_df = pd.DataFrame(recipes)
    recipe_df.to_csv(report / "recipes.csv", index=False)
    search_note = (f"learning rates searched on the validation split: {lr_search} per method, the same number of "
                   f"short runs for every method (grids in `kmtr/eval/lr_search.py`)" if lr_search else
                   "no learning-rate search (`--lr-search N` to search): every method trains with its preset's "
                   "learning rate")
    sections += ["## Recipes (stage III)", "", f"{search_note}.", "", markdown_table(recipe_df), "", *results]
    if len(accs) > 1:
        for task, pts in curves.items():
            if not pts:
                continue
            df = pd.DataFrame(pts)
            comp_metric = get_task(task).metric
            guess = float(np.mean(guesses[task])) if guesses[task] else None
            path = figures.metric_vs_acceleration(df, report / f"acceleration_{task}.png", mean_guess=guess,
                                                  ylabel=f"{comp_metric} {df['row'].iloc[0]}",
                                                  higher_is_better=get_task(task).metric_higher_is_better)
            df.to_csv(report / f"acceleration_{task}.csv", index=False)
            sections += [f"## {task.capitalize()} against R: {df['row'].iloc[0]}", "", f"![{task}]({path.name})", ""]
    (report / "benchmark.md").write_text("\n".join(sections))
    return report


def _recipe_row(r: float, method: str, task: str, cfg: Any, preset_lr: float, searched: Any) -> dict[str, Any]:
    """One row of the recipes table: what (method, task) trained with, and how its learning rate was chosen."""
    own = method_spec(method).own_recipe
    epochs, batch = cfg.optim.epochs, cfg.data.batch_size
    if own is not None:
        lr, how, epochs, batch = own(cfg)
    elif searched is not None:
        tried = ", ".join(f"{lr:g}: {loss:.4g}" for lr, loss in zip(searched.tried, searched.val_loss))
        lr, how = f"{searched.chosen:g}", f"searched ({searched.epochs} epochs per try; validation loss {tried})"
    else:
        lr, how = f"{cfg.optim.lr:g}", "preset" if cfg.optim.lr == preset_lr else "set"
    return {"R": f"{r:g}", "method": _label(method), "task": task, "learning rate": lr, "chosen by": how,
            "epochs": epochs, "batch": batch}


def _compare(task: str, preds: dict[str, Predictions], targets: dict[str, Any], n_boot: int, seed: int
             ) -> TaskComparison:
    """The task's comparison of ``preds`` (method → predictions), methods by their labels."""
    return relabel(get_task(task).compare(preds, targets, n_boot, seed), _label)


def _headline(task: str, comp: TaskComparison, phenotype: str, disease: str | None) -> str | None:
    """The task's row plotted against R."""
    return get_task(task).headline(comp, phenotype, disease)
