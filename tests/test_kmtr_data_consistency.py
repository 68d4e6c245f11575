"""The reconstruction with the acquired k-space samples put back (kmtr.data.data_consistent_image) and
where the evaluation shows it: its own row beside the decoder's output and the zero-filled input."""

from __future__ import annotations

import numpy as np
import torch

from kmtr.analysis.predictions import Predictions
from kmtr.coils import coil_kspace
from kmtr.data import data_consistent_image, zero_filled_image
from kmtr.fft import fft2c
from kmtr.methods import method_label
from kmtr.tasks.reconstruction import DATA_CONSISTENT, Reconstruction, compare_reconstruction

torch.set_num_threads(1)
SHAPE = (2, 3, 4, 16, 16)  # (B, S, T, H, W)


def _complex(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


def _mask(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(SHAPE[:3] + SHAPE[-1:], generator=g) < 0.3  # (B, S, T, W)


def test_single_coil_keeps_the_acquired_lines_and_the_prediction_elsewhere():
    image, guess, mask = _complex(SHAPE, 0), _complex(SHAPE, 1), _mask(2)
    batch = {"kspace": fft2c(image), "mask": mask}
    out = data_consistent_image(guess, batch)
    k_out, sampled = fft2c(out), mask[..., None, :].expand(SHAPE)
    torch.testing.assert_close(k_out[sampled], batch["kspace"][sampled], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_out[~sampled], fft2c(guess)[~sampled], rtol=1e-5, atol=1e-5)
    # a perfect prediction stays perfect; predicting nothing gives the zero-filled image
    torch.testing.assert_close(data_consistent_image(image, batch), image, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(data_consistent_image(torch.zeros_like(image), batch), zero_filled_image(batch),
                               rtol=1e-5, atol=1e-5)


def test_coils_keep_each_coils_acquired_lines_and_combine_as_the_target():
    """SENSE-1 of each coil's k-space with its acquired lines kept and the prediction's coil k-space
    elsewhere, against numpy's FFT; with the true image (noise-free) the result is the image."""
    c = 3
    image, guess, mask = _complex(SHAPE, 3), _complex(SHAPE, 4), _mask(5)
    maps = _complex((SHAPE[0], c, SHAPE[1], *SHAPE[-2:]), 6)
    maps = maps / maps.abs().pow(2).sum(dim=1, keepdim=True).sqrt()  # sum_c |S_c|^2 = 1
    noisy = coil_kspace(fft2c(image), maps, sigma=0.1, generator=torch.Generator().manual_seed(7))
    batch = {"kspace": noisy, "mask": mask, "maps": maps}
    out = data_consistent_image(guess, batch).numpy()

    def fft(x: np.ndarray) -> np.ndarray:
        return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))

    def ifft(k: np.ndarray) -> np.ndarray:
        return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))

    s = maps.numpy()[:, :, :, None]  # (B, C, S, 1, H, W)
    m = mask.numpy()[:, None, :, :, None, :]
    expected = (np.conj(s) * ifft(np.where(m, noisy.numpy(), fft(s * guess.numpy()[:, None])))).sum(axis=1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    clean = {**batch, "kspace": coil_kspace(fft2c(image), maps)}
    torch.testing.assert_close(data_consistent_image(image, clean), image, rtol=1e-4, atol=1e-4)


def _predictions(n: int = 6) -> Predictions:
    rng = np.random.default_rng(0)
    target = rng.random((n, 2, 2, 16, 16)).astype(np.float32)
    noise = rng.standard_normal(target.shape).astype(np.float32)
    return Predictions("reconstruction", np.arange(n), target + 0.3 * noise,
                       {"image": target, "zero_filled": target + 0.6 * noise},
                       {DATA_CONSISTENT: target + 0.1 * noise})


def test_the_report_shows_the_data_consistent_row_beside_the_decoder_and_zero_filling(tmp_path):
    from kmtr.tasks.base import EvalContext

    test = _predictions()
    ctx = EvalContext(run=None, test=test, out=tmp_path, tag="kmtr-reconstruction", predict=lambda s: test,
                      n_boot=10, seed=0)
    res = Reconstruction().evaluate(ctx)
    summary, table = res["summary"], res["tables"]["reconstruction"]
    assert summary["input"].tolist() == ["reconstruction", "reconstruction + acquired samples (data consistency)",
                                         "zero-filled"]
    # less noise, higher PSNR: the rows are the arrays they name
    assert (table["data_consistent_psnr"] > table["psnr"]).all() and (table["psnr"] > table["zero_filled_psnr"]).all()
    assert (tmp_path / "kmtr-reconstruction_recon.png").stat().st_size > 1000
    (heading, paired), = res["sections"]
    assert "PSNR = 10·log10" in heading
    assert paired["input"].tolist() == summary["input"].tolist()[:2]  # each against zero-filling
    assert (paired["subjects above zero-filled"] == "6 of 6").all() and (paired["p (Wilcoxon)"] < 0.05).all()
    # predictions without the variant (an older cache) report the two rows they have
    bare = Predictions(test.task, test.rows, test.pred, test.truth)
    res = Reconstruction().evaluate(EvalContext(None, bare, tmp_path, "bare", lambda s: bare, 10, 0))
    assert res["summary"]["input"].tolist() == ["reconstruction", "zero-filled"]
    assert "data_consistent_psnr" not in res["tables"]["reconstruction"]


def test_the_comparison_has_a_data_consistent_column_per_method_tested_against_kmtr():
    comp = compare_reconstruction({"kmtr": _predictions(), "mae": _predictions()}, n_boot=10, seed=0)
    assert comp.values.columns.tolist() == ["kmtr", "kmtr:data_consistent", "mae", "mae:data_consistent",
                                            "zero_filled"]
    psnr = comp.values.iloc[0]
    assert psnr["kmtr:data_consistent"] > psnr["kmtr"] > psnr["zero_filled"]
    assert "kmtr:data_consistent" in set(comp.paired["method"])
    assert method_label("kmtr:data_consistent") == "k-MTR + data consistency"
    assert method_label("mae:data_consistent") == f"{method_label('mae')} + data consistency"


def test_prediction_caches_keep_the_variants_and_an_older_layout_is_predicted_again(tmp_path, monkeypatch):
    """``predictions_<split>.npz`` stores the variants; a cache written before them (no ``layout``) is
    predicted again from the checkpoint, or read as it is when there is no checkpoint (nnU-Net runs)."""
    import json
    import os
    from types import SimpleNamespace

    from kmtr.eval import benchmark

    preds, calls = _predictions(), []

    def predict_split(run, split, device):
        calls.append(split)
        return preds

    monkeypatch.setattr(benchmark, "load_run", lambda path, device, data: SimpleNamespace(targets={"names": []}))
    monkeypatch.setattr(benchmark, "predict_split", predict_split)
    run = tmp_path / "kmtr-reconstruction"
    run.mkdir()
    (run / "last.pt").write_bytes(b"checkpoint")
    cache = run / "predictions_test.npz"
    np.savez(cache, task=np.asarray("reconstruction"), rows=preds.rows, pred=preds.pred,
             targets=np.asarray(json.dumps({"names": []})), **{f"truth_{k}": v for k, v in preds.truth.items()})
    os.utime(cache, (os.path.getmtime(run / "last.pt") + 10,) * 2)  # newer than the checkpoint
    got, _ = benchmark.cached_predictions(run)
    assert calls == ["test"] and DATA_CONSISTENT in got.variants  # the old layout was predicted again
    got, _ = benchmark.cached_predictions(run)
    assert calls == ["test"]  # ... and is now read back, variants included
    np.testing.assert_array_equal(got.variants[DATA_CONSISTENT], preds.variants[DATA_CONSISTENT])
    np.testing.assert_array_equal(got.pred, preds.pred)
    (run / "last.pt").unlink()
    np.savez(cache, task=np.asarray("reconstruction"), rows=preds.rows, pred=preds.pred,
             targets=np.asarray(json.dumps({"names": []})), **{f"truth_{k}": v for k, v in preds.truth.items()})
    got, _ = benchmark.cached_predictions(run)
    assert calls == ["test"] and got.variants == {}  # no checkpoint: the cache is all there is
