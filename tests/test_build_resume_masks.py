"""A resumed build carries on the masks ``add-mask`` gave the store: it writes their rows for the
subjects it finishes (with add-mask's per-subject seeds) and keeps their ``masks`` attribute entries,
so that the store equals one built with every mask from the start. A mask whose spec cannot be
read back from the store stops the build before any work (exit code 2, one line naming it)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic_subjects import write_cohort
from typer.testing import CliRunner

import kspace_sim.build as build_module
from cli.kspace_sim_app import app
from kspace_sim.add_mask import add_mask_to_store
from kspace_sim.build import BuildConfig, build_store
from kspace_sim.simulate import MaskSpec, SimulationParams
from kspace_sim.store.errors import StoreError

PARAMS = SimulationParams(crop=32, frames=10)
BUILT = MaskSpec("gaussian", 4)
# added later: a plain pattern, and one with options and a bank (both read back from the store)
ADDED = [MaskSpec("uniform", 8), MaskSpec("vista", 4, options={"iterations": 20}, bank_size=2)]
IDS = ["1", "2", "3"]


def _cfg(inp: Path, out: Path, masks: list[MaskSpec], workers: int = 0) -> BuildConfig:
    return BuildConfig(str(inp), str(out), masks, PARAMS, seed=5, workers=workers, progress=False)


def _arrays(url: Path) -> dict[str, np.ndarray]:
    """Every array of the store, by path."""
    out: dict[str, np.ndarray] = {}

    def walk(group: zarr.Group, prefix: str) -> None:
        for name, arr in group.arrays():
            out[prefix + name] = arr[:]
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(str(url), mode="r"), "")
    return out


def _assert_same_store(a: Path, b: Path, ordered: bool = True) -> None:
    """Every array equal (same paths, values, dtypes) and the same ``masks`` attribute (its entries
    in the same order unless not ``ordered``)."""
    xa, xb = _arrays(a), _arrays(b)
    assert sorted(xa) == sorted(xb)
    for path in xa:
        assert xa[path].dtype == xb[path].dtype, path
        np.testing.assert_array_equal(xa[path], xb[path], err_msg=path)
    ma = zarr.open_group(str(a), mode="r").attrs["masks"]
    mb = zarr.open_group(str(b), mode="r").attrs["masks"]
    assert ma == mb
    assert not ordered or list(ma) == list(mb)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cohort, a store built with every mask at once, and one built with one mask and given
    the others by add-mask after it finished (the two references)."""
    root = tmp_path_factory.mktemp("resume-masks")
    cohort = write_cohort(root / "in", IDS)
    at_once, after = root / "at_once.zarr", root / "after.zarr"
    build_store(_cfg(cohort, at_once, [BUILT, *ADDED]))
    build_store(_cfg(cohort, after, [BUILT]))
    for spec in ADDED:
        add_mask_to_store(str(after), spec, workers=0, progress=False)
    return {"cohort": cohort, "at_once": at_once, "after": after}


def _interrupted_cohort(src: Path, dst: Path) -> tuple[Path, bytes]:
    """A copy of the cohort whose subject 2 cannot be read (its build fails: the interruption the
    next run resumes); returns the file and its good bytes."""
    write_cohort(dst, IDS)
    sa = dst / "2" / "sa.nii.gz"
    good = sa.read_bytes()
    assert good == (src / "2" / "sa.nii.gz").read_bytes()
    sa.write_bytes(good[: len(good) // 3])
    return sa, good


def _interrupted_store_with_added_masks(stores: dict[str, Path], tmp_path: Path) -> tuple[Path, Path, BuildConfig]:
    """Build subjects 1 and 3 (2 fails), add the masks (rows of 1 and 3 only), then fix subject 2."""
    sa, good = _interrupted_cohort(stores["cohort"], tmp_path / "in")
    out = tmp_path / "s.zarr"
    cfg = _cfg(tmp_path / "in", out, [BUILT])
    first = build_store(cfg)
    assert [sid for sid, _ in first.failed] == ["2"]
    for spec in ADDED:
        assert add_mask_to_store(str(out), spec, workers=0, progress=False).written == 2
    sa.write_bytes(good)
    return tmp_path / "in", out, cfg


def test_resumed_build_writes_the_masks_added_since_and_keeps_their_entries(stores, tmp_path):
    _, out, cfg = _interrupted_store_with_added_masks(stores, tmp_path)
    resumed = build_store(cfg)
    assert resumed.processed == 1 and resumed.skipped == 2 and not resumed.failed
    assert list(resumed.achieved_acceleration) == [BUILT.name, *(s.name for s in ADDED)]
    g = zarr.open_group(str(out), mode="r")
    assert all(g[f"masks/{s.name}"][1].any(axis=-1).all() for s in ADDED)  # subject 2's rows written
    counts = g.attrs["masks"]["uniform_r8"]["_counts"]
    assert counts[0] == 3 * 9 * 10 * 32 and counts[0] == 8 * counts[1]  # all three subjects counted
    assert g.attrs["builds"][-1]["masks_carried"] == [s.name for s in ADDED]
    _assert_same_store(out, stores["at_once"])
    _assert_same_store(out, stores["after"])
    # the next rerun has nothing to do and changes no array or mask entry
    assert build_store(cfg).processed == 0
    _assert_same_store(out, stores["at_once"])


@pytest.mark.slow
def test_resumed_build_on_dask_carries_the_added_masks(stores, tmp_path):
    """The same on two Dask workers (the added masks' banks computed on the cluster)."""
    _, out, cfg = _interrupted_store_with_added_masks(stores, tmp_path)
    cfg.workers = 2
    assert build_store(cfg).processed == 1
    _assert_same_store(out, stores["at_once"])


def test_run_killed_before_recording_the_counts_is_counted_again(stores, tmp_path, monkeypatch):
    """A run killed after it marked subjects done but before it recorded the masks' ``_counts``
    leaves counts that miss those subjects: the next run counts the done rows again."""
    sa, good = _interrupted_cohort(stores["cohort"], tmp_path / "in")
    out = tmp_path / "s.zarr"
    cfg = _cfg(tmp_path / "in", out, [BUILT])
    build_store(cfg)  # subject 2 fails; counts of subjects 1 and 3 recorded
    sa.write_bytes(good)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed before publishing")

    with monkeypatch.context() as m:
        m.setattr(build_module, "publish_run", killed)
        with pytest.raises(KeyboardInterrupt):
            build_store(cfg)  # subject 2 done, its counts never recorded
    g = zarr.open_group(str(out), mode="r")
    assert (g["subjects/status"][:] == 1).all()
    assert g.attrs["masks"][BUILT.name]["_counts"][0] == 2 * 9 * 10 * 32
    for spec in ADDED:
        add_mask_to_store(str(out), spec, workers=0, progress=False)
    assert build_store(cfg).processed == 0
    _assert_same_store(out, stores["at_once"])


def _digest(url: Path) -> str:
    """SHA-256 over every file of the store, names and bytes."""
    h = hashlib.sha256()
    for f in sorted(p for p in url.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(url)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _drop_entry(masks: dict) -> None:
    del masks["uniform_r8"]


def _bad_option(masks: dict) -> None:
    masks["uniform_r8"]["options"] = {"bogus": 1}


def _other_mask(masks: dict) -> None:
    masks["uniform_r8"]["acceleration"] = 6.0


def _no_options(masks: dict) -> None:
    del masks["uniform_r8"]["options"]


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_drop_entry, "has no entry in the store's masks attribute"),
        (_bad_option, "unexpected keyword argument 'bogus'"),
        (_other_mask, "describes mask uniform_r6"),
        (_no_options, "has no options"),
    ],
)
def test_a_mask_whose_spec_cannot_be_read_back_stops_the_build_before_any_work(stores, tmp_path, damage, reason):
    inp, out, cfg = _interrupted_store_with_added_masks(stores, tmp_path)
    g = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    masks = g.attrs["masks"]
    damage(masks)
    g.attrs["masks"] = masks
    before = _digest(out)
    with pytest.raises(StoreError) as exc:
        build_store(cfg)
    message = str(exc.value)
    assert "\n" not in message and "mask uniform_r8" in message and reason in message, message
    args = ["build", "--input", str(inp), "--out", str(out), "--mask", "gaussian", "--acc", "4", "--crop", "32",
            "--frames", "10", "--seed", "5", "--workers", "0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "uniform_r8" in r.output and "cannot be read back" in " ".join(r.output.split()), r.output
    assert _digest(out) == before  # nothing written, subject 2 still to do
    assert zarr.open_group(str(out), mode="r")["subjects/status"][:].tolist() == [1, 2, 1]


def test_add_mask_restores_an_entry_an_earlier_resume_dropped(stores, tmp_path):
    """The state the resumed build used to leave (the added mask's entry dropped, no row for the
    subject it finished): the build stops naming the mask; add-mask writes the missing row and the
    entry back; the store then equals one built with every mask at once."""
    _, out, cfg = _interrupted_store_with_added_masks(stores, tmp_path)
    build_store(cfg)
    g = zarr.open_group(str(out), mode="r+", use_consolidated=False)
    masks = g.attrs["masks"]
    del masks["uniform_r8"]
    g.attrs["masks"] = masks
    g["masks/uniform_r8"][1] = False
    with pytest.raises(StoreError, match="mask uniform_r8"):
        build_store(cfg)
    assert add_mask_to_store(str(out), MaskSpec("uniform", 8), workers=0, progress=False).written == 1
    assert build_store(cfg).processed == 0
    _assert_same_store(out, stores["at_once"], ordered=False)  # add-mask wrote the entry back last
