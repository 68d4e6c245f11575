"""Deterministic seeds derived from the global seed and a subject id.

Every random quantity of the simulator (B0 phase, masks, demo phantoms) is drawn from a
``numpy.random.Generator`` seeded by :func:`derive_seed`, so results depend only on the
global seed, the subject id and a purpose tag, never on worker count or execution order.
"""

from __future__ import annotations

import hashlib

import numpy as np

__all__ = ["derive_seed", "derive_rng"]


def derive_seed(global_seed: int, *keys: object) -> int:
    """Return a 63-bit seed from ``global_seed`` and any number of keys.

    Keys are converted with ``str`` and hashed with SHA-256 together with the global seed,
    e.g. ``derive_seed(0, "1000123", "phase", 3)`` for slice 3 of subject ``1000123``.
    """
    h = hashlib.sha256(str(int(global_seed)).encode())
    for key in keys:
        h.update(b"\x1f")
        h.update(str(key).encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1


def derive_rng(global_seed: int, *keys: object) -> np.random.Generator:
    """A ``numpy.random.Generator`` (PCG64) seeded by :func:`derive_seed`."""
    return np.random.default_rng(derive_seed(global_seed, *keys))
