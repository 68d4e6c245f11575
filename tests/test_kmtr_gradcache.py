"""Gradient caching for stage II (optim.chunk_size): the same loss and gradient as the whole batch
(1 and 2 gloo processes, float64), dropout reproduced, bf16 autocast, the Trainer, peak memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_ranks import free_port, run_ranks
from torch import nn

from kmtr.config import apply_overrides, preset
from kmtr.fft import ifft2c
from kmtr.train import gradcache
from kmtr.train.gradcache import cached_step, chunk_from_memory, chunk_slices
from kmtr.train.stage2 import build_stage2_model

torch.set_num_threads(1)

SHAPE = (9, 5, 32, 32)  # (S, T', H, W)
VIEWS = (0, 0, 0, 0, 0, 0, 1, 1, 1)
MODEL = {"data.frames": "5", "arch.patch": "5,8,8", "arch.width": "16", "arch.depth": "2", "arch.heads": "2",
         "arch.dec_width": "16", "arch.dec_depth": "1", "arch.dec_heads": "2", "heads.proj_dim": "8"}
#: float64 comparisons: chunked and unchunked differ only in the order of sums
RTOL, ATOL = 1e-9, 1e-12


def stage2_model(dtype: torch.dtype = torch.float64, **extra: str) -> nn.Module:
    cfg = preset("tiny", 2)
    apply_overrides(cfg, {**MODEL, **extra})
    torch.manual_seed(0)
    return build_stage2_model(cfg, SHAPE, VIEWS, None).to(dtype).train()


def make_batch(n: int, dtype: torch.dtype = torch.float64, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = torch.complex(torch.randn(n, *SHAPE, generator=g, dtype=dtype),
                      torch.randn(n, *SHAPE, generator=g, dtype=dtype))
    mask = torch.rand(n, SHAPE[0], SHAPE[1], SHAPE[3], generator=g) < 0.4
    mask[..., SHAPE[3] // 2] = True
    return {"kspace": k, "mask": mask, "image": ifft2c(k)}


def grads(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_grads(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rtol: float = RTOL,
                      atol: float = ATOL) -> None:
    assert got.keys() == want.keys() and len(want) > 10
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=rtol, atol=atol, msg=name)


def unchunked(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(batch)["loss"]
    loss.backward()
    return loss.detach(), grads(model)


def chunked(model: nn.Module, batch: dict[str, torch.Tensor], chunk: int, net: nn.Module | None = None):
    model.zero_grad(set_to_none=True)
    out, backward = cached_step(model, net or model, batch, chunk)
    backward()
    return out["loss"].detach(), grads(model)


def test_chunk_slices_cover_the_batch():
    assert chunk_slices(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]
    assert chunk_slices(4, 8) == [slice(0, 4)]
    with pytest.raises(ValueError):
        chunk_slices(4, 0)


@pytest.mark.parametrize("chunk,checkpointing", [(1, False), (4, False), (2, True)])
def test_chunked_loss_and_gradients_equal_the_whole_batch(chunk, checkpointing):
    """float64, 6 subjects in chunks of 1, 4 (uneven: 4 + 2) and 2 with gradient checkpointing."""
    model = stage2_model(**{"arch.grad_checkpoint": str(checkpointing).lower()})
    batch = make_batch(6)
    want_loss, want = unchunked(model, batch)
    state = torch.get_rng_state()
    got_loss, got = chunked(model, batch, chunk)
    torch.testing.assert_close(got_loss, want_loss, rtol=RTOL, atol=ATOL)
    assert_same_grads(got, want)
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn: the RNG ends where it started
    # the comparison can tell a wrong gradient: one chunk's share alone differs
    model.zero_grad(set_to_none=True)
    part = model({k: v[:3] for k, v in batch.items()})["loss"]
    assert not torch.isclose(part.detach(), want_loss, rtol=1e-3)


class DropoutEmbedder(nn.Module):
    """A toy contrastive model whose forward draws random numbers (dropout) per subject."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(12, 8).double(), nn.Linear(12, 8).double()
        self.drop = nn.Dropout(0.5)

    def embed(self, batch):
        return self.a(self.drop(batch["x"])), self.b(self.drop(batch["y"]))

    def contrast(self, z_i, z_k):
        from kmtr.losses import contrastive_loss

        return {"loss": contrastive_loss(z_i, z_k)}

    def forward(self, batch, embed_only=False):
        z = self.embed(batch)
        return z if embed_only else self.contrast(*z)


def test_random_draws_of_the_forward_are_replayed(monkeypatch):
    """Pass 3 restores each chunk's RNG state: its dropout masks are those of pass 1, so the gradient
    equals that of the same chunked forward run once with a graph; without the restore it does not."""
    g = torch.Generator().manual_seed(3)
    batch = {"x": torch.randn(8, 12, generator=g, dtype=torch.float64),
             "y": torch.randn(8, 12, generator=g, dtype=torch.float64)}
    model = DropoutEmbedder()

    def reference() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(7)
        model.zero_grad(set_to_none=True)
        parts = [model.embed({k: v[s] for k, v in batch.items()}) for s in chunk_slices(8, 3)]
        loss = model.contrast(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))["loss"]
        loss.backward()
        return loss.detach(), grads(model)

    want_loss, want = reference()
    after_reference = torch.get_rng_state()
    torch.manual_seed(7)
    got_loss, got = chunked(model, batch, 3)
    torch.testing.assert_close(got_loss, want_loss, rtol=RTOL, atol=ATOL)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=ATOL)
    assert torch.equal(torch.get_rng_state(), after_reference)  # the stream goes on as after one pass
    monkeypatch.setattr(gradcache.RngState, "restore", lambda self: None)
    torch.manual_seed(7)
    _, wrong = chunked(model, batch, 3)
    assert not all(torch.allclose(wrong[n], want[n]) for n in want)


def test_bf16_autocast_composes():
    """Under bf16 autocast both passes run in bf16; the chunked gradient matches the unchunked one to
    bf16 precision (relative error of each parameter's gradient < 2 %)."""
    model = stage2_model(torch.float32)
    batch = make_batch(6, torch.float32)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    model.zero_grad(set_to_none=True)
    with autocast():
        want_loss = model(batch)["loss"]
    want_loss.backward()
    want = grads(model)
    model.zero_grad(set_to_none=True)
    out, backward = cached_step(model, model, batch, 2, autocast)
    backward()
    torch.testing.assert_close(out["loss"].detach(), want_loss.detach(), rtol=2e-2, atol=1e-3)
    for name, g in grads(model).items():
        assert (g - want[name]).norm() <= 2e-2 * want[name].norm() + 1e-6, name


def test_chunk_from_memory():
    gib = 2.0**30
    # 79 GiB card, 60 free, 2.4 GiB per subject, 1 GiB fixed, 2 GiB to reserve, 10 % headroom:
    # (60 - 7.9 - 2 - 1) / 2.4 = 20.5
    assert chunk_from_memory(60 * gib, 79 * gib, 2.4 * gib, 1 * gib, 2 * gib, 256) == 20
    assert chunk_from_memory(60 * gib, 79 * gib, 2.4 * gib, 1 * gib, 2 * gib, 16) == 16
    assert chunk_from_memory(1 * gib, 79 * gib, 2.4 * gib, 1 * gib, 2 * gib, 256) == 1


def test_chunk_setting_is_checked(tmp_path):
    from kmtr.train.runner import ConfigError
    from kmtr.train.stage2 import chunk_setting

    cfg = preset("tiny", 2)
    assert chunk_setting(cfg) == 0 and preset("paper", 2).optim.chunk_size == 16
    for bad in ("-1", "eight", "2.5"):
        apply_overrides(cfg, {"optim.chunk_size": bad})
        with pytest.raises(ConfigError, match="chunk_size"):
            chunk_setting(cfg)
    apply_overrides(cfg, {"optim.chunk_size": "auto", "run.device": "cpu"})
    with pytest.raises(ConfigError, match="CUDA"):
        chunk_setting(cfg)
    apply_overrides(cfg, {"optim.chunk_size": "8"})
    assert chunk_setting(cfg) == 8


def test_stage2_training_with_chunks_equals_without(tmp_path):
    """Three optimiser steps of the real stage-II loop (fit_model, batch 4) with optim.chunk_size 2
    end with the weights of the unchunked run (float32: rtol 1e-4)."""
    from kmtr_fixtures import write_store

    from kmtr.pipeline import stage_config, train_one

    store = write_store(tmp_path / "s.zarr", n=10, t=5, status=[1] * 10, split=[0] * 8 + [1, 2])
    common = {"data.data": store, "run.out_dir": str(tmp_path), "data.num_workers": "0", "run.progress": "false",
              "run.tensorboard": "false", "run.png_every_epochs": "0", "data.val_split": "none", **MODEL,
              "optim.epochs": "2", "data.batch_size": "4", "run.max_steps": "3"}
    # stage I's k-space learning rate pinned (the tiny preset's before it became 1e-3): the comparison below is
    # calibrated on the encoder this one step gives; from others AdamW turns the float32 noise of near-zero
    # gradients into steps of +-lr in a few attention weights
    train_one(stage_config("tiny", 1, "", {**common, "run.name": "s1", "run.max_steps": "1", "optim.lr_kspace": "1e-2"}))
    init = str(tmp_path / "s1" / "stage1")
    plain = train_one(stage_config("tiny", 2, "", {**common, "run.name": "plain", "init": init}))
    chunk = train_one(stage_config("tiny", 2, "", {**common, "run.name": "chunk", "init": init,
                                                   "optim.chunk_size": "2"}))
    assert plain["global_step"] == chunk["global_step"] == 3
    assert plain["last"]["loss"] == pytest.approx(chunk["last"]["loss"], rel=1e-5)
    a, b = plain["model"].state_dict(), chunk["model"].state_dict()
    width = int(MODEL["arch.width"])
    for key in a:
        if key.endswith("attn.qkv.bias"):
            # the key bias's gradient is exactly 0 (softmax ignores a shift shared by all keys): AdamW turns
            # the float32 noise of both runs into steps of ±lr, so only the query and value biases are compared
            query_value = torch.arange(3 * width) // width != 1
            a[key], b[key] = a[key][query_value], b[key][query_value]
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6, msg=key)


# -- two gloo processes ---------------------------------------------------------------------------

def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    from torch.nn.parallel import DistributedDataParallel

    model = stage2_model()
    local = {k: v[rank * 3:(rank + 1) * 3] for k, v in make_batch(6).items()}  # this rank's 3 of 6 subjects
    ddp = DistributedDataParallel(model)
    loss, g = chunked(model, local, 2, net=ddp)  # chunks 2 + 1, gathered loss, one all-reduce
    torch.save({"loss": loss, "grads": g}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_ddp_chunks_equal_one_process_whole_batch(tmp_path):
    run_ranks(_ddp_worker, (2, free_port(), str(tmp_path)), deadline_s=240.0)
    want_loss, want = unchunked(stage2_model(), make_batch(6))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["loss"], want_loss, rtol=RTOL, atol=ATOL)
        assert_same_grads(got["grads"], want)


# -- peak memory ----------------------------------------------------------------------------------

_MEMORY_SCRIPT = r"""
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_kmtr_gradcache import make_batch, stage2_model
from kmtr.train.gradcache import cached_step

def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

batch, chunk = int(sys.argv[1]), int(sys.argv[2])
model = stage2_model(torch.float32, **{{"arch.width": "256", "arch.heads": "4"}})
before_batch = kib("VmRSS:")
b = make_batch(batch, torch.float32)
with open("/proc/self/clear_refs", "w") as fh:  # reset the peak: the inputs' construction is not the step
    fh.write("5")
before_step = kib("VmRSS:")
if chunk:
    out, backward = cached_step(model, model, b, chunk)
    backward()
else:
    model(b)["loss"].backward()
peak = kib("VmHWM:")
print(peak - before_step, peak - before_batch)
"""


def _peak_bytes(batch: int, chunk: int) -> tuple[int, int]:
    """(peak RSS of the step above model + batch, peak above the model alone), in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed buffers leave RSS
    code = _MEMORY_SCRIPT.format(tests=str(Path(__file__).parent))
    res = subprocess.run([sys.executable, "-c", code, str(batch), str(chunk)], capture_output=True, text=True,
                         env=env, timeout=300, cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    step, total = res.stdout.split()[-2:]
    return int(step), int(total)


@pytest.mark.slow
def test_peak_memory_of_batch_64_in_chunks_of_8_is_that_of_batch_8():
    """Peak RSS (fresh process each) of one forward + backward: batch 64 in chunks of 8 needs at most
    1.5x the step memory of batch 8 (activations, gradients, loss; the batch's own inputs, 8x larger,
    are counted separately); batch 24 unchunked needs about 3x more."""
    small, small_total = _peak_bytes(8, 0)
    big_chunked, big_chunked_total = _peak_bytes(64, 8)
    big, _ = _peak_bytes(24, 0)
    print(f"step peak MiB: batch 8 {small / 2**20:.0f}, batch 64 chunk 8 {big_chunked / 2**20:.0f}, "
          f"batch 24 {big / 2**20:.0f}; with inputs: {small_total / 2**20:.0f} vs {big_chunked_total / 2**20:.0f}")
    assert big > 2 * small  # the measure sees activation memory (batch 24 unchunked: about 3x)
    assert big_chunked <= 1.5 * small
