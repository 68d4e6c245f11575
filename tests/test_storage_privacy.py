"""float16 k-space storage and pseudonymised subject ids."""

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cli.kspace_sim_app import app
from kspace_sim.build import BuildConfig, build_store
from kspace_sim.privacy import KEY_ENV, load_pseudonym_key, pseudonymise
from kspace_sim.simulate import MaskSpec, SimulationParams
from kspace_sim.store.kspace_codec import decode_float16, encode_float16, image_nrmse
from synthetic_subjects import write_cohort

PARAMS = SimulationParams(crop=32, frames=10)
KEY = b"0123456789abcdef0123456789abcdef"


def test_float16_codec_round_trip_error_small():
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((4, 32, 32)) * np.logspace(-3, 2, 32) + 1j * rng.standard_normal((4, 32, 32))).astype(np.complex64)
    pairs, scale = encode_float16(k)
    assert pairs.dtype == np.float16 and pairs.shape == (4, 32, 32, 2)
    assert np.abs(pairs).max() == 32768
    assert image_nrmse(k, decode_float16(pairs, scale)) < 1e-3


def test_float16_store_matches_complex64_store(tmp_path):
    cohort = write_cohort(tmp_path / "in", ["1", "2"])
    a, b = tmp_path / "c64.zarr", tmp_path / "f16.zarr"
    build_store(BuildConfig(str(cohort), str(a), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False))
    rep = build_store(BuildConfig(str(cohort), str(b), [MaskSpec("gaussian", 4)], PARAMS, workers=0, progress=False, storage="float16"))
    assert rep.float16_image_nrmse is not None and rep.float16_image_nrmse < 1e-3
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert gb["kspace"].shape == (2, 9, 10, 32, 32, 2) and gb["kspace"].dtype == np.float16
    assert gb["kspace"].attrs["storage"] == "float16"
    k16 = decode_float16(gb["kspace"][1], float(gb["subjects/kspace_scale"][1]))
    assert image_nrmse(ga["kspace"][1], k16) < 1e-3
    assert gb.attrs["float16_image_nrmse"]["max"] < 1e-3


def test_pseudonyms_stable_keyed_and_not_the_id():
    p1 = pseudonymise("1234567", KEY)
    assert p1 == pseudonymise("1234567", KEY)
    assert p1 != pseudonymise("1234567", KEY[::-1])
    assert "1234567" not in p1 and p1.startswith("p") and len(p1) == 21
    assert len({pseudonymise(str(i), KEY) for i in range(1000)}) == 1000


def test_key_required_and_long_enough(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=KEY_ENV):
        load_pseudonym_key()
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least 16"):
        load_pseudonym_key()
    f = tmp_path / "key"
    f.write_bytes(KEY + b"\n")
    assert load_pseudonym_key(f) == KEY


def test_pseudonymised_build_has_no_raw_ids(tmp_path, monkeypatch):
    eids = ["1000011", "1000012", "1000013"]
    cohort = write_cohort(tmp_path / "in", eids)
    (cohort / "1000013" / "la_4ch.nii.gz").write_bytes(b"corrupt 1000013")
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    out = tmp_path / "p.zarr"
    r = CliRunner().invoke(app, ["build", "--input", str(cohort), "--out", str(out), "--mask", "gaussian", "--crop", "32", "--frames", "10", "--workers", "0", "--pseudonymise"])
    assert r.exit_code == 0, r.output
    g = zarr.open_group(str(out), mode="r")
    ids = [str(x) for x in g["subjects/id"][:]]
    assert sorted(ids) == sorted(pseudonymise(e, KEY) for e in eids)
    assert g.attrs["pseudonymised"] is True
    blob = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for e in eids:
        assert e.encode() not in blob, "raw id leaked into the store"
        assert e not in r.output, "raw id leaked into the log"
    assert KEY not in blob
