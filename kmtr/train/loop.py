"""A plain-PyTorch training loop: AdamW-ready, warm-up + cosine, bf16 autocast on CUDA, gradient
clipping per parameter group, DDP, rank-0 logging/checkpointing, exact resume, NaN guard.

The model's ``forward(batch)`` returns a dict of scalar tensors with at least ``"loss"``.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from kmtr.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from kmtr.train.distributed import DistInfo, all_gather_objects, all_true
from kmtr.train.gradcache import cached_step, chunk_from_memory, measure_chunk_memory
from kmtr.train.metrics import MetricLogger

__all__ = ["NonFiniteLossError", "ResumableSampler", "WarmupCosine", "LoopConfig", "Trainer"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/Inf; training stopped, the last good checkpoint is kept."""


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (``skip`` samples of this rank)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


class WarmupCosine:
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0) -> None:
        self.warmup, self.total, self.min_ratio = int(warmup), max(int(total), 1), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class LoopConfig:
    """What the loop needs besides model, data and optimiser."""

    epochs: int
    run_dir: Path
    clip_grad: float = 1.0
    amp: bool = True
    log_every: int = 10
    ckpt_every_steps: int = 0
    png_every_epochs: int = 1
    max_steps: int | None = None
    progress: bool = True
    tensorboard: bool = True
    config: dict[str, Any] | None = None  # saved inside checkpoints
    chunk_size: int | str = 0  # gradient caching in chunks of this many subjects (kmtr.train.gradcache); "auto"


class Trainer:
    """Runs epochs of ``model`` on ``loader``; see module docstring.

    Args:
        model: the bare model (wrapped in DDP here when distributed).
        optimizer, scheduler: the scheduler steps once per optimiser step.
        loader: DataLoader whose sampler is a :class:`ResumableSampler`.
        batch_fn: ``(batch, device) → batch`` run on the training device (e.g. ``prepare_batch``).
        dist_info: this process's rank/device.
        cfg: loop settings.
        clip_groups: parameter lists clipped separately (default: all parameters together).
        tokens_per_sample: for the tokens/s throughput figure.
        val_loader: optional validation DataLoader (mean losses logged each epoch).
        on_epoch_end: ``(epoch, model, batch)`` called on rank 0 every ``png_every_epochs`` epochs.
        val_metrics: ``model → {name: value}`` run on rank 0 after each epoch's validation (e.g.
            retrieval accuracy over the whole validation split), logged in the ``val`` phase.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        loader: DataLoader,
        batch_fn: Callable[[dict[str, torch.Tensor], torch.device], dict[str, torch.Tensor]],
        dist_info: DistInfo,
        cfg: LoopConfig,
        clip_groups: list[list[nn.Parameter]] | None = None,
        tokens_per_sample: int = 0,
        val_loader: DataLoader | None = None,
        on_epoch_end: Callable[[int, nn.Module, dict[str, torch.Tensor]], None] | None = None,
        val_metrics: Callable[[nn.Module], dict[str, float]] | None = None,
    ) -> None:
        self.model = model
        self.ddp = DistributedDataParallel(model) if dist_info.distributed else None
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loader, self.val_loader, self.batch_fn = loader, val_loader, batch_fn
        self.dist, self.cfg = dist_info, cfg
        self.clip_groups = clip_groups or [list(model.parameters())]
        self.tokens_per_sample = tokens_per_sample
        self.on_epoch_end = on_epoch_end
        self.val_metrics = val_metrics
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.ckpt_path = Path(cfg.run_dir) / "last.pt"
        self.logger = MetricLogger(cfg.run_dir, cfg.tensorboard) if dist_info.is_main else None
        sampler = loader.sampler
        if not isinstance(sampler, ResumableSampler):
            raise TypeError("the DataLoader's sampler must be a kmtr ResumableSampler")
        self.sampler = sampler
        self.chunk_size = cfg.chunk_size

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "world_size": self.dist.world_size,
            "config": self.cfg.config or {},
        }

    def save(self) -> None:
        """Collective: gathers every rank's RNG state, rank 0 writes ``last.pt`` atomically."""
        rngs = all_gather_objects(rng_state(), self.dist)
        if self.dist.is_main:
            save_checkpoint({**self.state_dict(), "rng": rngs}, self.ckpt_path)

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore everything from ``path`` (default ``<run>/last.pt``); False when there is none."""
        path = Path(path) if path else self.ckpt_path
        if not path.exists():
            return False
        # RNG states must stay CPU tensors; load_state_dict moves the rest to the right device
        state = load_checkpoint(path, map_location="cpu")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        rngs = state.get("rng") or []
        if state.get("world_size") == self.dist.world_size and len(rngs) > self.dist.rank:
            set_rng_state(rngs[self.dist.rank])
        return True

    # -- steps -------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        if self.cfg.amp and self.dist.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        net = self.ddp or self.model
        net.train()
        if self.chunk_size == "auto":
            self.chunk_size = self._auto_chunk_size(net, batch)
        rows = int(batch["kspace"].shape[0]) if "kspace" in batch else 0
        if self.chunk_size and 0 < int(self.chunk_size) < rows:
            out, backward = cached_step(self.model, net, batch, int(self.chunk_size), self._autocast)
        else:
            with self._autocast():
                out = net(batch)
            backward = out["loss"].backward
        loss = out["loss"]
        if not all_true(bool(torch.isfinite(loss.detach()).item()), self.dist):
            raise NonFiniteLossError(
                f"non-finite loss ({loss.item()}) at step {self.global_step + 1} (epoch {self.epoch}); "
                "stopped before the update; last good checkpoint: "
                f"{self.ckpt_path if self.ckpt_path.exists() else 'none yet'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        backward()
        metrics = {k: float(v.detach().float()) for k, v in out.items() if torch.is_tensor(v) and v.ndim == 0}
        if self.cfg.clip_grad > 0:
            for i, group in enumerate(self.clip_groups):
                norm = torch.nn.utils.clip_grad_norm_(group, self.cfg.clip_grad)
                metrics[f"grad_norm_{i}"] = float(norm)
        self.optimizer.step()
        self.scheduler.step()
        return metrics

    def _auto_chunk_size(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> int:
        """``chunk_size = auto``: the largest chunk whose forward + backward fits in the device's free
        memory (probed on this first batch; AdamW's state, not yet allocated, is reserved); the
        smallest over processes. Printed once."""
        dev = self.dist.device
        if dev.type != "cuda":
            raise RuntimeError("chunk_size 'auto' needs a CUDA device")
        rows = int(batch["kspace"].shape[0])
        per_subject, overhead = measure_chunk_memory(net, batch, dev, self._autocast)
        self.optimizer.zero_grad(set_to_none=True)
        free, total = torch.cuda.mem_get_info(dev)
        free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        has_state = any(len(s) for s in self.optimizer.state.values())
        params = sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)
        reserve = params * (1 if has_state else 3)  # gradients (+ AdamW's two moments before the first step)
        chunk = min(all_gather_objects(chunk_from_memory(free, total, per_subject, overhead, reserve, rows),
                                       self.dist))
        if self.dist.is_main:
            print(f"chunk_size auto: {chunk} subjects per chunk ({per_subject / 2**30:.2f} GiB per subject, "
                  f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB)", flush=True)
        return chunk

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean scalar losses over the validation loader (RNG forked: training stream unchanged)."""
        if self.val_loader is None:
            return {}
        self.model.eval()
        sums: dict[str, float] = {}
        n = 0
        devices = [self.dist.device] if self.dist.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for batch in self.val_loader:
                with self._autocast():
                    out = self.model(self.batch_fn(batch, self.dist.device))
                for k, v in out.items():
                    if torch.is_tensor(v) and v.ndim == 0:
                        sums[k] = sums.get(k, 0.0) + float(v.float())
                n += 1
            means = {k: v / max(n, 1) for k, v in sums.items()}
            if self.val_metrics is not None:
                means.update(self.val_metrics(self.model))
        self.model.train()
        return means

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train until ``epochs`` (or ``max_steps``); returns the last metrics and counters."""
        from tqdm import tqdm

        last: dict[str, float] = {}
        history: list[dict[str, float]] = []
        bs = self.loader.batch_size or 1
        show = self.dist.is_main and self.cfg.progress
        dataset = self.loader.dataset
        for epoch in range(self.epoch, self.cfg.epochs):
            self.epoch = epoch
            self.sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            self.sampler.skip = self.step_in_epoch * bs
            bar = tqdm(total=len(self.loader) + self.step_in_epoch, initial=self.step_in_epoch,
                       desc=f"epoch {epoch}", disable=not show, dynamic_ncols=True, leave=False)
            t0, seen = time.perf_counter(), 0
            first_batch: dict[str, torch.Tensor] | None = None
            for raw in self.loader:
                batch = self.batch_fn(raw, self.dist.device)
                if first_batch is None:
                    first_batch = raw
                last = self._train_step(batch)
                self.global_step += 1
                self.step_in_epoch += 1
                seen += bs * self.dist.world_size
                dt = max(time.perf_counter() - t0, 1e-9)
                last["samples_per_s"] = seen / dt
                last["tokens_per_s"] = seen * self.tokens_per_sample / dt
                last["lr"] = self.scheduler.get_last_lr()[0]
                history.append(last)
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4g}", tok_s=f"{last['tokens_per_s']:.3g}")
                if self.logger and self.global_step % self.cfg.log_every == 0:
                    self.logger.log(self.global_step, epoch, "train", last)
                if self.cfg.ckpt_every_steps and self.global_step % self.cfg.ckpt_every_steps == 0:
                    self.save()
                if self.cfg.max_steps is not None and self.global_step >= self.cfg.max_steps:
                    bar.close()
                    self.save()
                    return self._summary(last, history)
            bar.close()
            self.epoch, self.step_in_epoch = epoch + 1, 0
            val = self.validate()
            if self.logger:
                self.logger.log(self.global_step, epoch, "train", last)
                if val:
                    self.logger.log(self.global_step, epoch, "val", val)
            if show:
                msg = f"epoch {epoch}: step {self.global_step} loss {last.get('loss', float('nan')):.4g}"
                msg += f" ({last.get('tokens_per_s', 0):.3g} tokens/s)"
                if val:
                    msg += f" val loss {val['loss']:.4g}"
                print(msg, flush=True)
            self.save()
            if (self.on_epoch_end and self.dist.is_main and first_batch is not None
                    and self.cfg.png_every_epochs and (epoch + 1) % self.cfg.png_every_epochs == 0):
                self.on_epoch_end(epoch, self.model, first_batch)
        return self._summary(last, history)

    def _summary(self, last: dict[str, float], history: list[dict[str, float]]) -> dict[str, Any]:
        if self.logger:
            self.logger.close()
        return {"last": last, "history": history, "global_step": self.global_step, "epoch": self.epoch}
