"""The Dask client every parallel command uses: a local process cluster, or an existing scheduler.

The local cluster's workers get settings measured on the build (64 demo subjects, 2 workers,
gaussian R = 4: 2.17 → 3.16 subjects/s, page faults per worker 2.8 M → 0.1 M):

- glibc's trim *and* mmap thresholds at 1 GiB (:data:`WORKER_MALLOC_ENV`). Dask sets only the
  trim threshold (64 KiB), and setting it switches off glibc's dynamic mmap threshold, so every
  array over 128 KiB is a fresh ``mmap`` whose pages fault in again in every task (a subject's
  task allocates and frees ~60 MB arrays many times). With both thresholds high the arrays come
  from the heap and its pages are reused from task to task; the heap stays at the task's peak
  (about 0.5 GB), well inside the worker's memory limit.
- the statistical task profiler switched off (it samples task stacks every 10 ms, taking the GIL).

Workers of an existing cluster (``--scheduler``) keep their own settings: start them with the
same environment (``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_MMAP_THRESHOLD_`` = 1073741824) for the
same speed.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["dask_client", "WORKER_MALLOC_ENV"]

#: glibc allocator settings of the local workers (see the module docstring).
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}


@contextmanager
def dask_client(workers: int, scheduler: str | None = None, memory_limit: str = "2GiB") -> Iterator[Any]:
    """A ``dask.distributed.Client``: on ``scheduler`` when given, else on a ``LocalCluster`` of
    ``workers`` single-threaded processes (``memory_limit`` each), closed on exit."""
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    settings = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    settings["distributed.worker.profile.enabled"] = False
    with dask.config.set(settings), LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
        dashboard_address=None, silence_logs=40,
    ) as cluster, Client(cluster) as client:
        yield client
