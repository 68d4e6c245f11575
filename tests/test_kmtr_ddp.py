"""A 2-process gloo DDP stage-I run on CPU (torch.multiprocessing, spawn start method)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import torch
from ddp_ranks import free_port, run_ranks
from kmtr_fixtures import store  # noqa: F401

torch.set_num_threads(1)

#: a one-block model on 5 frames: fast enough for two processes on two cores
TINY_MODEL = {"data.frames": "5", "arch.patch": "5,8,8", "arch.width": "16", "arch.depth": "1", "arch.heads": "2",
              "arch.dec_width": "16", "arch.dec_depth": "1", "arch.dec_heads": "2"}


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    from kmtr.config import apply_overrides, preset
    from kmtr.train.stage1 import train_stage1

    cfg = preset("tiny")
    apply_overrides(cfg, {
        "data.data": data, "data.num_workers": "0", "data.batch_size": "1", **TINY_MODEL, "optim.epochs": "2",
        "run.out_dir": out, "run.name": "ddp", "run.progress": "false", "run.png_every_epochs": "0",
        "run.tensorboard": "false", "data.val_split": "none",
    })
    summary = train_stage1(cfg, resume=False)
    torch.save({"state": summary["model"].state_dict(), "steps": summary["global_step"]}, Path(out) / f"rank{rank}.pt")


def test_two_process_gloo_ddp(store, tmp_path):  # noqa: F811
    run_ranks(_worker, (2, free_port(), store, str(tmp_path)))
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["steps"] == r1["steps"] == 4  # 4 train subjects / (2 ranks x batch 1) x 2 epochs
    for key, value in r0["state"].items():
        assert torch.allclose(value, r1["state"][key], atol=1e-6), key  # DDP keeps the replicas in sync
    ckpt = torch.load(tmp_path / "ddp" / "stage1" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2


def _tiny_stage2(data: str):
    from kmtr.config import apply_overrides, preset
    from kmtr.data import KSpaceDataset
    from kmtr.train.stage2 import build_stage2_model

    cfg = preset("tiny", 2)
    apply_overrides(cfg, {"data.data": data, **TINY_MODEL, "heads.proj_dim": "8"})
    ds = KSpaceDataset(data, "train", "vista_r4", 5)
    torch.manual_seed(0)
    return build_stage2_model(cfg, ds.shape, ds.info.view_ids, None), ds.shape


def _global_batch(shape: tuple[int, int, int, int], n: int = 6) -> dict[str, torch.Tensor]:
    from kmtr.fft import ifft2c

    g = torch.Generator().manual_seed(1)
    k = torch.complex(torch.randn(n, *shape, generator=g), torch.randn(n, *shape, generator=g))
    mask = torch.rand(n, shape[0], shape[1], shape[3], generator=g) < 0.5
    return {"kspace": k, "mask": mask, "image": ifft2c(k)}


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _stage2_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    torch.set_num_threads(1)
    # a collective that waits longer than this raises in the rank instead of hanging it
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                         timeout=timedelta(seconds=120))
    from torch.nn.parallel import DistributedDataParallel

    model, shape = _tiny_stage2(data)
    batch = _global_batch(shape)
    local = {k: v[rank * 3:(rank + 1) * 3] for k, v in batch.items()}  # this rank's 3 of the 6 subjects
    ddp = DistributedDataParallel(model)
    out_ = ddp(local)
    out_["loss"].backward()
    torch.save({"loss": out_["loss"].detach(), "grads": _grads(model)}, Path(out) / f"s2rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_stage2_ddp_contrasts_the_global_batch(store, tmp_path):  # noqa: F811
    """Two ranks with 3 subjects each give the loss and gradient of one process with all 6."""
    run_ranks(_stage2_worker, (2, free_port(), store, str(tmp_path)))
    model, shape = _tiny_stage2(store)
    out = model(_global_batch(shape))
    out["loss"].backward()
    want = _grads(model)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"s2rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], out["loss"].detach(), rtol=1e-5, atol=1e-6)
        assert got["grads"].keys() == want.keys()
        for name, g in want.items():
            torch.testing.assert_close(got["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
    # each rank's share alone (no gathering) gives another loss: the test can tell the two apart
    model.zero_grad()
    half = model({k: v[:3] for k, v in _global_batch(shape).items()})["loss"]
    assert not torch.isclose(half, out["loss"], rtol=1e-3)
