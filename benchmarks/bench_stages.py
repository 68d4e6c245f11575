"""Throughput and peak memory of every training stage (I, II, III × 4 tasks) of a preset, on any device.

For each stage the script builds the stage's real model (the builders ``kmtr train`` uses; random
weights, since only speed and memory are measured), reads batches from the store through the
stage's DataLoader, and times full optimiser steps as :class:`kmtr.train.loop.Trainer` does them
(bf16 autocast on CUDA, gradient clipping, AdamW). Printed per stage: parameters, batch, median
step time, subjects/s and tokens/s, peak device memory (``torch.cuda.max_memory_allocated``: the
model, AdamW state and activations) and, for comparison, the subjects/s a fresh DataLoader with the
stage's workers delivers alone (its start-up included) and its ratio to the model's rate (below 1:
the loader limits training). A stage that runs out of memory is reported as such and, when
gradient checkpointing was off, measured again with it on.

    python benchmarks/bench_stages.py --preset paper [--data STORE] [--steps 3] [--stage2-batch 32]

``--stage 2 --chunk N`` measures stage II twice at the same batch, unchunked and with gradient
caching in chunks of N subjects (``optim.chunk_size``), and prints the ratio of their seconds per
subject (the price of the extra forward pass; target ≤ 1.4) and of their peak memory on CUDA. On a
shared CPU run it with ``OMP_NUM_THREADS=1`` (with 2 threads on a loaded machine the chunks' many
small operations wait on the slower thread: 2.1–2.8× instead of 1.2×). On one 80 GB GPU (prepared,
not yet run):

    python benchmarks/bench_stages.py --preset paper --stage 2 --batch 16 --chunk 4 --steps 2   # ratio
    python benchmarks/bench_stages.py --preset paper --stage 2 --batch 256 --chunk 16 --steps 1 # paper batch

Without ``--data`` a synthetic 9 × 50 × 128 × 128 store of ``--subjects`` subjects is written
first (``benchmarks/_store.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks._store import synthetic_store  # noqa: E402
from kmtr.config import TrainConfig  # noqa: E402
from kmtr.data import prepare_batch  # noqa: E402
from kmtr.models.mae import count_parameters  # noqa: E402
from kmtr.pipeline import stage_config  # noqa: E402
from kmtr.stage3 import build_task_model, task_targets  # noqa: E402
from kmtr.train.gradcache import cached_step  # noqa: E402
from kmtr.train.runner import param_groups  # noqa: E402
from kmtr.train.stage1 import build_datasets, build_stage1_model, make_optimizer_groups, validate_config  # noqa: E402
from kmtr.train.stage2 import build_stage2_model  # noqa: E402

STAGES = [(1, ""), (2, ""), (3, "regression"), (3, "classification"), (3, "segmentation"), (3, "reconstruction")]


def build(cfg: TrainConfig, ds: Any) -> tuple[nn.Module, list[dict[str, Any]], int]:
    """(model, AdamW groups, patch tokens per subject × encoders run) for ``cfg``'s stage."""
    grid = validate_config(dataclasses.replace(cfg, stage=1, models="both"), ds.shape)
    tokens = grid.num_tokens
    if cfg.stage == 1:
        model = build_stage1_model(cfg, grid, ds.info.view_ids)
        return model, make_optimizer_groups(model, cfg), tokens * len(model.submodels())
    if cfg.stage == 2:
        model = build_stage2_model(cfg, ds.shape, ds.info.view_ids, None)
        return model, param_groups(model, cfg.optim.lr, cfg.optim.weight_decay), 2 * tokens
    model = build_task_model(cfg, ds.shape, ds.info.view_ids, task_targets(cfg, ds), None)
    return model, param_groups(model, cfg.optim.lr, cfg.optim.weight_decay), tokens


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg: TrainConfig, device: torch.device, steps: int, warmup: int, chunk: int = 0) -> dict[str, Any]:
    """Build the stage, time ``steps`` optimiser steps after ``warmup`` ones; peak memory in GiB.
    ``chunk`` > 0 (stage II): gradient caching in chunks of that many subjects."""
    ds, _ = build_datasets(cfg)
    if len(ds) < cfg.data.batch_size:
        raise SystemExit(f"stage {cfg.stage}{' ' + cfg.task if cfg.stage == 3 else ''}: the store has {len(ds)} training "
                         f"subjects, fewer than one batch of {cfg.data.batch_size} (use --subjects or a larger store)")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model, groups, tokens = build(cfg, ds)
    model.to(device).train()
    opt = torch.optim.AdamW(groups, betas=tuple(cfg.optim.betas))  # type: ignore[arg-type]
    params = [p for p in model.parameters() if p.requires_grad]

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if cfg.run.amp and device.type == "cuda" else nullcontext()

    bs = cfg.data.batch_size
    loader = DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
                        pin_memory=device.type == "cuda", persistent_workers=cfg.data.num_workers > 0)
    it = iter(loader)

    def next_batch() -> dict[str, torch.Tensor]:
        nonlocal it
        try:
            raw = next(it)
        except StopIteration:
            it = iter(loader)
            raw = next(it)
        return prepare_batch(raw, device)

    times, losses = [], []
    for i in range(warmup + steps):
        batch = next_batch()
        sync(device)
        t0 = time.perf_counter()
        if chunk:
            out, backward = cached_step(model, model, batch, chunk, autocast)
            loss = out["loss"]
        else:
            with autocast():
                loss = model(batch)["loss"]
            backward = loss.backward
        opt.zero_grad(set_to_none=True)
        backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
        opt.step()
        sync(device)
        losses.append(float(loss.detach().float()))
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            if len(times) % 10 == 0:  # a run cut short by a time limit still leaves its figures
                print(f"  {len(times)} timed steps: median {np.median(times):.3f} s/step, loss {losses[-1]:.4g}",
                      flush=True)
    del it, loader  # stop the persistent workers before the loader is timed on its own
    load_rate = loader_rate(ds, cfg.data.num_workers)
    step_s = float(np.median(times))
    out = {
        "params": count_parameters(model), "batch": bs, "step_s": step_s, "subjects_s": bs / step_s,
        "tokens_s": bs * tokens / step_s, "loader_subjects_s": load_rate,
        "finite": bool(np.all(np.isfinite(losses))), "loss_first": losses[0], "loss_last": losses[-1],
        "pool": cfg.heads.pool if cfg.stage == 3 else "",
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan"),
        "checkpointing": cfg.arch.grad_checkpoint, "chunk": chunk,
    }
    del model, opt
    return out


def loader_rate(ds: Any, workers: int, n: int = 24) -> float:
    """Subjects/s a fresh DataLoader with ``workers`` workers delivers over the first ``n`` subjects
    (worker start-up included: a lower bound)."""
    n = min(n, len(ds))
    t0 = time.perf_counter()
    for _ in itertools.islice(DataLoader(ds, batch_size=1, num_workers=workers), n):
        pass
    return n / max(time.perf_counter() - t0, 1e-9)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def time_interleaved(cfg: TrainConfig, device: torch.device, steps: int, warmup: int,
                     chunk: int) -> tuple[float, float]:
    """Median seconds of an optimiser step (one model, one batch) unchunked and in chunks of ``chunk``,
    the two alternating step by step (ABBA order) so that a shared machine's load weighs on both alike."""
    ds, _ = build_datasets(cfg)
    torch.manual_seed(0)
    model, groups, _ = build(cfg, ds)
    model.to(device).train()
    opt = torch.optim.AdamW(groups, betas=tuple(cfg.optim.betas))  # type: ignore[arg-type]
    params = [p for p in model.parameters() if p.requires_grad]
    batch = prepare_batch(next(iter(DataLoader(ds, batch_size=cfg.data.batch_size, shuffle=True))), device)

    def step(c: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        if c:
            _, backward = cached_step(model, model, batch, c)
        else:
            backward = model(batch)["loss"].backward
        opt.zero_grad(set_to_none=True)
        backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad)
        opt.step()
        sync(device)
        return time.perf_counter() - t0

    times: dict[int, list[float]] = {0: [], chunk: []}
    for i in range(warmup + steps):
        for c in ((0, chunk) if i % 2 == 0 else (chunk, 0)):
            t = step(c)
            if i >= warmup:
                times[c].append(t)
    return float(np.median(times[0])), float(np.median(times[chunk]))


def compare_chunked(cfg: TrainConfig, device: torch.device, args: argparse.Namespace,
                    label: str) -> list[dict[str, Any]]:
    """Stage II unchunked and in chunks of ``args.chunk`` at the same batch; prints the ratios (on CPU
    the two are timed interleaved, on CUDA one after the other, each with its own peak memory)."""
    if device.type != "cuda":
        plain_s, chunked_s = time_interleaved(cfg, device, args.steps, args.warmup, args.chunk)
        b = cfg.data.batch_size
        print(f"\nstage II batch {b}, interleaved steps: {plain_s / b:.3f} s/subject unchunked, {chunked_s / b:.3f} "
              f"s/subject in chunks of {args.chunk}: ratio chunked / unchunked = {chunked_s / plain_s:.2f} "
              "(target <= 1.4)", flush=True)
        return []
    res = []
    for chunk in (0, args.chunk):
        r = None
        try:
            r = measure(cfg, device, args.steps, args.warmup, chunk)
        except RuntimeError as exc:
            if not is_oom(exc):
                raise
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
        name = f"{label} chunk {chunk or 'off'}"
        if r is None:  # e.g. the paper's batch of 256 unchunked on one GPU
            print(f"{name}: batch {cfg.data.batch_size}: out of memory", flush=True)
            res.append({"stage": name, "batch": cfg.data.batch_size, "checkpointing": cfg.arch.grad_checkpoint,
                        "oom": True})
            continue
        print(f"{name}: {r}", flush=True)
        res.append({"stage": name, **r})
    plain, chunked = res
    if plain.get("oom") or chunked.get("oom"):
        return res
    per = [r["step_s"] / r["batch"] for r in res]
    print(f"\nstage II batch {plain['batch']}: {per[0]:.3f} s/subject unchunked, {per[1]:.3f} s/subject in chunks of "
          f"{args.chunk}: ratio chunked / unchunked = {per[1] / per[0]:.2f} (target <= 1.4)"
          + (f"; peak memory {chunked['peak_gib']:.1f} / {plain['peak_gib']:.1f} GiB = "
             f"{chunked['peak_gib'] / plain['peak_gib']:.2f}" if device.type == "cuda" else ""), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    ap.add_argument("--data", help="store (default: a synthetic 9 x 50 x 128 x 128 store)")
    ap.add_argument("--subjects", type=int, default=40, help="synthetic store size")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--stage2-batch", default="", help="stage II batch sizes to try instead of the preset's, e.g. 16,32")
    ap.add_argument("--stages", default="1,2,regression,classification,segmentation,reconstruction")
    ap.add_argument("--stage", help="one stage (1, 2 or a stage-III task) instead of --stages")
    ap.add_argument("--chunk", type=int, default=0, help="stage II: also measure gradient caching in chunks of N "
                    "subjects and print chunked ÷ unchunked seconds per subject")
    ap.add_argument("--batch", type=int, help="batch size of every measured stage (default: the preset's)")
    ap.add_argument("--workers", type=int, help="DataLoader workers (default: the preset's)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    data = args.data or synthetic_store(args.subjects, 50, 128)
    out_dir = tempfile.mkdtemp(prefix="kmtr_bench_stages_")
    wanted = {args.stage} if args.stage else set(args.stages.split(","))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"preset {args.preset}, store {data}, device {name}, torch {torch.__version__}", flush=True)
    rows = []
    for stage, task in STAGES:
        if str(stage) not in wanted and task not in wanted:
            continue
        batches = [int(b) for b in args.stage2_batch.split(",") if b] if stage == 2 and args.stage2_batch else [None]
        for batch in batches:
            overrides: dict[str, Any] = {"data.data": data, "data.val_split": "", "run.out_dir": out_dir,
                                         "run.progress": False, "run.tensorboard": False}
            if batch or args.batch:
                overrides["data.batch_size"] = batch or args.batch
            if task == "classification":
                overrides["heads.diseases"] = "all"  # every disease column of the store
            if args.workers is not None:
                overrides["data.num_workers"] = args.workers
            cfg = stage_config(args.preset, stage, task, overrides)
            label = f"{'I II III'.split()[stage - 1]}{' ' + task if task else ''}"
            if stage == 2 and args.chunk:
                rows += compare_chunked(cfg, device, args, label)
                continue
            for attempt in range(2):
                res = None
                try:
                    res = measure(cfg, device, args.steps, args.warmup)
                except RuntimeError as exc:
                    if not is_oom(exc):
                        raise
                if device.type == "cuda":  # after the except block: the traceback's tensors are gone
                    gc.collect()
                    torch.cuda.empty_cache()
                if res is not None:
                    rows.append({"stage": label, **res})
                    print(f"{label}: {res}", flush=True)
                    break
                rows.append({"stage": label, "batch": cfg.data.batch_size, "checkpointing": cfg.arch.grad_checkpoint,
                             "oom": True})
                print(f"{label}: batch {cfg.data.batch_size}, checkpointing {cfg.arch.grad_checkpoint}: out of memory",
                      flush=True)
                if attempt == 1 or cfg.arch.grad_checkpoint:
                    break
                cfg.arch.grad_checkpoint = True
    print("\n| stage | batch | grad ckpt | parameters | step (s) | subjects/s | tokens/s | loader subjects/s "
          "| loader ÷ model | peak memory (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("oom"):
            print(f"| {r['stage']} | {r['batch']} | {r['checkpointing']} | | out of memory | | | | | |")
            continue
        print(f"| {r['stage']} | {r['batch']} | {r['checkpointing']} | {r['params'] / 1e6:.1f} M | {r['step_s']:.3f} "
              f"| {r['subjects_s']:.2f} | {r['tokens_s']:,.0f} | {r['loader_subjects_s']:.1f} "
              f"| {r['loader_subjects_s'] / r['subjects_s']:.2f} | {r['peak_gib']:.1f} |")


if __name__ == "__main__":
    main()
