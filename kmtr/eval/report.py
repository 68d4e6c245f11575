"""``kmtr eval``: evaluate an experiment's stage-III runs on the test split and write a report.

For each run (``runs/<name>/stage3-<task>`` or a baseline ``<method>-<task>``):

* regression — per-phenotype MAE ± SD with bootstrap 95 % intervals beside the training-mean
  ("mean guess") MAE and a paired Wilcoxon test; predicted-vs-true scatter plots;
* classification — thresholds chosen on the validation split, then AUC-ROC (95 % CI), F1,
  recall, precision, average precision per disease on test; ROC curves;
* segmentation — Dice and 95th-percentile Hausdorff distance (mm) per class and view (MONAI);
  overlays; ventricular phenotypes measured on the predicted segmentation (short-axis areas,
  calibrated on the training split: :mod:`kmtr.analysis.seg_phenotypes`) beside the mean guess;
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

from kmtr.analysis import figures
from kmtr.analysis.predictions import PER_VIEW_KEYS
from kmtr.analysis.summaries import segmentation_tables
from kmtr.data import shared_sample_cache
from kmtr.eval.predict import Predictions, TrainedRun, load_run, predict_split, run_folders
from kmtr.tasks import get_task
from kmtr.tasks.base import EvalContext

__all__ = ["evaluate_run", "evaluate_experiment", "markdown_table", "segmentation_tables"]


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


def evaluate_run(run: TrainedRun, out: Path, split: str = "test", device: str | torch.device = "cpu",
                 n_boot: int = 1000, seed: int = 0, limit: int | None = None) -> dict[str, Any]:
    """Evaluate one run on ``split``; writes CSVs and PNGs into ``out``.

    Returns ``{"task", "method", "tables": {name: DataFrame}, "summary": DataFrame (the report's
    short table), "test": Predictions, "thresholds": …}``.
    """
    out.mkdir(parents=True, exist_ok=True)
    cfg = run.cfg
    test = predict_split(run, split, device, limit=limit)
    tag = f"{cfg.method}-{cfg.task}"
    ctx = EvalContext(run, test, out, tag, lambda other: predict_split(run, other, device, limit=limit), n_boot, seed)
    result: dict[str, Any] = {"task": cfg.task, "method": cfg.method, "test": test,
                              **get_task(cfg.task).evaluate(ctx)}
    for name, table in result["tables"].items():
        table.to_csv(out / f"{tag}_{name}.csv", index=False)
    return result


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
                           {k: v if k in PER_VIEW_KEYS else v[:limit] for k, v in test.truth.items()})
    tag = f"{cfg.method}-{cfg.task}"
    df, summary = segmentation_tables(test, targets["names"], out, tag)
    df.to_csv(out / f"{tag}_segmentation.csv", index=False)
    return {"task": cfg.task, "method": cfg.method, "test": test, "tables": {"segmentation": df},
            "summary": summary}, cfg


def _stage2_section(experiment: Path, out: Path, split: str, device: str | torch.device, limit: int | None) -> str:
    """t-SNE of aligned embeddings of held-out subjects + retrieval accuracy (empty when no stage II run)."""
    ckpt = experiment / "stage2" / "last.pt"
    if not ckpt.exists():
        return ""
    from kmtr.analysis.retrieval import retrieval_accuracy
    from kmtr.data import KSpaceDataset
    from kmtr.store import StoreError
    from kmtr.train.init import load_init
    from kmtr.train.stage2 import build_stage2_model, embed_split

    state, cfg = load_init(ckpt)
    full = KSpaceDataset(cfg.data.data, "all", cfg.data.mask, cfg.data.frames, with_seg=False)
    model = build_stage2_model(cfg, full.shape, full.info.view_ids, None, full.coils)
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
    with shared_sample_cache():  # runs trained with data.cache read each subject from the store once
        for path in runs:
            sections += _run_section(path, report, split, device, n_boot, seed, limit, data)
    sections.append(_stage2_section(exp_dir, report, split, device, limit))
    (report / "report.md").write_text("\n".join(sections))
    return report


def _run_section(path: Path, report: Path, split: str, device: str | torch.device, n_boot: int, seed: int,
                 limit: int | None, data: str | None) -> list[str]:
    """The report's section of one stage-III run (its tables and figures written into ``report``)."""
    sections: list[str] = []
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
    return sections
