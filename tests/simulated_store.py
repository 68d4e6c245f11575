"""A store that the simulator built, the way a user builds one: demo phantom subjects written by
``kspace-sim demo``, then ``kspace-sim build`` with its defaults (VISTA at R = 4 from a bank of 16
patterns, labels from the segmentations and the cohort's participant table), small crops and few
frames so that it takes seconds. Used by tests/test_contract.py (session-scoped fixture
``simulated_store`` in conftest.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

#: demo subjects (seed 0: 7 train, 1 validation, 2 test with --test-size 2); crop and frames
N_SUBJECTS = 10
TEST_SIZE = 2
CROP = 32
FRAMES = 10


@dataclass(frozen=True)
class SimulatedStore:
    """Paths of the demo cohort, the store built from it, and the VISTA cache the build used."""

    cohort: Path
    store: str
    build_output: str


def build_simulated_store(root: Path) -> SimulatedStore:
    """Write the demo cohort and build its store under ``root`` through the simulator's CLI.

    The VISTA pattern cache goes to ``root / 'mask-cache'`` (``$KSPACE_SIM_CACHE``) so that the
    masks are computed by this build, not read from a cache left by another run.
    """
    from cli.kspace_sim_app import app

    runner = CliRunner()
    cohort, store = root / "demo", root / "demo-vista_r4.zarr"
    old = os.environ.get("KSPACE_SIM_CACHE")
    os.environ["KSPACE_SIM_CACHE"] = str(root / "mask-cache")
    try:
        res = runner.invoke(app, ["demo", "--out", str(cohort), "--subjects", str(N_SUBJECTS), "--seed", "0",
                                  "--workers", "1"])
        if res.exit_code != 0:
            raise RuntimeError(f"kspace-sim demo failed ({res.exit_code}):\n{res.output}") from res.exception
        res = runner.invoke(app, ["build", "--input", str(cohort), "--out", str(store), "--crop", str(CROP),
                                  "--frames", str(FRAMES), "--workers", "0", "--test-size", str(TEST_SIZE)])
        if res.exit_code != 0:
            raise RuntimeError(f"kspace-sim build failed ({res.exit_code}):\n{res.output}") from res.exception
    finally:
        if old is None:
            os.environ.pop("KSPACE_SIM_CACHE", None)
        else:
            os.environ["KSPACE_SIM_CACHE"] = old
    return SimulatedStore(cohort, str(store), res.output)
