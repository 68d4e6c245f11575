"""The baselines on stores with coils (issue 25, docs/multicoil.md "The trainer on a store with
coils"): image baselines read |SENSE-1| of the coil k-space with the true maps, ResNet-50^k reads
2·C channels per view, the spectrum methods sum the power over coils, nnU-Net's export writes
|SENSE-1| with the stored noise; one training step and a prediction of each on a coil store."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from kmtr_fixtures import TINY_OVERRIDES, write_store
from torch.utils.data import DataLoader

from kmtr.config import TrainConfig, apply_overrides, preset
from kmtr.data import KSpaceDataset, prepare_batch
from kmtr.fft import ifft2c
from kmtr.methods import METHODS, build_task_model
from kmtr.models.baselines import ResNetBaseline, UNetBaseline, baseline_input, to_channels
from kmtr.models.spectrum import ring_index, spectrum_features

torch.set_num_threads(1)
C = 3


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> str:
    """6 subjects, 9 × 10 × 32 × 32, 3 birdcage coils at 20 dB (rows 0-3 train, 4 validation)."""
    return write_store(tmp_path_factory.mktemp("mcb") / "n.zarr", n_coils=C, snr_db=20.0)


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> str:
    """4 noise-free subjects with 3 coils (rows 0-1 train, 2 validation, 3 test)."""
    return write_store(tmp_path_factory.mktemp("mcb0") / "c.zarr", n=4, n_coils=C, snr_db=None,
                       status=[1, 1, 1, 1], split=[0, 0, 1, 2])


def _raw_and_batch(store: str, n: int = 2) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    raw = next(iter(DataLoader(KSpaceDataset(store, "train", "vista_r4", frames=5), batch_size=n)))
    return raw, prepare_batch(dict(raw), "cpu")


def _sense1_by_hand(coil_k: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Σ_c conj(S_c) · ifft2c(k_c), written out (shifted FFT path, not kmtr.coils' checkerboard)."""
    return (maps[:, :, :, None].conj() * ifft2c(coil_k)).sum(dim=1)


def _net_input(model: torch.nn.Module, inner: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """What ``inner`` (the CNN inside a baseline) receives when ``model`` (a TaskModel) reads ``batch``."""
    seen: list[torch.Tensor] = []
    handle = inner.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            model.outputs(batch)
    finally:
        handle.remove()
    return seen[0]


def _config(data: str, out: Path, method: str, task: str, **extra: str) -> TrainConfig:
    cfg = preset("tiny")
    apply_overrides(cfg, {**TINY_OVERRIDES, "data.data": data, "data.batch_size": "2", "optim.epochs": "1",
                          "run.max_steps": "1", "run.out_dir": str(out), "run.name": method, "stage": "3",
                          "task": task, "method": method, **extra})
    return cfg


def _task_model(store: str, method: str, task: str, out: Path, batch: dict[str, torch.Tensor]):
    ds = KSpaceDataset(store, "train", "vista_r4", frames=5)
    targets = {"out_dim": 6 if task == "segmentation" else 3}
    from kmtr.tasks import get_task

    cfg = _config(store, out, method, task)
    if task != "segmentation":
        targets = get_task(task).targets(cfg, ds)
    return build_task_model(cfg, ds.shape, ds.info.view_ids, targets, coils=ds.coils)


@pytest.mark.parametrize("method", ["resnet50", "resnet50_u", "unet", "unet_u"])
def test_image_baselines_read_sense1_magnitude(noisy, clean, tmp_path, method):
    """The CNN's input is |SENSE-1| of the (normalised, noisy) coil k-space, fully sampled or
    zero-filled; on a noise-free store the fully sampled one is |x|, the coil-free magnitude image."""
    task = "segmentation" if method.startswith("unet") else "regression"
    for store in (noisy, clean):
        raw, batch = _raw_and_batch(store)
        assert batch["kspace"].shape[:2] == (2, C)
        model = _task_model(store, method, task, tmp_path, batch)
        inner = model.net.net
        seen = _net_input(model, inner, batch)
        k, maps = batch["kspace"], raw["maps"]
        if method.endswith("_u"):
            k = k * batch["mask"][:, None, ..., None, :].to(k.dtype)
        want = _sense1_by_hand(k, maps).abs()  # (B, S, T, H, W)
        if method.startswith("unet"):
            want = want.reshape(-1, 1, *want.shape[-2:])  # one (slice, frame) image per U-Net case
        assert seen.shape == want.shape
        torch.testing.assert_close(seen, want, atol=1e-5 * float(want.max()), rtol=1e-4)
        if store == clean and not method.endswith("_u"):  # noise-free: |SENSE-1| = |x| (same scale)
            x = ifft2c(raw["kspace"]).abs() / batch["scale"].reshape(-1, 1, 1, 1, 1)
            x = x.reshape(want.shape)
            torch.testing.assert_close(seen, x, atol=1e-5 * float(x.max()), rtol=1e-4)
        if store == noisy:  # the noisy SENSE-1 image is not |x|: the baselines see the noise
            x = (ifft2c(raw["kspace"]).abs() / batch["scale"].reshape(-1, 1, 1, 1, 1))
            full = _sense1_by_hand(batch["kspace"], maps).abs()
            assert float((full - x).abs().mean()) > 1e-3 * float(x.max())


def test_image_baselines_match_the_image_the_mae_reads(noisy):
    """baseline_input('image') of coil k-space is batch['image'] (the image MAE's SENSE-1 input)."""
    _, batch = _raw_and_batch(noisy)
    img = baseline_input(batch["kspace"], batch["mask"], "image", maps=batch["maps"])
    torch.testing.assert_close(img, batch["image"], atol=1e-5 * float(batch["image"].abs().max()), rtol=1e-4)
    with pytest.raises(ValueError, match="coil maps"):
        baseline_input(batch["kspace"], batch["mask"], "image")


def test_resnet50_k_reads_2c_channels_per_view(noisy, tmp_path):
    raw, batch = _raw_and_batch(noisy)
    model = _task_model(noisy, "resnet50_k", "regression", tmp_path, batch)
    seen = _net_input(model, model.net.net, batch)
    b, s, t, h, w = raw["kspace"].shape
    assert seen.shape == (b, 2 * C * s, t, h, w)
    zf = batch["kspace"] * batch["mask"][:, None, ..., None, :].to(batch["kspace"].dtype)
    for view, coil in ((0, 0), (4, 2), (8, 1)):
        ch = 2 * (view * C + coil)  # ordered (view, coil, re/im)
        assert torch.equal(seen[:, ch], zf[:, coil, view].real) and torch.equal(seen[:, ch + 1], zf[:, coil, view].imag)
    assert torch.equal(seen, to_channels(zf))
    # k-MTR's normalisation: the RMS over every coil's sampled lines is 1
    m = batch["mask"][:, None, ..., None, :].expand_as(zf)
    rms = torch.sqrt(torch.stack([zf[i][m[i]].abs().square().mean() for i in range(b)]))
    torch.testing.assert_close(rms, torch.ones(b), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="3-coil k-space"):
        model.net(raw["kspace"], raw["mask"])
    # one coil: exactly the single-coil layout
    one = torch.randn(2, 1, 9, 5, 16, 16, dtype=torch.complex64)
    assert torch.equal(to_channels(one), to_channels(one[:, 0]))


def test_baselines_built_for_coils_have_the_right_widths():
    assert ResNetBaseline("kspace_under", 9, 2, width=0.0625, coils=4).net.conv1.in_channels == 2 * 4 * 9
    assert ResNetBaseline("image", 9, 2, width=0.0625, magnitude=True, coils=4).net.conv1.in_channels == 9
    assert ResNetBaseline("image_under", 9, 2, width=0.0625, coils=4).net.conv1.in_channels == 2 * 9
    unet = UNetBaseline("image", channels=(4, 8), magnitude=True)
    k = torch.randn(1, 2, 9, 2, 16, 16, dtype=torch.complex64)
    maps = torch.randn(1, 2, 9, 16, 16, dtype=torch.complex64)
    assert unet(k, torch.ones(1, 9, 2, 16, dtype=torch.bool), maps).shape == (1, 9, 6, 2, 16, 16)


def test_spectrum_sums_the_power_over_coils():
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, C, 3, 4, 16, 16, dtype=torch.complex64, generator=g)
    mask = torch.rand(2, 3, 4, 16, generator=g) > 0.5
    rings = ring_index(16, 16, 5)
    got = spectrum_features(k, mask, rings, 5)
    assert got.shape == spectrum_features(k[:, 0], mask, rings, 5).shape
    # by hand: per ring, log of the mean over sampled points of Σ_c |k_c|² (static, frames summed)
    power = (k.abs() ** 2).sum(dim=1) * mask[..., None, :]  # (B, S, T, H, W)
    counts = mask[..., None, :].expand(power.shape).float()
    for ring in range(5):
        sel = rings == ring
        want = torch.log(power[..., sel].sum(dim=(2, 3)) / counts[..., sel].sum(dim=(2, 3)).clamp_min(1) + 1e-8)
        torch.testing.assert_close(got[:, :15].reshape(2, 3, 5)[..., ring], want, rtol=1e-5, atol=1e-5)
    # one coil is the single-coil descriptor, bit for bit
    assert torch.equal(spectrum_features(k[:, :1], mask, rings, 5), spectrum_features(k[:, 0], mask, rings, 5))


@pytest.mark.slow
def test_one_step_and_prediction_of_each_baseline_on_a_coil_store(noisy, tmp_path):
    from kmtr.eval.predict import load_run, predict_split
    from kmtr.stage3 import train_stage3

    cases = [("resnet50", "regression"), ("resnet50_u", "classification"), ("resnet50_k", "regression"),
             ("unet", "segmentation"), ("unet_u", "segmentation"), ("spectrum_ridge", "regression"),
             ("kmtr_spectrum", "regression")]
    for method, task in cases:
        extra = {"init": "scratch"} if METHODS[method].init_from else {}
        if task == "classification":
            extra["heads.diseases"] = "CAD"
        out = train_stage3(_config(noisy, tmp_path, method, task, **extra))
        assert np.isfinite(out["last"]["loss"]), method
        run = load_run(out["run_dir"])
        first, again = predict_split(run, "validation"), predict_split(run, "validation")
        assert first.pred.shape[0] == 1 and np.isfinite(first.pred.astype(np.float64)).all(), method
        assert np.array_equal(first.pred, again.pred), method  # the stored noise: the same predictions


def test_spectrum_ridge_features_read_the_stored_coil_kspace(noisy):
    from kmtr.models.spectrum import KSpaceSpectrum
    from kmtr.train.spectrum_ridge import split_features

    fresh = KSpaceDataset(noisy, "train", "vista_r4", frames=5, coil_noise="fresh")
    spectrum = KSpaceSpectrum(fresh.shape, 6)
    feats = split_features(spectrum, fresh, batch=3)  # a fresh-noise Dataset: the stored draw is used
    _, batch = _raw_and_batch(noisy, n=4)
    torch.testing.assert_close(torch.from_numpy(feats), spectrum.raw(batch["kspace"], batch["mask"]).double())


def test_nnunet_export_writes_sense1_magnitudes_with_the_stored_noise(tmp_path):
    from kmtr.nnunet.export import DATASET, case_id, export_dataset

    store = write_store(tmp_path / "s.zarr", n=4, t=4, n_coils=C, snr_db=20.0, status=[1] * 4, split=[0, 0, 1, 2])
    for kind in ("image", "image_under"):
        exp = export_dataset(store, tmp_path / kind, kind, "vista_r4", frames=2)
        ds = KSpaceDataset(store, "all", "vista_r4", frames=2)
        for row, s, j, folder in ((0, 0, 1, "imagesTr"), (3, 4, 0, "imagesTs")):
            raw = next(iter(DataLoader(torch.utils.data.Subset(ds, [row]), batch_size=1)))
            b = prepare_batch(dict(raw), "cpu")
            k = b["kspace"] * b["scale"].reshape(-1, 1, 1, 1, 1, 1)  # store units
            if kind == "image_under":
                k = k * b["mask"][:, None, ..., None, :].to(k.dtype)
            want = _sense1_by_hand(k, raw["maps"]).abs()[0, s, j].numpy()
            got = np.asarray(nib.load(str(tmp_path / kind / DATASET / folder
                                          / f"{case_id(row, s, int(ds.frames[j]))}_0000.nii.gz")).dataobj).T
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * want.max())
        meta = (tmp_path / kind / DATASET / "dataset.json").read_text()
        assert "stored (evaluation) draw" in meta and "SENSE-1" in meta and exp.cases["test"]


def test_benchmark_method_table_says_what_each_baseline_reads_on_coil_stores():
    from kmtr.eval.benchmark import method_table

    table = method_table(["resnet50", "resnet50_u", "resnet50_k", "unet", "unet_u", "nnunet", "nnunet_u",
                          "spectrum_ridge", "kmtr_spectrum"]).set_index("method")["features"]
    for m in ("resnet50", "resnet50_u", "unet", "unet_u", "nnunet", "nnunet_u"):
        assert "SENSE-1 magnitude" in table[m] and "true maps" in table[m] and "|" not in table[m], m  # no pipe: markdown cells
    assert "stored noise" in table["nnunet"] and "zero-filled" in table["nnunet_u"]
    assert "2C channels per view" in table["resnet50_k"]
    assert "summed over coils" in table["spectrum_ridge"] and "summed over coils" in table["kmtr_spectrum"]
