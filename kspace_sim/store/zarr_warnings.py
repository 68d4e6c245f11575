"""Silencing zarr's notices about parts of the store that are not (yet) in the Zarr v3 specification.

The store uses consolidated metadata and variable-length strings on purpose (docs/store-format.md);
zarr warns about both each time. The filter applies only around the calls that warn (not at import
time, so that a library user's own warning settings stay as they were).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ZARR_SPEC_NOTICES", "quiet_zarr_spec_notices"]

ZARR_SPEC_NOTICES = (
    ".*Consolidated metadata.*",
    ".*not part of the Zarr format 3.*",
    ".*does not have a Zarr V3 specification.*",
)


@contextmanager
def quiet_zarr_spec_notices() -> Iterator[None]:
    """Within the block, ignore zarr's warnings that consolidated metadata and string arrays are
    not part of the Zarr v3 specification (zarr may warn from its I/O thread: the filter is global
    for the block's duration)."""
    with warnings.catch_warnings():
        for message in ZARR_SPEC_NOTICES:
            warnings.filterwarnings("ignore", message=message)
        yield
