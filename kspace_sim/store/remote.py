"""Stores behind fsspec URLs (``s3://``, ``gs://``, ``memory://`` …): clear errors, consolidation, copying,
and counting the storage requests a read makes.

A URL that cannot be reached or lacks credentials raises :class:`RemoteError` (a
:class:`~kspace_sim.store.layout.StoreError`) with one line saying what to fix, after a quick
pre-flight with short timeouts and a single attempt, instead of zarr's retries and stack traces.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, WrapperStore

from kspace_sim.store.errors import StoreError
from kspace_sim.store.zarr_warnings import quiet_zarr_spec_notices

__all__ = [
    "RemoteError",
    "is_url",
    "open_kwargs",
    "filesystem",
    "check_remote",
    "zarr_store",
    "consolidate_any",
    "copy_store",
    "CountingStore",
]

PREFLIGHT_TIMEOUT_S = 5


class RemoteError(StoreError):
    """A remote store that cannot be reached, lacks credentials, or is not there."""


def is_url(location: str) -> bool:
    """True for an fsspec URL (``proto://…``) other than ``file://``."""
    return "://" in str(location) and not str(location).startswith("file://")


def open_kwargs(location: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments for ``zarr.open_group``: ``storage_options`` only for URLs."""
    return {"storage_options": storage_options} if storage_options and is_url(location) else {}


def filesystem(location: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path inside it)`` for a local path or URL."""
    import fsspec.core

    return fsspec.core.url_to_fs(str(location), **(storage_options or {}))


def _preflight_options(location: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    opts = copy.deepcopy(storage_options or {})
    if str(location).startswith(("s3://", "s3a://")):
        cfg = dict(opts.get("config_kwargs") or {})
        cfg.setdefault("connect_timeout", PREFLIGHT_TIMEOUT_S)
        cfg.setdefault("read_timeout", PREFLIGHT_TIMEOUT_S)
        cfg["retries"] = {"max_attempts": 1, "mode": "standard"}
        opts["config_kwargs"] = cfg
    opts["skip_instance_cache"] = True
    return opts


def _explain(location: str, storage_options: dict[str, Any] | None, exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc)
    endpoint = (storage_options or {}).get("endpoint_url") or (storage_options or {}).get("client_kwargs", {}).get(
        "endpoint_url"
    )
    where = f" (endpoint {endpoint})" if endpoint else ""
    if "NoCredentials" in name or "Unable to locate credentials" in text or "PartialCredentials" in name:
        return (
            f"no credentials for {location}{where}: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a profile), "
            "pass storage_options key/secret, or anon=True for a public bucket"
        )
    if "EndpointConnection" in name or "ConnectTimeout" in name or "Connect" in name or "Could not connect" in text:
        return f"cannot reach {location}{where}: {text.splitlines()[0] if text else name} (network, endpoint or proxy?)"
    if isinstance(exc, PermissionError) or "AccessDenied" in text or "Forbidden" in text or "InvalidAccessKeyId" in text:
        return f"access to {location}{where} was refused: check the credentials and the bucket policy ({name}: {text})"
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in text:
        return f"no store at {location}{where} (no zarr.json there)"
    return f"cannot open {location}{where}: {name}: {text}"


def check_remote(location: str, storage_options: dict[str, Any] | None = None) -> None:
    """Fail fast, with a clear message, when ``location`` is a URL whose store cannot be read.

    One ``HEAD``-like request for ``<location>/zarr.json`` with short timeouts and no retries.
    Local paths are not checked here.

    Raises:
        RemoteError: unreachable endpoint, missing credentials, refused access, or no store there.
    """
    if not is_url(location):
        return
    try:
        fs, path = filesystem(location, _preflight_options(location, storage_options))
        found = fs.exists(path.rstrip("/") + "/zarr.json")
    except ImportError as exc:
        raise RemoteError(f"cannot open {location}: the fsspec backend is not installed ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - every backend raises its own types
        raise RemoteError(_explain(location, storage_options, exc)) from None
    if not found:
        # ``exists`` swallows some errors: ask once more for the reason
        try:
            fs.info(path.rstrip("/") + "/zarr.json")
        except Exception as exc:  # noqa: BLE001
            raise RemoteError(_explain(location, storage_options, exc)) from None
        raise RemoteError(f"no store at {location} (no zarr.json there)")


def zarr_store(location: str, storage_options: dict[str, Any] | None = None, read_only: bool = True) -> Store:
    """A zarr ``Store`` for a local path or URL (``FsspecStore`` for URLs)."""
    if is_url(location):
        return FsspecStore.from_url(str(location), storage_options=storage_options or {}, read_only=read_only)
    from zarr.storage import LocalStore

    return LocalStore(str(location), read_only=read_only)


def consolidate_any(location: str, storage_options: dict[str, Any] | None = None) -> None:
    """Consolidate a store's metadata into its root ``zarr.json``, for local paths and URLs alike.

    (``zarr.consolidate_metadata`` takes no ``storage_options``; a URL store is opened here.)
    """
    with quiet_zarr_spec_notices():
        zarr.consolidate_metadata(zarr_store(location, storage_options, read_only=False))


def copy_store(src: str, dst: str, storage_options: dict[str, Any] | None = None) -> int:
    """Copy the store at local path ``src`` to ``dst`` (any URL, e.g. ``s3://bucket/x.zarr``) file by file.

    Returns:
        The number of files copied.
    """
    from pathlib import Path

    fs, root = filesystem(dst, storage_options)
    files = [p for p in Path(src).rglob("*") if p.is_file()]
    for p in files:
        fs.put_file(str(p), root.rstrip("/") + "/" + p.relative_to(src).as_posix())
    return len(files)


class CountingStore(WrapperStore[Store]):
    """A zarr store wrapper that counts the requests made to the wrapped store.

    ``get`` is one request (a ranged GET when ``byte_range`` is set); ``get_partial_values`` one per
    range; ``exists``/``list*`` one each. Counts are by kind and by key prefix (the array name).
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.counts: Counter[str] = Counter()
        self.keys: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _with_store(self, store: Store) -> "CountingStore":
        return type(self)(store)

    def _count(self, kind: str, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[kind] += n
            self.keys[key.split("/c/")[0] if "/c/" in key else key] += n

    @property
    def total(self) -> int:
        """All requests counted so far."""
        return sum(self.counts.values())

    def reset(self) -> None:
        """Start counting from zero."""
        with self._lock:
            self.counts.clear()
            self.keys.clear()

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        self._count("get" if byte_range is None else "get_range", key)
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        for key, _ in key_ranges:
            self._count("get_range", key)
        return await self._store.get_partial_values(prototype, key_ranges)

    async def exists(self, key: str) -> bool:
        self._count("exists", key)
        return await self._store.exists(key)
