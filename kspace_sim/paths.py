"""Default locations: the demo cohort cache and the default store path."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "demo_cohort_dir", "default_store_path"]


def cache_dir() -> Path:
    """``$KSPACE_SIM_CACHE`` or ``~/.cache/kspace_sim``."""
    return Path(os.environ.get("KSPACE_SIM_CACHE", Path.home() / ".cache" / "kspace_sim"))


def demo_cohort_dir(n_subjects: int, seed: int) -> Path:
    """Where ``kspace-sim build`` generates the demo cohort when no ``--input`` is given."""
    return cache_dir() / "demo" / f"n{n_subjects}_seed{seed}"


def default_store_path(mask_names: list[str], demo: bool) -> str:
    """``stores/demo-<mask>.zarr`` (or ``stores/cohort-<mask>.zarr``) under the working directory."""
    return str(Path("stores") / f"{'demo' if demo else 'cohort'}-{'-'.join(mask_names)}.zarr")
