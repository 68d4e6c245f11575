"""Start torch.distributed ranks for a test as spawned processes, with a deadline.

Shared by the DDP tests (tests/test_kmtr_ddp.py, tests/test_kmtr_gradcache.py).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch.multiprocessing as mp

#: wall-clock limit for the ranks of one test (a stuck gloo process group must not hang CI)
RANKS_DEADLINE_S = 180.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a gloo rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(fn: Callable[..., None], args: tuple[Any, ...], nprocs: int = 2,
              deadline_s: float = RANKS_DEADLINE_S) -> None:
    """Start ``nprocs`` spawned processes ``fn(rank, *args)`` and join them within ``deadline_s``.

    Fails the test (after killing every child still alive) when the deadline passes; a child's
    exception is re-raised here. The children are killed too if this process is interrupted
    (pytest-timeout, Ctrl-C), so no rank outlives its test. ``fn`` must be importable (a
    module-level function of a test module).

    spawn, not fork: by the time these tests run, the pytest process holds a dozen threads (zarr
    I/O, asyncio executors, Dask, tqdm monitors), and a child forked while one of them holds a
    lock can hang (seen once in CI: the stage-II ranks never finished). spawn re-imports torch in
    each child (a few seconds) but inherits no thread state.
    """
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    end = time.monotonic() + deadline_s
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() > end:
                pytest.fail(f"the {nprocs} ranks did not finish within {deadline_s:.0f} s (killed)")
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=10)
