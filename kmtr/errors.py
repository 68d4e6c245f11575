"""The trainer's error for a configuration that cannot train on the data (every layer raises it)."""

from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration that cannot train on this data."""
