"""The Dask client every parallel command uses: a local process cluster, or an existing scheduler."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

__all__ = ["dask_client"]


@contextmanager
def dask_client(workers: int, scheduler: str | None = None, memory_limit: str = "2GiB") -> Iterator[Any]:
    """A ``dask.distributed.Client``: on ``scheduler`` when given, else on a ``LocalCluster`` of
    ``workers`` single-threaded processes (``memory_limit`` each), closed on exit."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
        dashboard_address=None, silence_logs=40,
    ) as cluster, Client(cluster) as client:
        yield client
