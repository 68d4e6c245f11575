"""``kmtr eval``: evaluate an experiment's stage-III runs on the test split and write a report.

For each run (``runs/<name>/stage3-<task>`` or a baseline ``<method>-<task>``):

* regression — per-phenotype MAE ± SD with bootstrap 95 % intervals beside the training-mean
  ("mean guess") MAE and a paired Wilcoxon test; predicted-vs-true scatter plots;
* classification — thresholds chosen on the validation split, then AUC-ROC (95 % CI), F1,
  recall, precision, average precision per disease on test; ROC curves;
* segmentation — Dice and 95th-percentile Hausdorff distance (mm) per class and view (MONAI);
  overlays; ventricular phenotypes measured on the predicted segmentation (short-axis areas,
  calibrated on the training split: :mod:`kmtr.eval.seg_phenotypes`) beside the mean guess;
* reconstruction — PSNR and SSIM per subject (and the zero-filled input's for reference);
  reconstructions next to their targets;

plus, when the experiment has a stage-II run, a t-SNE of the aligned image and k-space
embeddings of the held-out subjects coloured by phenotype quintiles, and their retrieval accuracy.
Output: ``<experiment>/report/`` with ``report.md``, one CSV per table and the PNG figures.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from kmtr.eval import figures, metrics
from kmtr.eval.predict import Predictions, TrainedRun, load_run, predict_split, run_folders

__all__ = ["evaluate_run", "evaluate_experiment", "markdown_table"]


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    """A GitHub Markdown table of ``df`` (no index)."""
    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else floatfmt.format(v)
        return str(v)

    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def _pm(mean: float, sd: float) -> str:
    return "–" if not np.isfinite(mean) else f"{mean:.3g} ± {sd:.2g}"


def _regression_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The report's table of :func:`kmtr.eval.metrics.regression_metrics` output."""
    return pd.DataFrame({
        "phenotype": df["phenotype"],
        "MAE ± SD": [_pm(m, s) for m, s in zip(df["mae"], df["mae_sd"])],
        "95% CI": [f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(df["mae_lo"], df["mae_hi"])],
        "mean guess MAE ± SD": [_pm(m, s) for m, s in zip(df["mean_guess_mae"], df["mean_guess_sd"])],
        "better than mean guess": np.where(df["mae"] < df["mean_guess_mae"], "yes", "no"),
        "p (Wilcoxon)": df["p_value"],
    })


def evaluate_run(run: TrainedRun, out: Path, split: str = "test", device: str | torch.device = "cpu",
                 n_boot: int = 1000, seed: int = 0, limit: int | None = None) -> dict[str, Any]:
    """Evaluate one run on ``split``; writes CSVs and PNGs into ``out``.

    Returns ``{"task", "method", "tables": {name: DataFrame}, "summary": DataFrame (the report's
    short table), "test": Predictions, "thresholds": …}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    cfg, task = run.cfg, run.cfg.task
    test = predict_split(run, split, device, limit=limit)
    tag = f"{cfg.method}-{task}"
    result: dict[str, Any] = {"task": task, "method": cfg.method, "test": test, "tables": {}}
    if task == "regression":
        names = run.targets["names"]
        units = run.targets.get("units") or [""] * len(names)
        df = metrics.regression_metrics(test.pred, test.truth["phenotypes"], names,
                                        np.asarray(run.targets["mean"]), units=units, n_boot=n_boot, seed=seed)
        result["tables"]["regression"] = df
        figures.scatter_pred_true(test.pred, test.truth["phenotypes"], names, units, out / f"{tag}_scatter.png")
        result["summary"] = _regression_summary(df)
    elif task == "classification":
        val = predict_split(run, cfg.data.val_split or "validation", device, limit=limit)
        names = run.targets["names"]
        thresholds = np.array([
            metrics.choose_threshold(val.pred[:, j], val.truth["diseases"][:, j], cfg.heads.threshold)
            for j in range(len(names))
        ])
        df = metrics.classification_metrics(test.pred, test.truth["diseases"], thresholds, names, n_boot=n_boot,
                                            seed=seed)
        result["tables"]["classification"] = df
        result["thresholds"] = thresholds
        figures.roc_curves(test.pred, test.truth["diseases"], names, out / f"{tag}_roc.png")
        result["summary"] = pd.DataFrame({
            "disease": df["disease"], "n (pos)": [f"{n} ({p})" for n, p in zip(df["n"], df["n_pos"])],
            "AUC [95% CI]": [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(a) else "–"
                             for a, lo, hi in zip(df["auc"], df["auc_lo"], df["auc_hi"])],
            "AUC > 0.5 beyond CI": np.where(df["auc_lo"] > 0.5, "yes", "no"),
            "threshold (validation)": df["threshold"], "F1 @ val. threshold": df["f1_at_threshold"],
            "recall @ val. threshold": df["recall_at_threshold"],
            "precision @ val. threshold": df["precision_at_threshold"], "F1 @ 0.5": df["f1_at_0.5"],
            "recall @ 0.5": df["recall_at_0.5"], "precision @ 0.5": df["precision_at_0.5"], "AP": df["ap"],
        })
    elif task == "segmentation":
        result["tables"]["segmentation"], result["summary"] = segmentation_tables(test, run.targets["names"], out, tag)
        section = _segmentation_phenotypes(run, test, out / f"{tag}_phenotypes_scatter.png", device, n_boot, seed,
                                           limit)
        if section is not None:
            result["tables"]["phenotypes"] = section
            result["sections"] = [("Phenotypes from the predicted segmentation (linear calibration on the "
                                   "training split's predictions, `kmtr/eval/seg_phenotypes.py`)",
                                   _regression_summary(section))]
    elif task == "reconstruction":
        df = metrics.reconstruction_metrics(test.pred, test.truth["image"])
        zf = metrics.reconstruction_metrics(test.truth["zero_filled"], test.truth["image"])
        df = df.assign(zero_filled_psnr=zf["psnr"].to_numpy(), zero_filled_ssim=zf["ssim"].to_numpy())
        result["tables"]["reconstruction"] = df
        k = min(4, len(test.rows))
        s_mid = 0
        figures.reconstruction_grid(test.truth["image"][:k, s_mid, 0], test.truth["zero_filled"][:k, s_mid, 0],
                                    test.pred[:k, s_mid, 0], [f"subject {i}, slice {s_mid}" for i in range(k)],
                                    out / f"{tag}_recon.png")
        result["summary"] = pd.DataFrame({
            "input": ["reconstruction", "zero-filled"],
            "PSNR (dB) ± SD": [_pm(df["psnr"].mean(), df["psnr"].std()), _pm(zf["psnr"].mean(), zf["psnr"].std())],
            "SSIM ± SD": [_pm(df["ssim"].mean(), df["ssim"].std()), _pm(zf["ssim"].mean(), zf["ssim"].std())],
        })
    for name, table in result["tables"].items():
        table.to_csv(out / f"{tag}_{name}.csv", index=False)
    return result


def segmentation_tables(test: Predictions, class_names: list[str], out: Path, tag: str
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dice and HD95 per view and class of segmentation predictions (``metrics.segmentation_metrics``)
    and the report's short table (all views, per class); writes the overlay figure ``<tag>_overlay.png``."""
    view_names = test.truth["view_names"]
    df = metrics.segmentation_metrics(test.pred, test.truth["seg"], test.truth["seg_present"].astype(bool),
                                      list(view_names), list(class_names), spacing=test.truth["pixel_spacing"])
    _overlays(test, tuple(view_names), out / f"{tag}_overlay.png")
    summary = df[df["view"] == "all"][["class", "n", "dice", "dice_sd", "hd95", "hd95_sd"]]
    return df, pd.DataFrame({
        "class": summary["class"], "frames": summary["n"],
        "Dice ± SD": [_pm(m, s) for m, s in zip(summary["dice"], summary["dice_sd"])],
        "HD95 (mm) ± SD": [_pm(m, s) for m, s in zip(summary["hd95"], summary["hd95_sd"])],
    })


def evaluate_predictions_run(path: Path, out: Path, split: str = "test", limit: int | None = None
                             ) -> tuple[dict[str, Any], Any]:
    """Evaluate a run that has no kmtr model, only its cached test predictions (an nnU-Net run,
    :mod:`kmtr.nnunet`): the same Dice / HD95 tables as :func:`evaluate_run`. Returns (result, config).

    Raises:
        ValueError: a split other than test (such runs predict the test split only).
    """
    from kmtr.config import config_from_dict
    from kmtr.nnunet.predictions import load_predictions

    cfg = config_from_dict(json.loads((path / "config.json").read_text()))
    if split != "test":
        raise ValueError(f"{path} ({cfg.method}) holds predictions of the test split only, not {split!r}")
    test, targets = load_predictions(path)
    if limit is not None:
        test = Predictions(test.task, test.rows[:limit], test.pred[:limit],
                           {k: v if k == "view_names" else v[:limit] for k, v in test.truth.items()})
    tag = f"{cfg.method}-{cfg.task}"
    df, summary = segmentation_tables(test, targets["names"], out, tag)
    df.to_csv(out / f"{tag}_segmentation.csv", index=False)
    return {"task": cfg.task, "method": cfg.method, "test": test, "tables": {"segmentation": df},
            "summary": summary}, cfg


def _segmentation_phenotypes(run: TrainedRun, test: Predictions, scatter: Path, device: str | torch.device,
                             n_boot: int, seed: int, limit: int | None) -> pd.DataFrame | None:
    """Ventricular phenotypes measured on the predicted segmentation of ``test`` (see
    :mod:`kmtr.eval.seg_phenotypes`): calibrated on the training split's predictions, compared
    with the mean guess. None when the store has no phenotypes the calibration knows or no
    training subjects to calibrate on."""
    from kmtr.eval import seg_phenotypes as sp
    from kmtr.store import StoreError, open_store, read_store_info

    cfg = run.cfg
    info = read_store_info(open_store(cfg.data.data), cfg.data.data)
    columns = list(info.phenotype_columns)
    if "phenotypes" not in test.truth or not any(c in sp.FEATURES for c in columns):
        return None
    try:
        train = predict_split(run, cfg.data.train_split, device, limit=limit)
    except StoreError:  # no training subjects to calibrate on (e.g. an external test-only store)
        return None
    sax = [i for i, v in enumerate(info.view_ids) if v == 0]

    def features(pred: Predictions) -> dict[str, np.ndarray]:
        return sp.phenotype_features(pred.pred, pred.truth["pixel_spacing"], sax, lv=1, myo=2, rv=3)

    y_train = train.truth["phenotypes"].astype(np.float64)
    fits = sp.fit_calibration(features(train), y_train, columns)
    if not fits:
        return None
    names = list(fits)
    predicted = sp.apply_calibration(fits, features(test))
    idx = [columns.index(c) for c in names]
    y_test = test.truth["phenotypes"][:, idx].astype(np.float64)
    pred = np.stack([predicted[c] for c in names], axis=1)
    units = [info.phenotype_units[j] if j < len(info.phenotype_units) else "" for j in idx]
    df = metrics.regression_metrics(pred, y_test, names, np.nanmean(y_train[:, idx], axis=0), units=units,
                                    n_boot=n_boot, seed=seed)
    figures.scatter_pred_true(pred, y_test, names, units, scatter)
    return df.assign(features=[" + ".join(fits[c]["features"]) for c in names])  # type: ignore[arg-type]


def _overlays(test: Predictions, view_names: tuple[str, ...], path: Path) -> None:
    """Up to 4 examples: first test subjects, a mid short-axis slice and the 4ch view, frame 0."""
    picks = []
    present = test.truth["seg_present"].astype(bool)
    for i in range(min(2, len(test.rows))):
        for s in (2, len(view_names) - 1):
            if s < present.shape[1] and present[i, s]:
                picks.append((i, s))
    if not picks:
        return
    images = np.stack([test.truth["image_frame0"][i, s] for i, s in picks])
    true = np.stack([test.truth["seg"][i, s, 0] for i, s in picks])
    pred = np.stack([test.pred[i, s, 0] for i, s in picks])
    figures.segmentation_overlay(images, true, pred, [f"subject {i}, {view_names[s]}" for i, s in picks], path)


def _stage2_section(experiment: Path, out: Path, split: str, device: str | torch.device, limit: int | None) -> str:
    """t-SNE of aligned embeddings of held-out subjects + retrieval accuracy (empty when no stage II run)."""
    ckpt = experiment / "stage2" / "last.pt"
    if not ckpt.exists():
        return ""
    from kmtr.data import KSpaceDataset
    from kmtr.eval.retrieval import retrieval_accuracy
    from kmtr.store import StoreError
    from kmtr.train.init import load_init
    from kmtr.train.stage2 import build_stage2_model, embed_split

    state, cfg = load_init(ckpt)
    full = KSpaceDataset(cfg.data.data, "all", cfg.data.mask, cfg.data.frames, with_seg=False)
    model = build_stage2_model(cfg, full.shape, full.info.view_ids, None)
    model.load_state_dict(state)
    model.to(device)
    zi_all, zk_all, ph_all = [], [], []
    ds = None
    for sp in ("validation", "test"):
        try:
            ds = KSpaceDataset(cfg.data.data, sp, cfg.data.mask, cfg.data.frames, with_seg=False)
        except StoreError:  # an empty split is simply left out
            continue
        if limit is not None:
            ds.rows = ds.rows[:limit]
        zi, zk = embed_split(model, ds, torch.device(device))
        zi_all.append(zi)
        zk_all.append(zk)
        ph_all.append(ds.split_labels("phenotypes") if ds.info.has_phenotypes else np.full((len(ds), 1), np.nan))
    if not zi_all or ds is None:
        return ""
    zi, zk, ph = np.concatenate(zi_all), np.concatenate(zk_all), np.concatenate(ph_all)
    acc = retrieval_accuracy(zi, zk)
    cols = list(ds.info.phenotype_columns) or ["value"]
    lines = [f"## Stage II: aligned embeddings ({len(zi)} held-out subjects: validation + test)", "",
             f"Retrieval image → k-space top-1 {acc['a2b_top1']:.2f}, top-5 {acc['a2b_top5']:.2f}; "
             f"k-space → image top-1 {acc['b2a_top1']:.2f}, top-5 {acc['b2a_top5']:.2f} "
             f"(chance {1 / len(zi):.2f} / {min(5, len(zi)) / len(zi):.2f}).", ""]
    for name in [c for c in ("LVEDV (mL)", "LVEF (%)", "LVM (g)") if c in cols] or cols[:1]:
        j = cols.index(name)
        fname = f"tsne_{name.split(' ')[0]}.png"
        figures.tsne_plot(zi, zk, ph[:, j], name, out / fname)
        lines.append(f"![t-SNE coloured by {name} quintile]({fname})")
    (out / "stage2_retrieval.json").write_text(json.dumps(acc, indent=2))
    return "\n".join(lines) + "\n"


def evaluate_experiment(experiment: str | Path, split: str = "test", out: str | Path | None = None,
                        device: str | torch.device = "cpu", n_boot: int = 1000, seed: int = 0,
                        limit: int | None = None, data: str | None = None) -> Path:
    """Evaluate every stage-III run of ``experiment`` (a folder of runs, or one run) and write the
    report; returns the report folder.

    Raises:
        FileNotFoundError: no stage-III run found.
    """
    experiment = Path(experiment)
    runs = run_folders(experiment)
    if not runs:
        raise FileNotFoundError(f"no stage-III run (last.pt + config.json) in {experiment}")
    exp_dir = experiment if len(runs) > 1 or runs[0] != experiment else experiment.parent
    report = Path(out) if out else exp_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    sections = [f"# k-MTR evaluation: {exp_dir.name} ({split} split)", ""]
    for path in runs:
        if (path / "last.pt").exists():
            run = load_run(path, device, data)
            res, cfg = evaluate_run(run, report, split, device, n_boot, seed, limit), run.cfg
        else:  # nnU-Net: predictions only
            res, cfg = evaluate_predictions_run(path, report, split, limit)
        title = f"## {cfg.task.capitalize()}: {cfg.method} ({path.name}, {len(res['test'].rows)} subjects, " \
                f"mask {cfg.data.mask})"
        sections += [title, "", markdown_table(res["summary"]), ""]
        for heading, table in res.get("sections", []):
            sections += [f"{heading}:", "", markdown_table(table), ""]
        for png in sorted(report.glob(f"{cfg.method}-{cfg.task}_*.png")):
            sections.append(f"![{png.stem}]({png.name})")
        sections.append("")
        print(f"evaluated {path}", flush=True)
    sections.append(_stage2_section(exp_dir, report, split, device, limit))
    (report / "report.md").write_text("\n".join(sections))
    return report
