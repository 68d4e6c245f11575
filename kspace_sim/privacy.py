"""Pseudonymised subject ids: a keyed hash (HMAC-SHA256) of the UK Biobank eid.

The key comes from the environment variable ``KSPACE_SIM_PSEUDONYM_KEY`` or a key file and is
never written to a store, a manifest or a log. The same key gives the same pseudonyms in every
build, so teams sharing a key can join tables without exchanging raw eids; without the key the
mapping cannot be inverted (beyond brute force over the eid space, which the 256-bit key prevents).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

__all__ = ["KEY_ENV", "load_pseudonym_key", "pseudonymise"]

KEY_ENV = "KSPACE_SIM_PSEUDONYM_KEY"
MIN_KEY_BYTES = 16


def load_pseudonym_key(key_file: str | Path | None = None) -> bytes:
    """The pseudonymisation key from ``key_file`` or ``$KSPACE_SIM_PSEUDONYM_KEY``.

    Raises:
        ValueError: no key, or a key shorter than 16 bytes.
    """
    if key_file is not None:
        key = Path(key_file).read_bytes().strip()
    else:
        value = os.environ.get(KEY_ENV)
        if not value:
            raise ValueError(f"--pseudonymise needs a key: set {KEY_ENV} or pass --key-file")
        key = value.encode()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the pseudonymisation key must be at least {MIN_KEY_BYTES} bytes")
    return key


def pseudonymise(subject_id: str, key: bytes) -> str:
    """``'p' + 20 hex digits`` of HMAC-SHA256(key, subject_id): stable, not invertible without the key."""
    return "p" + hmac.new(key, str(subject_id).encode(), hashlib.sha256).hexdigest()[:20]
