"""The trainer on stores with coils (format version 2, docs/multicoil.md): reader, on-the-fly coil
synthesis in the data path (stored evaluation noise, fresh training noise), SENSE-1 images, the
2·C-channel tokeniser, and one training step of each stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from kmtr_fixtures import TINY_OVERRIDES, store, write_store  # noqa: F401
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from cli.kmtr_app import app
from kmtr.coils import coil_kspace, stored_white_noise
from kmtr.config import TrainConfig, apply_overrides, preset
from kmtr.data import KSpaceDataset, prepare_batch, zero_filled_image
from kmtr.errors import ConfigError
from kmtr.fft import ifft2c
from kmtr.models.mae import KSpaceMAE
from kmtr.models.tokenizer import TokenGrid, channels_complex, complex_channels, patchify
from kmtr.normalise import subject_scale
from kmtr.store import StoreError, open_store, read_store_info, store_coils

torch.set_num_threads(1)
C = 4


@pytest.fixture(scope="module")
def coil_store(tmp_path_factory) -> str:
    """6 subjects, 9 × 10 × 32 × 32, 4 birdcage coils at 20 dB (rows 0-3 train, 4 validation)."""
    return write_store(tmp_path_factory.mktemp("coils") / "c.zarr", n_coils=C, snr_db=20.0)


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory) -> str:
    """As ``coil_store`` but noise-free."""
    return write_store(tmp_path_factory.mktemp("coils0") / "c0.zarr", n=4, n_coils=C, snr_db=None,
                       status=[1, 1, 1, 1], split=[0, 0, 1, 2])


def _batch(ds: KSpaceDataset, n: int = 2) -> dict[str, torch.Tensor]:
    return prepare_batch(next(iter(DataLoader(ds, batch_size=n, shuffle=False))), "cpu")


def test_reader_exposes_coils(coil_store, store):  # noqa: F811
    info = read_store_info(open_store(coil_store), coil_store)
    assert info.format_version == 2 and info.n_coils == C and info.coils is not None
    assert info.coils.model == "birdcage" and info.coils.snr_db == 20.0 and info.coils.independent
    assert info.coils.noise_sigma.shape == (6, 9) and bool((info.coils.noise_sigma[:5] > 0).all())
    assert info.coils.noise_seed.shape == (6,) and "SeedSequence" in info.coils.noise_rule
    assert info.coils.summary() == "4 coils (birdcage), SNR 20 dB, independent noise"
    assert store_coils(coil_store) == C
    v1 = read_store_info(open_store(store), store)
    assert v1.format_version == 1 and v1.coils is None and v1.n_coils == 1 and store_coils(store) is None


def test_coil_store_loads_with_2c_channels(coil_store):
    ds = KSpaceDataset(coil_store, "train", "vista_r4", frames=5)
    sample = ds[0]
    assert sample["kspace"].shape == (9, 5, 32, 32)  # coil-free, as stored
    assert sample["maps"].shape == (C, 9, 32, 32) and sample["maps"].dtype == torch.complex64
    assert sample["coil_noise"].shape == (C, 9, 5, 32, 32) and sample["sigma"].shape == (9,)
    batch = _batch(ds)
    assert batch["kspace"].shape == (2, C, 9, 5, 32, 32) and batch["image"].shape == (2, 9, 5, 32, 32)
    assert "coil_noise" not in batch and "sigma" not in batch
    grid = TokenGrid(9, 5, 32, 32, (5, 8, 8))
    cfg = preset("tiny").arch
    mae = KSpaceMAE(grid, ds.info.view_ids, cfg, coils=ds.coils)
    tokens, _ = mae.encoder_inputs(batch["kspace"], batch["mask"])
    assert tokens.shape == (2, grid.num_tokens, 5 * 8 * 8 * 2 * C) and mae.embed.proj.in_features == 2 * C * 320
    out = mae(batch["kspace"], batch["mask"])
    assert out["pred"].shape == out["target"].shape and torch.isfinite(out["loss"])
    rec = mae.reconstruct(out)
    assert rec["target"].shape == (2, C, 9, 5, 32, 32)
    torch.testing.assert_close(rec["target"], batch["kspace"])
    with pytest.raises(ValueError, match="reads 4-coil k-space"):
        mae.encoder_inputs(batch["kspace"][:, 0], batch["mask"])


def test_tokeniser_one_coil_is_the_single_coil_layout():
    k = torch.randn(2, 9, 5, 16, 16, dtype=torch.complex64)
    grid = TokenGrid(9, 5, 16, 16, (5, 8, 8))
    assert torch.equal(patchify(complex_channels(k[:, None]), grid), patchify(torch.view_as_real(k), grid))
    kc = torch.randn(2, 3, 9, 5, 16, 16, dtype=torch.complex64)
    x = complex_channels(kc)
    assert x.shape == (2, 9, 5, 16, 16, 6)
    assert torch.equal(x[..., 2], kc[:, 1].real) and torch.equal(x[..., 3], kc[:, 1].imag)  # (coil, re/im)
    assert torch.equal(channels_complex(x, 3), kc) and torch.equal(channels_complex(torch.view_as_real(k), None), k)


def test_eval_noise_is_bit_stable_and_the_numpy_reference(coil_store):
    from kspace_sim.store.coil_arrays import read_subject_coils, subject_coil_kspace

    a = _batch(KSpaceDataset(coil_store, "train", "vista_r4", frames=5))
    b = _batch(KSpaceDataset(coil_store, "train", "vista_r4", frames=5))
    assert torch.equal(a["kspace"], b["kspace"]) and torch.equal(a["image"], b["image"])
    # the stored draw is the simulator's: its numpy coil k-space of the store's row, kept frames
    ds = KSpaceDataset(coil_store, "train", "vista_r4", frames=5)
    row = int(ds.rows[1])
    group = open_store(coil_store)
    ref = subject_coil_kspace(group["kspace"][row], read_subject_coils(group, row))[:, :, ds.frames]
    ours = (a["kspace"][1] * a["scale"][1]).numpy()
    assert np.abs(ours - ref).max() < 2e-5 * np.abs(ref).max()


def test_stored_white_noise_is_the_rule_and_any_subset_is_its_part(coil_store):
    """The store's noise rule (version 2): one numpy sub-stream per (view, frame); kmtr's draw of kept
    views/frames equals the simulator's, and both equal the same part of the whole draw, bit for bit."""
    from kspace_sim.noise import seeded_white_noise

    info = read_store_info(open_store(coil_store), coil_store)
    assert info.coils.attrs["noise_rule_version"] == 2 and "spawn_key=(s, t)" in info.coils.noise_rule
    seed, shape = int(info.coils.noise_seed[1]), (C, 9, 10, 32, 32)
    whole = stored_white_noise(seed, shape)
    assert np.array_equal(whole, seeded_white_noise(seed, C, shape[1:]))
    # the rule written out: (s, t) = (4, 7) is the t-th child of the s-th child of SeedSequence(seed)
    child = np.random.SeedSequence(seed).spawn(5)[4].spawn(8)[7]
    pairs = np.random.default_rng(child).standard_normal((C, 32, 32, 2), dtype=np.float32) * np.float32(1 / np.sqrt(2))
    assert np.array_equal(whole[:, 4, 7], pairs.view(np.complex64)[..., 0])
    frames, views = np.array([0, 3, 9]), np.array([2, 8])
    part = stored_white_noise(seed, shape, frames, views)
    assert part.shape == (C, 2, 3, 32, 32)
    assert np.array_equal(part, whole[:, views][:, :, frames])
    assert np.array_equal(part, seeded_white_noise(seed, C, shape[1:], (views, frames)))
    assert np.array_equal(stored_white_noise(seed, shape, np.array([9])), whole[:, :, [9]])
    # statistics of the white noise: E|n|^2 = 1, real and imaginary parts of variance 1/2, independent views
    assert abs(float(np.mean(np.abs(whole) ** 2)) - 1) < 0.01
    assert abs(float(np.mean(whole[:, 0] * whole[:, 1].conj()).real)) < 0.01
    with pytest.raises(ValueError, match="frame index"):
        stored_white_noise(seed, shape, np.array([10]))


def test_a_noisy_store_of_the_unreleased_noise_rule_is_refused(tmp_path):
    from kspace_sim.store.coil_arrays import read_subject_coils, subject_coil_kspace

    path = write_store(tmp_path / "old.zarr", n=2, n_coils=C, snr_db=20.0, status=[1, 1], split=[0, 2])
    rw = zarr.open_group(path, mode="r+")
    attrs = dict(rw.attrs["coils"])
    del attrs["noise_rule_version"]  # as built before the rule had sub-streams (version 1)
    rw.attrs["coils"] = attrs
    with pytest.raises(StoreError, match="noise rule version 1"):
        read_store_info(open_store(path), path)
    with pytest.raises(ValueError, match="noise rule version 1"):
        subject_coil_kspace(rw["kspace"][0], read_subject_coils(rw, 0))


def test_train_noise_is_fresh_per_epoch_and_deterministic(coil_store):
    ds = KSpaceDataset(coil_store, "train", "vista_r4", frames=5, coil_noise="fresh")
    e0 = _batch(ds)
    ds.set_epoch(1)
    e1 = _batch(ds)
    ds.set_epoch(0)
    again = _batch(ds)
    assert not torch.allclose(e0["kspace"], e1["kspace"])
    assert torch.equal(e0["kspace"], again["kspace"]) and torch.equal(e0["image"], again["image"])
    stored = _batch(KSpaceDataset(coil_store, "train", "vista_r4", frames=5))
    assert not torch.allclose(e0["kspace"], stored["kspace"])


def test_fresh_noise_has_the_stored_noise_statistics(coil_store):
    """Fresh noise is drawn in the image domain (cheaper); it must have sigma per coil and view like
    the stored k-space draw, and the SENSE-1 image must be the combination of that same k-space."""
    ds = KSpaceDataset(coil_store, "train", "vista_r4", coil_noise="fresh")
    raw = next(iter(DataLoader(ds, batch_size=4)))
    batch = prepare_batch(raw, "cpu")
    k = batch["kspace"] * batch["scale"].reshape(-1, 1, 1, 1, 1, 1)
    clean = coil_kspace(raw["kspace"], raw["maps"])
    resid = (k - clean).numpy()  # (B, C, S, T, H, W)
    sigma = raw["sigma"].numpy()  # (B, S)
    measured = np.sqrt((np.abs(resid) ** 2).mean(axis=(1, 3, 4, 5)))
    assert np.allclose(measured, sigma, rtol=0.05)
    r = (np.moveaxis(resid, 1, 0) / sigma[None, :, :, None, None, None]).reshape(C, -1)
    cov = r @ r.conj().T / r.shape[1]
    assert np.abs(cov - np.eye(C)).max() < 0.05  # independent coils
    from kmtr.coils import sense1
    image = batch["image"] * batch["scale"].reshape(-1, 1, 1, 1, 1)
    torch.testing.assert_close(image, sense1(k, raw["maps"]), atol=1e-5, rtol=1e-4)


def test_correlated_fresh_noise_has_the_stored_covariance(tmp_path):
    path = write_store(tmp_path / "rho.zarr", n=3, n_coils=C, snr_db=20.0, noise_correlation=0.5,
                       status=[1, 1, 1], split=[0, 0, 1])
    ds = KSpaceDataset(path, "train", "vista_r4", coil_noise="fresh")
    assert not ds.info.coils.independent
    raw = next(iter(DataLoader(ds, batch_size=2)))
    batch = prepare_batch(raw, "cpu")
    k = batch["kspace"] * batch["scale"].reshape(-1, 1, 1, 1, 1, 1)
    resid = (k - coil_kspace(raw["kspace"], raw["maps"])).numpy() / raw["sigma"].numpy()[:, None, :, None, None, None]
    r = np.moveaxis(resid, 1, 0).reshape(C, -1)
    cov = r @ r.conj().T / r.shape[1]
    assert np.abs(cov - ds.info.coils.noise_cov).max() < 0.05


def test_sense1_image_is_x_without_noise(clean_store):
    ds = KSpaceDataset(clean_store, "train", "vista_r4", frames=5)
    for fresh in ("stored", "fresh"):
        ds.coil_noise = fresh
        raw = next(iter(DataLoader(ds, batch_size=2)))
        assert "coil_noise" not in raw and "noise_seed" not in raw  # noise-free store: nothing drawn
        batch = prepare_batch(raw, "cpu")
        image = batch["image"] * batch["scale"].reshape(-1, 1, 1, 1, 1)
        x = ifft2c(raw["kspace"])
        assert (image.abs() - x.abs()).abs().max() < 1e-5 * x.abs().max()
        torch.testing.assert_close(image, x, atol=1e-5 * float(x.abs().max()), rtol=1e-4)
    # zero-filled: SENSE-1 of the coil k-space with the unsampled lines zeroed (each coil's aliasing
    # is weighted by conj(S_c), so it is not ifft2c of the undersampled coil-free k-space)
    zf = zero_filled_image(batch)
    maps = raw["maps"][:, :, :, None]
    ref = (maps.conj() * ifft2c(batch["kspace"] * raw["mask"][:, None, ..., None, :])).sum(1)
    torch.testing.assert_close(zf, ref)
    full = dict(batch, mask=torch.ones_like(batch["mask"]))
    torch.testing.assert_close(zero_filled_image(full), batch["image"], atol=1e-5, rtol=1e-4)


def test_scale_uses_sampled_lines_of_every_coil():
    k = torch.full((3, 2, 4, 8, 8), 2.0 + 0j)
    mask = torch.zeros(2, 4, 8, dtype=torch.bool)
    mask[..., 3] = True
    k[..., 5] = 1000.0  # unsampled line: ignored
    assert float(subject_scale(k, mask)) == pytest.approx(2.0)
    k[1, ..., 3] = 0.0  # one coil dark on the sampled line: mean over all coils' samples
    assert float(subject_scale(k, mask)) == pytest.approx(float(np.sqrt(4 * 2 / 3)))


def _config(data: str, out: Path, name: str, **extra: str) -> TrainConfig:
    cfg = preset("tiny")
    apply_overrides(cfg, {**TINY_OVERRIDES, "data.data": data, "data.batch_size": "2", "optim.epochs": "1",
                          "run.max_steps": "1", "run.out_dir": str(out), "run.name": name, **extra})
    return cfg


def test_one_step_of_each_stage_on_a_coil_store(coil_store, tmp_path):
    from kmtr.stage3 import train_stage3
    from kmtr.train.stage1 import train_stage1
    from kmtr.train.stage2 import train_stage2

    out = train_stage1(_config(coil_store, tmp_path, "mc"))
    assert out["global_step"] == 1 and np.isfinite(out["last"]["loss"])
    assert out["model"].kspace.coils == C and out["model"].kspace.embed.proj.in_features == 2 * C * 5 * 8 * 8
    from kmtr.train.stage1 import _png_callback  # the epoch-end picture: SENSE-1 of the MAE's coil k-space

    raw = next(iter(DataLoader(KSpaceDataset(coil_store, "train", "vista_r4", frames=5), batch_size=1)))
    _png_callback(tmp_path, torch.device("cpu"))(0, out["model"], raw)
    assert (tmp_path / "recon_epoch0001.png").exists()
    assert train_stage2(_config(coil_store, tmp_path, "mc", stage="2"))["global_step"] == 1
    s3 = train_stage3(_config(coil_store, tmp_path, "mc", stage="3", task="regression", method="kmtr"))
    assert s3["global_step"] == 1
    from kmtr.eval.predict import load_run, predict_split

    run = load_run(s3["run_dir"])  # evaluation reads the stored noise: the same predictions twice
    first, again = predict_split(run, "validation"), predict_split(run, "validation")
    assert first.pred.shape == (1, run.targets["out_dim"]) and np.array_equal(first.pred, again.pred)
    # reconstruction from coil k-space: the decoder predicts coil-free k-space, its inverse FFT is
    # compared with the SENSE-1 image
    rec = train_stage3(_config(coil_store, tmp_path, "mc", stage="3", task="reconstruction", method="kmtr"))
    assert rec["global_step"] == 1 and np.isfinite(rec["last"]["loss"])
    rec_pred = predict_split(load_run(rec["run_dir"]), "validation")
    assert rec_pred.pred.shape == rec_pred.truth["image"].shape and np.isfinite(rec_pred.pred).all()
    # every registered method reads coil stores (the baselines: tests/test_kmtr_multicoil_baselines.py);
    # a method registered without ``multicoil`` is still refused with one line
    from kmtr.methods import METHODS

    assert all(spec.multicoil for spec in METHODS.values())
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(METHODS, "resnet50", METHODS["resnet50"]._replace(multicoil=False))
        with pytest.raises(ConfigError, match="does not read stores with coils"):
            train_stage3(_config(coil_store, tmp_path, "mc", stage="3", task="regression", method="resnet50"))


def test_info_shows_coils(coil_store, store):  # noqa: F811
    res = CliRunner().invoke(app, ["info", coil_store])
    assert res.exit_code == 0, res.output
    assert "4 coils (birdcage), SNR 20 dB" in res.output and "SENSE-1" in res.output
    res = CliRunner().invoke(app, ["info", store])
    assert res.exit_code == 0 and "single-coil" in res.output


def test_float16_store_with_coils_decodes_its_maps(tmp_path):
    kw: dict = {"n": 2, "t": 5, "n_coils": 2, "status": [1, 1], "split": [0, 0]}
    half = KSpaceDataset(write_store(tmp_path / "f16.zarr", storage="float16", **kw), "all", "vista_r4")
    full = KSpaceDataset(write_store(tmp_path / "c64.zarr", **kw), "all", "vista_r4")
    assert half.info.coils.maps_storage == "float16" and full.info.coils.maps_storage == "complex64"
    a, b = half[0]["maps"], full[0]["maps"]
    assert a.dtype == torch.complex64 and a.shape == b.shape == (2, 9, 32, 32)
    assert float((a - b).abs().max()) < 1e-3  # float16 pairs of |S| <= 1
