"""The stage-II retrieval probe's pure parts (kmtr.eval.retrieval_probe): the between-subject
fraction (whole and accumulated in batches), retrieval through a ridge map fitted on training pairs,
and the phenotype ridge against the mean guess.
The probe on a trained checkpoint is tested with the stage fixtures (tests/test_kmtr_stages.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kmtr.eval.retrieval_probe import SubjectMoments, between_subject_fraction, ridge_phenotype, ridge_retrieval


def test_between_subject_fraction_limits_and_batches():
    rng = np.random.default_rng(0)
    common = rng.normal(size=(1, 4, 5))
    assert between_subject_fraction(np.repeat(common, 7, axis=0)) == pytest.approx(0.0, abs=1e-12)
    # mean over subjects exactly zero: all of the energy is between subjects
    x = rng.normal(size=(6, 4, 5))
    assert between_subject_fraction(x - x.mean(axis=0)) == pytest.approx(1.0)
    # a common part with 9 times the energy of the subject part: 1 / 10
    signs = np.array([1.0, -1.0] * 50)[:, None]
    y = 3.0 * np.ones((100, 1)) + signs
    assert between_subject_fraction(y) == pytest.approx(0.1)
    # batches do not matter
    z = common + 0.3 * rng.normal(size=(11, 4, 5))
    moments = SubjectMoments()
    for part in (z[:3], z[3:4], z[4:]):
        moments.add(part)
    assert moments.fraction() == pytest.approx(between_subject_fraction(z), rel=1e-12)
    assert math.isnan(between_subject_fraction(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="two subjects"):
        between_subject_fraction(z[:1])
    with pytest.raises(ValueError, match="two subjects"):
        SubjectMoments().fraction()


def test_ridge_retrieval_finds_linearly_related_partners_only():
    rng = np.random.default_rng(1)
    n_train, n_test, da, db = 80, 30, 40, 12
    mix = rng.normal(size=(da, db))
    a = rng.normal(size=(n_train + n_test, da))
    b = a @ mix + 0.05 * rng.normal(size=(n_train + n_test, db))  # b is a linear function of a
    acc = ridge_retrieval(a[:n_train], b[:n_train], a[n_train:], b[n_train:], alpha=1.0)
    assert acc["a2b_top1"] == 1.0 and acc["b2a_top1"] == 1.0
    # unrelated partners: about chance (1 / 30 for top-1, 5 / 30 for top-5)
    c = rng.normal(size=(n_train + n_test, db))
    acc = ridge_retrieval(a[:n_train], c[:n_train], a[n_train:], c[n_train:], alpha=1.0)
    assert acc["a2b_top1"] <= 0.2 and acc["a2b_top5"] <= 0.5
    # wide features (more of them than training subjects, the dual form), on a 10-dimensional subspace
    latent = rng.normal(size=(n_train + n_test, 10))
    wide = latent @ rng.normal(size=(10, 500))
    target = latent @ rng.normal(size=(10, db))
    acc = ridge_retrieval(wide[:n_train], target[:n_train], wide[n_train:], target[n_train:], alpha=1e-3)
    assert acc["a2b_top1"] == 1.0


def test_cli_refuses_a_missing_or_unsuitable_checkpoint(tmp_path, capsys):
    import torch

    from kmtr.eval.retrieval_probe import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nothing.pt")])
    assert exit_info.value.code == 2 and "no checkpoint" in capsys.readouterr().err
    # a checkpoint without both encoders (a stage-III one holds net.encoder.*): one line, exit 2
    (tmp_path / "stage3").mkdir()
    torch.save({"model": {"net.encoder.cls_token": torch.zeros(1, 1, 4)}, "config": {}}, tmp_path / "stage3" / "last.pt")
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "stage3")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "stage-I" in err and err.count("\n") == 1


def test_ridge_phenotype_beats_the_mean_guess_only_when_the_feature_holds_the_target():
    rng = np.random.default_rng(2)
    n, d = (60, 20, 30), 8
    x = [rng.normal(size=(k, d)) for k in n]
    w = rng.normal(size=d)
    y = [xi @ w + 0.1 * rng.normal(size=len(xi)) + 100.0 for xi in x]
    y[0][:5] = np.nan  # missing targets are left out, in every split
    y[2][:4] = np.nan
    fit = ridge_phenotype(x[0], y[0], x[1], y[1], x[2], y[2])
    assert fit["n_test"] == 26
    assert fit["mae"] < 0.2 * fit["mean_guess_mae"] and fit["p"] < 1e-4
    assert fit["alpha"] <= 10.0  # a clean linear target: the validation split picks a small penalty
    base = np.abs(np.nanmean(y[0]) - y[2][4:]).mean()
    assert fit["mean_guess_mae"] == pytest.approx(base)  # the training mean of the known targets
    # a feature unrelated to the target: no better than the mean guess
    z = [rng.normal(size=(k, d)) for k in n]
    fit = ridge_phenotype(z[0], y[0], z[1], y[1], z[2], y[2])
    assert fit["mae"] > 0.8 * fit["mean_guess_mae"] and fit["p"] > 1e-3
    with pytest.raises(ValueError, match="known targets"):
        ridge_phenotype(x[0], y[0], x[1], np.full(len(x[1]), np.nan), x[2], y[2])
