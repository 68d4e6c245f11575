"""The contract between the two halves: the trainer reads a store that the simulator built.

``simulated_store`` (conftest.py, once per session) is a real build: ``kspace-sim demo`` phantom
subjects, ``kspace-sim build`` with its default mask (VISTA, R = 4, bank of 16 patterns) and labels
(18 phenotypes from the segmentations, diseases from the cohort's participant table). Every stage
and task of ``kmtr train`` runs on it with a tiny model, then ``kmtr eval`` writes its report.
Anything one half writes that the other does not read as meant (a column name, the label map, a
split code, the mask layout, the FFT convention) fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from typer.testing import CliRunner

from kmtr_fixtures import TINY_OVERRIDES
from simulated_store import CROP, FRAMES, N_SUBJECTS, TEST_SIZE

pytestmark = [pytest.mark.contract, pytest.mark.slow]

torch.set_num_threads(1)

#: the phenotype names of REFERENCES.md, in its order
REFERENCE_PHENOTYPES = (
    "LVEDV (mL), LVESV (mL), LVSV (mL), LVEF (%), LVCO (L/min), LVM (g), RVEDV (mL), RVESV (mL), RVSV (mL), "
    "RVEF (%), LAV max (mL), LAV min (mL), LASV (mL), LAEF (%), RAV max (mL), RAV min (mL), RASV (mL), RAEF (%)"
).split(", ")
#: the trainer's segmentation classes (REFERENCES.md)
REFERENCE_CLASSES = {"0": "background", "1": "LV blood pool", "2": "LV myocardium", "3": "RV blood pool",
                     "4": "LA", "5": "RA"}
#: diseases with positive and negative training subjects in the 10-subject demo store (seed 0)
DISEASES = "high_blood_pressure,hypertension"


def test_the_trainer_reads_what_the_simulator_wrote(simulated_store):
    from kmtr.config import TrainConfig
    from kmtr.data import KSpaceDataset, frame_indices
    from kmtr.fft import ifft2c
    from kmtr.store import open_store, read_store_info

    url = simulated_store.store
    info = read_store_info(open_store(url), url)
    assert (info.n, info.s, info.t, info.h, info.w) == (N_SUBJECTS, 9, FRAMES, CROP, CROP)
    assert info.masks == ("vista_r4",) and info.storage == "complex64"
    assert info.view_names == ("sax0", "sax1", "sax2", "sax3", "sax4", "sax5", "la_2ch", "la_3ch", "la_4ch")
    assert info.view_ids == (0,) * 6 + (1,) * 3
    assert info.label_map == REFERENCE_CLASSES
    assert list(info.phenotype_columns) == REFERENCE_PHENOTYPES
    assert info.has_seg and info.has_phenotypes and info.has_diseases
    # the trainer's default classification labels are columns the simulator writes
    assert set(TrainConfig().heads.diseases.split(",")) <= set(info.disease_columns)
    assert "fftshift(fft2(ifftshift(x), norm='ortho'))" in info.fft_convention
    assert (info.status == 1).all()
    assert [len(info.rows(s)) for s in ("train", "validation", "test")] == [N_SUBJECTS - TEST_SIZE - 1, 1, TEST_SIZE]
    from kspace_sim.sharing.verify import verify

    checked = verify(url)
    assert checked.ok and checked.checked_subjects == N_SUBJECTS, [str(p) for p in checked.problems]
    g = zarr.open_group(url, mode="r")
    assert g["subjects/checksum"].shape == (N_SUBJECTS, 16) and g["subjects/checksum"].attrs["algorithm"] == "xxh3_128"

    ds = KSpaceDataset(url, "train", "vista_r4", frames=5)
    keep = frame_indices(FRAMES, 5)
    sample = ds[0]
    row = int(sample["row"])
    np.testing.assert_array_equal(sample["kspace"].numpy(), g["kspace"][row][:, keep])
    mask = sample["mask"].numpy()
    assert mask.shape == (9, 5, CROP) and (mask.sum(-1) == CROP // 4).all()  # VISTA: exactly W / R lines
    # the simulator's views are magnitudes in [0, 1]: so is the image the trainer computes
    assert 0.9 < float(ifft2c(sample["kspace"]).abs().max()) <= 1.0 + 1e-4
    seg = sample["seg"].numpy()
    assert set(np.unique(seg[:6])) == {0, 1, 2, 3} and 4 in seg[6] and {4, 5} <= set(np.unique(seg[8]))
    assert sample["seg_present"].tolist() == [True] * 7 + [False, True]  # no 3ch segmentation
    np.testing.assert_array_equal(sample["phenotypes"].numpy(), g["labels/phenotypes"][row])
    lvedv, lvef = sample["phenotypes"][0].item(), sample["phenotypes"][3].item()
    assert 50 < lvedv < 300 and 30 < lvef < 80


def _train_args(store: str, out: Path) -> list[str]:
    args = ["train", "--preset", "tiny", "--data", store, "--epochs", "1", "--batch-size", "2", "--out", str(out),
            "--name", "contract", "--diseases", DISEASES]
    for key, value in TINY_OVERRIDES.items():
        args += ["--set", f"{key}={value}"]
    return args


def test_every_stage_and_task_trains_and_eval_reports(simulated_store, tmp_path, monkeypatch):
    from collections import Counter

    from cli.kmtr_app import app
    from kmtr.data import KSpaceDataset

    reads: Counter[tuple[str, int]] = Counter()
    original = KSpaceDataset._read

    def counting(self, name, row):
        reads[name, row] += 1
        return original(self, name, row)

    monkeypatch.setattr(KSpaceDataset, "_read", counting)
    runner = CliRunner()
    res = runner.invoke(app, _train_args(simulated_store.store, tmp_path))
    assert res.exit_code == 0, res.output
    # the tiny preset caches samples: its six stages read each array of each subject from the store once
    assert reads and max(reads.values()) == 1, reads.most_common(3)
    exp = tmp_path / "contract"
    for run in ("stage1", "stage2", "stage3-regression", "stage3-classification", "stage3-segmentation",
                "stage3-reconstruction"):
        ckpt = torch.load(exp / run / "last.pt", weights_only=False)
        assert ckpt["global_step"] > 0, run
        metrics = pd.read_csv(exp / run / "metrics.csv")
        assert np.isfinite(metrics.loc[metrics["name"] == "loss", "value"]).all(), run

    reads.clear()
    res = runner.invoke(app, ["eval", str(exp), "--n-boot", "20"])
    assert res.exit_code == 0, res.output
    # the four runs' predictions share one cache per reads (with / without segmentations), the stage-II
    # section reads its own: a test subject's k-space at most 3 times (5 without the shared cache)
    assert max(n for (name, _), n in reads.items() if name == "kspace") <= 3, reads.most_common(3)
    report = exp / "report"
    text = (report / "report.md").read_text()
    for heading in ("Regression", "Classification", "Segmentation", "Reconstruction", "Stage II"):
        assert heading in text, heading
    reg = pd.read_csv(report / "kmtr-regression_regression.csv")
    assert reg["phenotype"].tolist() == REFERENCE_PHENOTYPES
    assert np.isfinite(reg["mae"]).all() and np.isfinite(reg["mean_guess_mae"]).all()
    cls = pd.read_csv(report / "kmtr-classification_classification.csv")
    assert cls["disease"].tolist() == DISEASES.split(",")
    seg_tables = sorted(report.glob("kmtr-segmentation_segmentation*.csv"))
    assert seg_tables, sorted(p.name for p in report.iterdir())
    seg_text = "\n".join(p.read_text() for p in seg_tables)
    for name in ("LV blood pool", "LV myocardium", "RV blood pool", "LA", "RA"):
        assert name in seg_text, name
    assert (report / "kmtr-reconstruction_recon.png").stat().st_size > 1000
    rec = pd.read_csv(report / "kmtr-reconstruction_reconstruction.csv")  # the decoder, + acquired samples, zero-filled
    assert np.isfinite(rec[["psnr", "data_consistent_psnr", "zero_filled_psnr"]].to_numpy()).all()
    assert "reconstruction + acquired samples (data consistency)" in text

    # one prediction pass outside a shared cache keeps nothing (nothing to reuse); inside it, the run's cache
    from kmtr.eval import predict
    from kmtr.data import shared_sample_cache

    made: list[KSpaceDataset] = []

    class Recorded(KSpaceDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(predict, "KSpaceDataset", Recorded)
    run = predict.load_run(exp / "stage3-regression")
    made.clear()  # load_run's own dataset (shapes only)
    predict.predict_split(run, "test")
    with shared_sample_cache():
        predict.predict_split(run, "test")
    assert [ds.cache for ds in made] == [False, True] and not made[0]._cache and made[1]._cache
