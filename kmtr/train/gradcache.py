"""Gradient caching for contrastive batches larger than memory (Gao et al., "Scaling Deep
Contrastive Learning Batch Size under Memory Limited Setup", 2021).

A contrastive loss couples the subjects of a batch only through their embeddings, so its exact
gradient is computed in two passes over chunks of the batch:

1. embed every chunk **without** an autograd graph (memory: one chunk's forward), saving the CPU
   and CUDA random-number states before each chunk;
2. compute the loss on all embeddings (gathered across DDP processes as the unchunked forward
   does) and its gradient with respect to each embedding (``loss.backward()`` onto detached
   leaf embeddings);
3. re-run each chunk **with** a graph, its random-number state restored (dropout, random
   masking and anything else drawn in the forward match pass 1), and back-propagate its slice of
   the cached embedding gradient into the parameters, where the chunks' gradients accumulate.

Under DDP every chunk but the last runs inside ``no_sync()``, so the gradient all-reduce happens
once per step, on the accumulated gradient: the result equals the unchunked DDP step. bf16
autocast applies to both forward passes; gradient checkpointing inside the model composes (it
recomputes within pass 3 with its own RNG bookkeeping). Peak activation memory is that of one
chunk instead of the whole batch, for the price of one extra forward pass.

The model must provide ``embed(batch) -> tuple[Tensor, ...]`` ((B, E) embeddings, no cross-subject
interaction), ``contrast(*embeddings) -> dict`` (the loss and scalar metrics; it gathers across
processes itself) and accept ``forward(batch, embed_only=True)`` returning ``embed(batch)`` (so
that pass 3 can run through the DDP wrapper).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["RngState", "chunk_slices", "take_rows", "cached_step", "chunk_from_memory", "measure_chunk_memory"]


class RngState:
    """The torch CPU generator state and, on CUDA, the current state of ``device``'s generator."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def chunk_slices(n: int, chunk: int) -> list[slice]:
    """Consecutive slices of at most ``chunk`` rows covering ``range(n)``."""
    if chunk < 1:
        raise ValueError(f"chunk size must be >= 1, not {chunk}")
    return [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]


def take_rows(batch: dict[str, Any], rows: slice, n: int) -> dict[str, Any]:
    """The subjects ``rows`` of a batch: every tensor with ``n`` rows is sliced, the rest kept."""
    return {k: v[rows] if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == n else v for k, v in batch.items()}


def _batch_rows(batch: dict[str, Any]) -> int:
    sizes = {int(v.shape[0]) for v in batch.values() if torch.is_tensor(v) and v.ndim > 0}
    if len(sizes) != 1:
        raise ValueError(f"batch tensors disagree on the number of subjects: {sorted(sizes)}")
    return sizes.pop()


def cached_step(
    model: nn.Module,
    net: nn.Module,
    batch: dict[str, Any],
    chunk_size: int,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> tuple[dict[str, torch.Tensor], Callable[[], None]]:
    """Passes 1 and 2 of gradient caching; returns ``(out, backward)``.

    Args:
        model: the bare model (``embed``, ``contrast``; see the module docstring).
        net: what runs pass 3 with a graph: ``model`` itself, or its ``DistributedDataParallel`` wrapper.
        batch: the local batch (B subjects on this process).
        chunk_size: subjects per chunk (≥ 1).
        autocast: context factory wrapped around both forward passes and the loss (e.g. bf16).

    Returns:
        ``out``: ``contrast``'s dict (``loss`` with a graph down to the cached embeddings only) and
        ``backward()``: back-propagates the loss into the embeddings, then runs pass 3, leaving in
        every parameter's ``.grad`` the gradient the unchunked ``net(batch)["loss"].backward()``
        would leave (accumulated: zero the gradients before calling it). The caller may inspect
        ``out["loss"]`` (e.g. stop on NaN) before calling ``backward``. The torch RNG ends where
        pass 1 left it.
    """
    n = _batch_rows(batch)
    slices = chunk_slices(n, chunk_size)
    device = next(model.parameters()).device
    states: list[RngState] = []
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad():
        for rows in slices:
            states.append(RngState(device))
            with autocast():
                parts.append(tuple(model.embed(take_rows(batch, rows, n))))
    after = RngState(device)
    leaves = [torch.cat([p[j] for p in parts]).detach().requires_grad_(True) for j in range(len(parts[0]))]
    del parts
    with autocast():
        out = model.contrast(*leaves)

    def backward() -> None:
        out["loss"].backward()  # d loss / d embedding (a collective under DDP: gather_rows's backward)
        grads = [leaf.grad if leaf.grad is not None else torch.zeros_like(leaf) for leaf in leaves]
        last = len(slices) - 1
        for c, rows in enumerate(slices):
            sync = net.no_sync() if isinstance(net, DistributedDataParallel) and c < last else nullcontext()
            with sync:
                states[c].restore()
                with autocast():
                    z = net(take_rows(batch, rows, n), embed_only=True)
                # one scalar root Σ_j <z_j, g_j>: its gradient wrt z_j is exactly g_j, and a single root
                # frees each graph as it goes (autograd.backward with several roots peaked ~30 % higher)
                sum((zj * g[rows]).sum() for zj, g in zip(z, grads)).backward()
        after.restore()

    return out, backward


def chunk_from_memory(free_bytes: float, total_bytes: float, per_subject_bytes: float, overhead_bytes: float,
                      reserve_bytes: float, batch_size: int, headroom: float = 0.1) -> int:
    """The largest chunk whose pass-3 memory fits: ``(free − headroom · total − reserve − overhead)
    / per_subject``, clamped to [1, batch_size].

    Args:
        free_bytes: device memory free now (driver's free plus the allocator's cached, unused bytes).
        total_bytes: the device's memory. headroom: fraction of it kept free (fragmentation, workspaces).
        per_subject_bytes: extra peak memory of a forward + backward per subject of a chunk.
        overhead_bytes: the part of a chunk's peak that does not grow with its size.
        reserve_bytes: memory not yet allocated that the step will need (e.g. AdamW's state).
        batch_size: subjects per process (the chunk never exceeds it).
    """
    budget = free_bytes - headroom * total_bytes - reserve_bytes - overhead_bytes
    chunk = math.floor(budget / max(per_subject_bytes, 1.0))
    return int(min(max(chunk, 1), batch_size))


def measure_chunk_memory(net: nn.Module, batch: dict[str, Any], device: torch.device,
                         autocast: Callable[[], AbstractContextManager[Any]] = nullcontext) -> tuple[float, float]:
    """(per-subject bytes, fixed bytes) of one chunk's forward + backward on CUDA, from the peak
    memory of probes with 1 and 2 subjects (after one warm-up probe). Gradients are accumulated
    into ``.grad`` (zero them before training); the RNG is left untouched."""
    n = _batch_rows(batch)

    def probe(k: int) -> float:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        sync = net.no_sync() if isinstance(net, DistributedDataParallel) else nullcontext()
        with sync:
            with autocast():
                z = net(take_rows(batch, slice(0, k), n), embed_only=True)
            sum(t.float().sum() for t in z).backward()
        del z
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device) - base)

    with torch.random.fork_rng(devices=[device]):
        probe(1)
        one, two = probe(1), probe(min(2, n))
    per_subject = max(two - one, 1.0)
    return per_subject, max(one - per_subject, 0.0)
