"""A 2-process gloo DDP stage-I run on CPU (torch.multiprocessing, fork start method)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from kmtr_fixtures import store  # noqa: F401

torch.set_num_threads(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from kmtr.config import apply_overrides, preset
    from kmtr.train.stage1 import train_stage1

    cfg = preset("tiny")
    apply_overrides(cfg, {
        "data.data": data, "data.frames": "5", "data.num_workers": "0", "data.batch_size": "1",
        "arch.patch": "5,8,8", "arch.width": "16", "arch.depth": "1", "arch.heads": "2",
        "arch.dec_width": "16", "arch.dec_depth": "1", "arch.dec_heads": "2", "optim.epochs": "2",
        "run.out_dir": out, "run.name": "ddp", "run.progress": "false", "run.png_every_epochs": "0",
        "run.tensorboard": "false", "data.val_split": "none",
    })
    summary = train_stage1(cfg, resume=False)
    torch.save({"state": summary["model"].state_dict(), "steps": summary["global_step"]}, Path(out) / f"rank{rank}.pt")


def test_two_process_gloo_ddp(store, tmp_path):  # noqa: F811
    # fork: the children inherit the imported torch (spawn would re-import it twice on 2 shared cores)
    mp.start_processes(_worker, args=(2, _free_port(), store, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == 4  # 4 train subjects / (2 ranks x batch 1) x 2 epochs
    for key, value in r0["state"].items():
        assert torch.allclose(value, r1["state"][key], atol=1e-6), key  # DDP keeps the replicas in sync
    ckpt = torch.load(tmp_path / "ddp" / "stage1" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
