"""Training throughput (tokens/s) of the ``tiny`` preset on CPU.

Reports (1) the model step alone (forward + backward + AdamW on a batch already in memory) and
(2) the end-to-end loop (DataLoader, batch transform, step) via ``train_stage1``. Tokens are the
patch tokens of a subject (before masking) times the number of models trained, per second.

    python benchmarks/bench_train_cpu.py [--data STORE] [--steps 20] [--model both]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks._store import synthetic_store  # noqa: E402
from kmtr.config import apply_overrides, preset  # noqa: E402
from kmtr.data import prepare_batch  # noqa: E402
from kmtr.models.mae import count_parameters  # noqa: E402
from kmtr.train.stage1 import (  # noqa: E402
    build_datasets, build_stage1_model, make_optimizer_groups, train_stage1, validate_config,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="store (default: a synthetic 9 x 50 x 128 x 128 store)")
    ap.add_argument("--subjects", type=int, default=12)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--model", default="both", choices=["image", "kspace", "both"])
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    data = args.data or synthetic_store(args.subjects, 50, 128)
    cfg = preset("tiny")
    out = tempfile.mkdtemp(prefix="kmtr_bench_runs_")
    apply_overrides(cfg, {"data.data": data, "models": args.model, "data.val_split": "none",
                          "data.num_workers": args.workers, "run.out_dir": out, "run.progress": False,
                          "run.png_every_epochs": 0, "run.tensorboard": False,
                          "data.train_split": "all"})
    train_ds, _ = build_datasets(cfg)
    grid = validate_config(cfg, train_ds.shape)
    model = build_stage1_model(cfg, grid, train_ds.info.view_ids)
    opt = torch.optim.AdamW(make_optimizer_groups(model, cfg))
    n_models = len(model.submodels())
    print(f"tiny preset, models={args.model}: {count_parameters(model):,} parameters, {grid.num_tokens} tokens/subject "
          f"x {n_models} model(s), batch {cfg.data.batch_size}, {threads} thread(s), device cpu (no GPU here)",
          flush=True)
    batch = prepare_batch(next(iter(DataLoader(train_ds, batch_size=cfg.data.batch_size))), "cpu")
    times = []
    for i in range(args.steps + 3):
        t0 = time.perf_counter()
        loss = model(batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    tok = cfg.data.batch_size * grid.num_tokens * n_models
    print(f"model step: {step_s * 1e3:.1f} ms/step (median of {len(times)}), {tok / step_s:,.0f} tokens/s, "
          f"{cfg.data.batch_size / step_s:.2f} subjects/s", flush=True)
    apply_overrides(cfg, {"run.max_steps": args.steps, "optim.epochs": 1000})
    t0 = time.perf_counter()
    summary = train_stage1(cfg)
    wall = time.perf_counter() - t0
    hist = summary["history"]
    steady = hist[len(hist) // 2:]
    print(f"end-to-end loop: {summary['global_step']} steps in {wall:.1f} s (incl. start-up); "
          f"last {len(steady)} steps {np.mean([h['tokens_per_s'] for h in steady]):,.0f} tokens/s as logged",
          flush=True)


if __name__ == "__main__":
    main()
