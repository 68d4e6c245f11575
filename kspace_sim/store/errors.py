"""The store's error type, shared by the layout and the remote-store code."""

from __future__ import annotations

__all__ = ["StoreError"]


class StoreError(Exception):
    """A store that cannot be created, opened or resumed as asked."""
