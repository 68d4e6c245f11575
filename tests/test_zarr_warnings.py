"""zarr's notices about consolidated metadata are silenced only around the calls that emit them,
not by importing the simulator (issue 24: no warning filters set at import time)."""

from __future__ import annotations

import subprocess
import sys
import warnings

from kspace_sim.store.layout import consolidate, create_store
from kspace_sim.store.zarr_warnings import ZARR_SPEC_NOTICES, quiet_zarr_spec_notices


def test_importing_the_simulator_sets_no_warning_filter():
    """(Third-party libraries add their own filters on import; none of the simulator's may be there.)"""
    code = (
        "import warnings; "
        "import kspace_sim.store.layout, kspace_sim.store.remote, kspace_sim.build, kspace_sim.add_mask; "
        "print(sorted({f[1].pattern for f in warnings.filters if f[1] is not None}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    patterns = out.stdout
    assert patterns.startswith("[")
    for notice in ZARR_SPEC_NOTICES:
        assert notice not in patterns and "onsolidated" not in patterns


def test_consolidation_is_quiet_and_restores_the_filters(tmp_path):
    url = str(tmp_path / "s.zarr")
    create_store(url, ["a"], frames=2, size=4, mask_names=[], attrs={})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        consolidate(url)
        assert warnings.filters == before
    assert not [w for w in caught if "onsolidated" in str(w.message)]


def test_the_context_manager_filters_only_inside():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_zarr_spec_notices():
            warnings.warn("Consolidated metadata is currently not part in the Zarr format 3 specification", UserWarning)
        warnings.warn("Consolidated metadata is currently not part in the Zarr format 3 specification", UserWarning)
    assert len(caught) == 1 and len(ZARR_SPEC_NOTICES) == 3
