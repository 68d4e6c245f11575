"""``kmtr benchmark``: k-MTR against the baselines on the same store, splits and metrics.

For each acceleration R (a mask ``<pattern>_r<R>`` already in the store) the experiment
``runs/<name>/<pattern>_r<R>/`` holds stage I and II of k-MTR and one stage-III run per
(method, task). Missing runs are trained, finished ones skipped, interrupted ones resumed; test
predictions are cached beside each run (``predictions_<split>.npz``), so an interrupted benchmark
continues with what is still missing.

The report starts with what was compared: one row per method (input, pre-training, features,
recipe; :data:`kmtr.train.stage3.METHODS`) and the learning rate each (method, task) trained
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from kmtr.eval import figures
from kmtr.eval.predict import Predictions, load_run, predict_split
from kmtr.eval.stats import bootstrap_ci, paired_bootstrap, wilcoxon_paired
from kmtr.eval.tables import comparison_table

__all__ = [
    "DEFAULT_METHODS", "METHOD_LABELS", "TaskComparison", "method_table", "check_request", "threshold_table",
    "compare_regression", "compare_classification",
    "compare_segmentation", "compare_reconstruction", "cached_predictions", "run_benchmark",
]

DEFAULT_METHODS: dict[str, tuple[str, ...]] = {
    "regression": ("kmtr", "mae", "resnet50", "resnet50_u", "resnet50_k", "spectrum_ridge"),
    "classification": ("kmtr", "mae", "resnet50", "resnet50_u", "resnet50_k", "spectrum_ridge"),
    "segmentation": ("kmtr", "mae", "unet", "unet_u", "nnunet", "nnunet_u"),
    "reconstruction": ("kmtr", "mae"),
}
METHOD_LABELS = {
    "kmtr": "k-MTR", "mae": "MAE w/o stage II", "resnet50": "ResNet-50 (full images)",
    "resnet50_u": "ResNet-50^u", "resnet50_k": "ResNet-50^k", "unet": "U-Net (full images)", "unet_u": "U-Net^u",
    "mean_guess": "mean guess", "zero_filled": "zero-filled", "spectrum_ridge": "spectrum ridge",
    "kmtr_spectrum": "k-MTR + spectrum", "nnunet": "nnU-Net (full images)", "nnunet_u": "nnU-Net^u",
}
INPUT_WORDS = {"image": "fully sampled images", "image_under": "zero-filled undersampled images",
               "kspace_under": "undersampled k-space"}
MEAN_GUESS = "mean guess"


@dataclass
class TaskComparison:
    """Values, 95 % intervals and paired tests of every method on one task (rows × methods)."""

    task: str
    metric: str
    higher_is_better: bool
    values: pd.DataFrame
    lo: pd.DataFrame
    hi: pd.DataFrame
    paired: pd.DataFrame  # long: row, method, diff (k-MTR − method), lo, hi, p_value, n

    def markdown(self) -> str:
        reference = MEAN_GUESS if MEAN_GUESS in self.values.columns else None
        table = comparison_table(self.values, self.lo, self.hi, self.higher_is_better, reference=reference)
        return table.markdown()


def _label(method: str) -> str:
    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    from kmtr.train.stage3 import METHODS, method_spec

    return (method_spec(method).label or method) if method in METHODS else method


def method_table(methods: Sequence[str]) -> pd.DataFrame:
    """What each method is: one row per method (name in the tables, input, pre-training, features,
    recipe), from the method registry :data:`kmtr.train.stage3.METHODS`."""
    from kmtr.train.stage3 import method_spec

    rows = []
    for m in methods:
        spec = method_spec(m)
        rows.append({"method": m, "in the tables": _label(m), "input": INPUT_WORDS.get(spec.input, spec.input),
                     "pre-training": spec.pretraining, "features": spec.features or "–",
                     "recipe": spec.recipe or "–"})
    return pd.DataFrame(rows)


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
    from kmtr.train.pipeline import stage_config
    from kmtr.train.runner import ConfigError
    from kmtr.train.stage3 import TASKS, method_spec, task_targets

    for task in tasks:
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        for m in methods[task]:
            spec = method_spec(m)
            if task not in spec.tasks:
                raise ConfigError(f"method {m} does not do {task} (it does {', '.join(spec.tasks)}): leave it out, "
                                  f"or benchmark {task} with other --method options")
    nnunet = sorted({m for t in tasks for m in methods[t] if m in ("nnunet", "nnunet_u")})
    if nnunet:
        from kmtr.nnunet import require_nnunet

        require_nnunet(nnunet[0])  # the nnunet extra, before anything is written
    if not 0 <= lr_search <= MAX_TRIES:
        raise ConfigError(f"--lr-search takes 0 (off) to {MAX_TRIES} learning rates, not {lr_search}")
    for mask in masks:
        for task in tasks:
            cfg = stage_config(preset_name, 3, task, {**overrides, "data.mask": mask})
            ds = KSpaceDataset(cfg.data.data, cfg.data.train_split, mask, cfg.data.frames, with_seg=False)
            task_targets(cfg, ds)  # labels present, diseases known and with both classes in training
            if cfg.data.val_split:
                KSpaceDataset(cfg.data.data, cfg.data.val_split, mask, cfg.data.frames, with_seg=False)
            elif lr_search or "spectrum_ridge" in methods[task]:
                raise ConfigError("the learning-rate search and spectrum_ridge choose their settings on the "
                                  "validation split: set data.val_split")


def threshold_table(method: str, val: Predictions, test: Predictions, names: Sequence[str], criterion: str
                    ) -> pd.DataFrame:
    """F1, recall and precision on the test split at the threshold chosen on validation and at 0.5."""
    from kmtr.eval.metrics import choose_threshold, classification_metrics

    thresholds = [choose_threshold(val.pred[:, j], val.truth["diseases"][:, j], criterion) for j in range(len(names))]
    df = classification_metrics(test.pred, test.truth["diseases"], thresholds, names, n_boot=10)
    keep = ["disease", "threshold", "f1_at_threshold", "recall_at_threshold", "precision_at_threshold", "f1_at_0.5",
            "recall_at_0.5", "precision_at_0.5"]
    return df[keep].assign(method=_label(method))[["method", *keep]]


def _paired_rows(rows: Sequence[str], methods: Sequence[str], test: Callable[[int, str], Any]) -> pd.DataFrame:
    out = []
    for j, row in enumerate(rows):
        for m in methods:
            if m == "kmtr":
                continue
            r = test(j, m)
            out.append({"row": row, "method": _label(m), "diff": r.diff, "lo": r.lo, "hi": r.hi, "p_value": r.p_value,
                        "n": r.n})
    return pd.DataFrame(out)


def _frames(rows: Sequence[str], cols: list[str], cells: dict[tuple[int, str], tuple[float, float, float]]
            ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    v, lo, hi = (pd.DataFrame(np.nan, index=list(rows), columns=cols) for _ in range(3))
    for (j, col), (a, b, c) in cells.items():
        v.iloc[j, cols.index(col)], lo.iloc[j, cols.index(col)], hi.iloc[j, cols.index(col)] = a, b, c
    return v, lo, hi


def compare_regression(preds: dict[str, Predictions], names: Sequence[str], train_mean: np.ndarray,
                       n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """MAE per phenotype (original units) of each method and of the training-mean guess."""
    truth = next(iter(preds.values())).truth["phenotypes"]
    errors = {m: np.abs(p.pred - truth) for m, p in preds.items()}
    errors["mean_guess"] = np.abs(np.asarray(train_mean)[None] - truth)
    cols = [_label(m) for m in errors]
    cells = {}
    for m, err in errors.items():
        for j in range(len(names)):
            e = err[:, j][np.isfinite(err[:, j])]
            cells[(j, _label(m))] = bootstrap_ci(np.mean, e, n_boot=n_boot, seed=seed) if len(e) else (np.nan,) * 3
    v, lo, hi = _frames(names, cols, cells)
    paired = _paired_rows(names, list(errors), lambda j, m: wilcoxon_paired(errors["kmtr"][:, j], errors[m][:, j],
                                                                            n_boot=n_boot, seed=seed)) \
        if "kmtr" in errors else pd.DataFrame()
    return TaskComparison("regression", "MAE", False, v, lo, hi, paired)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


def compare_classification(preds: dict[str, Predictions], names: Sequence[str], prevalence: np.ndarray,
                           n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """AUC-ROC per disease; the mean guess predicts the training prevalence for everyone (AUC 0.5)."""
    labels = next(iter(preds.values())).truth["diseases"]
    probs = {m: p.pred for m, p in preds.items()}
    probs["mean_guess"] = np.broadcast_to(np.asarray(prevalence, float)[None], labels.shape).copy()
    cols = [_label(m) for m in probs]
    cells = {}
    for m, prob in probs.items():
        for j in range(len(names)):
            known = labels[:, j] >= 0
            cells[(j, _label(m))] = bootstrap_ci(_auc, labels[known, j], prob[known, j], n_boot=n_boot, seed=seed)

    def test(j: int, m: str) -> Any:
        known = labels[:, j] >= 0
        return paired_bootstrap(_auc, labels[known, j], probs["kmtr"][known, j], probs[m][known, j], n_boot=n_boot,
                                seed=seed)

    v, lo, hi = _frames(names, cols, cells)
    paired = _paired_rows(names, list(probs), test) if "kmtr" in probs else pd.DataFrame()
    return TaskComparison("classification", "AUC-ROC", True, v, lo, hi, paired)


def subject_dice(pred: np.ndarray, true: np.ndarray, present: np.ndarray, n_classes: int = 6) -> np.ndarray:
    """Per-subject Dice (N, C−1) for classes 1..C−1 over every labelled slice and frame (NaN when
    the class is absent from both); pred/true (N, S, T, H, W), present (N, S) bool."""
    out = np.full((pred.shape[0], n_classes - 1), np.nan)
    for i in range(pred.shape[0]):
        p, t = pred[i][present[i]], true[i][present[i]]
        for c in range(1, n_classes):
            a, b = p == c, t == c
            denom = a.sum() + b.sum()
            if denom:
                out[i, c - 1] = 2.0 * np.logical_and(a, b).sum() / denom
    return out


def compare_segmentation(preds: dict[str, Predictions], class_names: Sequence[str], n_boot: int = 1000,
                         seed: int = 0) -> TaskComparison:
    """Per-subject Dice per class (all labelled views and frames)."""
    first = next(iter(preds.values()))
    present = first.truth["seg_present"].astype(bool)
    dice = {m: subject_dice(p.pred, p.truth["seg"], present, len(class_names)) for m, p in preds.items()}
    rows = list(class_names[1:])
    cells = {}
    for m, d in dice.items():
        for j in range(len(rows)):
            x = d[:, j][np.isfinite(d[:, j])]
            cells[(j, _label(m))] = bootstrap_ci(np.mean, x, n_boot=n_boot, seed=seed) if len(x) else (np.nan,) * 3
    v, lo, hi = _frames(rows, [_label(m) for m in dice], cells)
    paired = _paired_rows(rows, list(dice), lambda j, m: wilcoxon_paired(dice["kmtr"][:, j], dice[m][:, j],
                                                                         n_boot=n_boot, seed=seed)) \
        if "kmtr" in dice else pd.DataFrame()
    return TaskComparison("segmentation", "Dice", True, v, lo, hi, paired)


def compare_reconstruction(preds: dict[str, Predictions], n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """PSNR (dB) per method, with the zero-filled input as the reference row."""
    from kmtr.eval.metrics import reconstruction_metrics

    first = next(iter(preds.values()))
    psnr = {m: reconstruction_metrics(p.pred, p.truth["image"])["psnr"].to_numpy() for m, p in preds.items()}
    psnr["zero_filled"] = reconstruction_metrics(first.truth["zero_filled"], first.truth["image"])["psnr"].to_numpy()
    cells = {(0, _label(m)): bootstrap_ci(np.mean, x, n_boot=n_boot, seed=seed) for m, x in psnr.items()}
    v, lo, hi = _frames(["PSNR (dB)"], [_label(m) for m in psnr], cells)
    paired = _paired_rows(["PSNR (dB)"], list(psnr), lambda j, m: wilcoxon_paired(psnr["kmtr"], psnr[m], n_boot=n_boot,
                                                                                  seed=seed)) \
        if "kmtr" in psnr else pd.DataFrame()
    return TaskComparison("reconstruction", "PSNR", True, v, lo, hi, paired)


def cached_predictions(run_path: Path, split: str = "test", device: str | torch.device = "cpu",
                       data: str | None = None) -> tuple[Predictions, dict[str, Any]]:
    """Test predictions of a finished run, from ``<run>/predictions_<split>.npz`` when it is newer
    than the checkpoint, else computed and cached. Returns (predictions, the run's targets)."""
    cache = run_path / f"predictions_{split}.npz"
    ckpt = run_path / "last.pt"  # absent for runs that are not kmtr models (nnU-Net): the cache is all there is
    if cache.exists() and (not ckpt.exists() or cache.stat().st_mtime >= ckpt.stat().st_mtime):
        z = np.load(cache, allow_pickle=False)
        if "targets" in z.files:  # the cache is self-contained: no model rebuilt
            truth = {k[6:]: z[k] for k in z.files if k.startswith("truth_")}
            return Predictions(str(z["task"]), z["rows"], z["pred"], truth), json.loads(str(z["targets"]))
    run = load_run(run_path, device, data)
    preds = predict_split(run, split, device)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, task=np.asarray(preds.task), rows=preds.rows, pred=preds.pred,
             targets=np.asarray(json.dumps(run.targets)), **{f"truth_{k}": v for k, v in preds.truth.items()})
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
    from kmtr.store import open_store, read_store_info
    from kmtr.train.pipeline import is_finished, stage_config, train_one, train_pipeline
    from kmtr.train.runner import run_dir
    from kmtr.train.stage3 import method_spec

    overrides = dict(overrides or {})
    methods = {t: tuple(methods[t]) if methods and t in methods else DEFAULT_METHODS.get(t, ()) for t in tasks}
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
                if task == "classification":
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
            comp_metric = {"regression": "MAE", "classification": "AUC", "segmentation": "Dice",
                           "reconstruction": "PSNR (dB)"}[task]
            guess = float(np.mean(guesses[task])) if guesses[task] else None
            path = figures.metric_vs_acceleration(df, report / f"acceleration_{task}.png", mean_guess=guess,
                                                  ylabel=f"{comp_metric} {df['row'].iloc[0]}",
                                                  higher_is_better=task != "regression")
            df.to_csv(report / f"acceleration_{task}.csv", index=False)
            sections += [f"## {task.capitalize()} against R: {df['row'].iloc[0]}", "", f"![{task}]({path.name})", ""]
    (report / "benchmark.md").write_text("\n".join(sections))
    return report


def _recipe_row(r: float, method: str, task: str, cfg: Any, preset_lr: float, searched: Any) -> dict[str, Any]:
    """One row of the recipes table: what (method, task) trained with, and how its learning rate was chosen."""
    if method == "spectrum_ridge":
        lr, how = "–", "closed form; regularisation chosen on validation (regularisation.json in the run)"
    elif method in ("nnunet", "nnunet_u"):
        lr, how = "nnU-Net's", f"nnU-Net's own recipe (SGD, poly decay from 0.01), {cfg.heads.nnunet_trainer}"
    elif searched is not None:
        tried = ", ".join(f"{lr:g}: {loss:.4g}" for lr, loss in zip(searched.tried, searched.val_loss))
        lr, how = f"{searched.chosen:g}", f"searched ({searched.epochs} epochs per try; validation loss {tried})"
    else:
        lr, how = f"{cfg.optim.lr:g}", "preset" if cfg.optim.lr == preset_lr else "set"
    return {"R": f"{r:g}", "method": _label(method), "task": task, "learning rate": lr, "chosen by": how,
            "epochs": cfg.optim.epochs if method not in ("spectrum_ridge", "nnunet", "nnunet_u") else "–",
            "batch": cfg.data.batch_size if method not in ("nnunet", "nnunet_u") else "nnU-Net's plan"}


def _compare(task: str, preds: dict[str, Predictions], targets: dict[str, Any], n_boot: int, seed: int
             ) -> TaskComparison:
    if task == "regression":
        return compare_regression(preds, targets["names"], np.asarray(targets["mean"]), n_boot, seed)
    if task == "classification":
        pos = np.asarray(targets["train_positives"], float)
        neg = np.asarray(targets["train_negatives"], float)
        return compare_classification(preds, targets["names"], pos / (pos + neg), n_boot, seed)
    if task == "segmentation":
        return compare_segmentation(preds, targets["names"], n_boot, seed)
    return compare_reconstruction(preds, n_boot, seed)


def _headline(task: str, comp: TaskComparison, phenotype: str, disease: str | None) -> str | None:
    rows = list(comp.values.index)
    if task == "regression":
        return phenotype if phenotype in rows else rows[0]
    if task == "classification":
        if disease in rows:
            return disease
        # the first disease whose AUC is defined (the test split has both classes), else the first
        defined = [row for row in rows if np.isfinite(comp.values.loc[row].to_numpy(float)).all()]
        return (defined or rows)[0]
    return rows[0] if rows else None
