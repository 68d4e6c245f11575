"""The reconstruction decoder's ceiling (kmtr.analysis.recon_ceiling): the best affine subspace of a given
width for the true k-space tokens, and the PSNR of the true test k-space projected onto it."""

from __future__ import annotations

import numpy as np
import pytest
from kmtr_fixtures import write_store

from kmtr.analysis.metrics import reconstruction_metrics
from kmtr.analysis.recon_ceiling import _split_arrays, principal_subspace, project_tokens, reconstruction_ceiling


def test_principal_subspace_is_the_best_affine_fit_and_batches_do_not_matter():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=12)
    directions = np.linalg.qr(rng.normal(size=(12, 3)))[0]
    tokens = mean + (rng.normal(size=(200, 3)) * [5.0, 2.0, 0.5]) @ directions.T  # rank 3 around mean
    m, basis, variances = principal_subspace([tokens[:70], tokens[70:]], 3)
    m1, basis1, _ = principal_subspace([tokens], 3)
    np.testing.assert_allclose(m, m1, atol=1e-12)
    np.testing.assert_allclose(np.abs(basis.T @ basis1), np.eye(3), atol=1e-8)  # same subspace, any sign
    np.testing.assert_allclose(project_tokens(tokens, m, basis), tokens, atol=1e-9)  # rank 3: exact
    assert variances[3:].max() < 1e-9 and variances[0] > variances[1] > variances[2]
    # two directions: the error is the weakest direction's, and less than any other 2-D subspace's
    err2 = ((project_tokens(tokens, m, basis[:, :2]) - tokens) ** 2).sum(axis=1).mean()
    np.testing.assert_allclose(err2, variances[2], rtol=1e-6)
    other = np.linalg.qr(basis[:, :2] + 0.1 * rng.normal(size=(12, 2)))[0]
    assert ((project_tokens(tokens, m, other) - tokens) ** 2).sum(axis=1).mean() > err2
    with pytest.raises(ValueError, match="dims"):
        principal_subspace([tokens], 13)


def test_ceiling_is_exact_at_full_width_and_rises_with_width(tmp_path):
    # rows 0-3 train, 4 validation, 5 test (all complete)
    store = write_store(tmp_path / "s.zarr", n=6, t=5, h=16, w=16, status=[1] * 6)
    patch = (5, 4, 4)  # 5 · 4 · 4 · 2 = 160 values per token
    table = reconstruction_ceiling(store, [0, 8, 40, 160], patch=patch, frames=5)
    assert table["dims"].tolist() == [0, 8, 40, 160]
    psnr = table["psnr"].to_numpy()
    assert np.all(np.diff(psnr) > 0), psnr
    assert psnr[-1] > 80  # the full space reproduces the test k-space (float rounding only)
    assert table["energy_kept"].iloc[-1] == pytest.approx(1.0) and table["energy_kept"].iloc[0] == 0.0
    # the zero-filled reference is the evaluation's, on the same subjects
    [(_, target, zero_filled, _)] = list(_split_arrays(store, "test", "vista_r4", 5, patch))
    expected = reconstruction_metrics(zero_filled, target)["psnr"].mean()
    assert table["zero_filled_psnr"].iloc[0] == pytest.approx(expected)
