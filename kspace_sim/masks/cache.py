"""On-disk cache of computed masks, keyed by every parameter (seed included).

Directory: ``$KSPACE_SIM_CACHE`` when set, else ``~/.cache/kspace_sim/masks``. One ``.npz`` file
per key (the mask and the canonical JSON of its parameters), named by the SHA-256 of that JSON.
Writes go to a unique temporary file in the same directory and are renamed into place with
``os.replace``, so concurrent processes never see a partial file; two processes computing the
same key write identical content and the last rename wins. Unreadable or mismatching files are
treated as misses and rewritten; an unwritable directory only warns.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["MaskCache", "default_cache_dir", "cache_key", "CACHE_ENV"]

CACHE_ENV = "KSPACE_SIM_CACHE"


def default_cache_dir() -> Path:
    """``$KSPACE_SIM_CACHE`` if set and non-empty, else ``~/.cache/kspace_sim/masks``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kspace_sim" / "masks"


def _canonical(params: Mapping[str, Any]) -> str:
    def norm(v: Any) -> Any:
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return repr(float(v))  # exact, and 4 vs 4.0 cannot collide with ints by accident
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): norm(x) for k, x in v.items()}
        if v is None or isinstance(v, (bool, int, str)):
            return v
        raise TypeError(f"cache key value of type {type(v).__name__} is not supported: {v!r}")

    return json.dumps(norm(dict(params)), sort_keys=True, separators=(",", ":"))


def cache_key(params: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``params`` (bool/int/float/str/None/lists/dicts)."""
    return hashlib.sha256(_canonical(params).encode()).hexdigest()


class MaskCache:
    """A directory of cached boolean masks.

    Args:
        directory: cache folder (created on first write); None = :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()

    def path(self, params: Mapping[str, Any]) -> Path:
        """File that holds the mask of ``params``."""
        return self.directory / f"{cache_key(params)}.npz"

    def load(self, params: Mapping[str, Any], shape: tuple[int, ...] | None = None) -> np.ndarray | None:
        """The cached bool mask of ``params``, or None on a miss (or an unreadable/mismatching file)."""
        path = self.path(params)
        try:
            with np.load(path, allow_pickle=False) as z:
                mask = np.asarray(z["mask"])
                stored = str(z["params"])
        except (OSError, KeyError, ValueError, EOFError):
            return None
        if stored != _canonical(params) or mask.dtype != bool or (shape is not None and mask.shape != tuple(shape)):
            return None
        return mask

    def save(self, params: Mapping[str, Any], mask: np.ndarray) -> Path | None:
        """Write ``mask`` atomically; returns its path, or None (with a warning) if not writable."""
        path = self.path(params)
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, mask=np.asarray(mask, dtype=bool), params=np.array(_canonical(params)))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            return path
        except OSError as exc:
            warnings.warn(f"mask cache not written ({exc}); continuing without it", RuntimeWarning, stacklevel=2)
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            return None

    def get_or_compute(
        self, params: Mapping[str, Any], compute: Callable[[], np.ndarray], shape: tuple[int, ...] | None = None
    ) -> np.ndarray:
        """Cached mask of ``params``, else ``compute()`` stored and returned."""
        hit = self.load(params, shape)
        if hit is not None:
            return hit
        mask = np.asarray(compute(), dtype=bool)
        self.save(params, mask)
        return mask

    def clear(self) -> int:
        """Delete every cached mask in the directory; returns how many files were removed."""
        removed = 0
        for f in self.directory.glob("*.npz"):
            try:
                f.unlink()
                removed += 1
            except OSError:
                pass
        return removed
