"""Stages II and III on the fixture store: alignment, every task, early errors, the pipeline, eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from kmtr_fixtures import TINY_OVERRIDES, write_store
from typer.testing import CliRunner

from cli.kmtr_app import app
from kmtr.config import TrainConfig
from kmtr.pipeline import stage_config, train_one
from kmtr.stage3 import seg_layers, task_targets
from kmtr.train.runner import ConfigError
from kmtr.train.stage1 import build_datasets

torch.set_num_threads(1)

SMALL = {**TINY_OVERRIDES, "heads.diseases": "CAD,hypertension"}


@pytest.fixture(scope="module")
def store8(tmp_path_factory) -> str:
    """8 subjects: 5 train, 2 validation, 1 test; CAD and hypertension with both classes in
    training, stroke unknown for everyone (the simulator's disease columns)."""
    path = write_store(tmp_path_factory.mktemp("stages") / "s.zarr", n=8, t=5, h=32, w=32,
                       status=[1] * 8, split=[0, 0, 0, 0, 0, 1, 1, 2])
    import zarr
    from kmtr_fixtures import DISEASE_COLUMNS

    g = zarr.open_group(path, mode="r+")
    dz = np.zeros((8, len(DISEASE_COLUMNS)), np.int8)
    dz[:, DISEASE_COLUMNS.index("CAD")] = [1, 0, 1, 0, 0, 1, 0, 1]
    dz[:, DISEASE_COLUMNS.index("hypertension")] = [0, 1, 1, 0, 1, 0, 1, 0]
    dz[:, DISEASE_COLUMNS.index("stroke")] = -1
    g["labels/diseases"][:] = dz
    zarr.consolidate_metadata(path)
    return path


def cfg_for(store: str, out: Path, stage: int, task: str = "", **extra: str) -> TrainConfig:
    return stage_config("tiny", stage, task, {"data.data": store, "run.out_dir": str(out), "run.name": "exp",
                                              "optim.epochs": "1", "data.batch_size": "2", **SMALL, **extra})


@pytest.fixture(scope="module")
def experiment(store8, tmp_path_factory) -> Path:
    """Stage I then stage II (one epoch each) on the fixture store."""
    out = tmp_path_factory.mktemp("runs")
    train_one(cfg_for(store8, out, 1))
    s2 = train_one(cfg_for(store8, out, 2))
    assert np.isfinite(s2["last"]["loss"])
    return out


def test_stage2_logs_retrieval_and_loads_stage1(experiment):
    rows = (experiment / "exp" / "stage2" / "metrics.csv").read_text().splitlines()
    names = {r.split(",")[3] for r in rows[1:]}
    assert {"loss", "pos_cos", "image2kspace_top1", "kspace2image_top5"} <= names
    ckpt = torch.load(experiment / "exp" / "stage2" / "last.pt", weights_only=True)
    assert not any(".decoder." in k for k in ckpt["model"])  # decoders dropped


def test_stage2_starts_from_the_stage1_weights(experiment, store8, tmp_path):
    """Stage II's encoders are stage I's, exactly: with a learning rate of 0 its checkpoint holds
    the stage-I encoder weights bit for bit, and those moved clearly away from the same-seed
    initial weights (so a stage II that started from fresh weights could not pass)."""
    from kmtr.train.stage1 import build_stage1_model, validate_config

    s1_dir = experiment / "exp" / "stage1"
    s1 = torch.load(s1_dir / "last.pt", weights_only=True)["model"]
    s2 = train_one(cfg_for(store8, tmp_path, 2, init=str(s1_dir), **{"optim.lr": "0"}))
    got = torch.load(Path(s2["run_dir"]) / "last.pt", weights_only=True)["model"]
    encoders = [k for k in got if k.startswith(("image.", "kspace.")) and ".decoder." not in k]
    assert len(encoders) > 20 and {k.split(".")[0] for k in encoders} == {"image", "kspace"}
    for key in encoders:
        assert torch.equal(got[key], s1[key]), key
    # the same-seed fresh stage-I model (what stage II builds before loading): far from stage I
    cfg1 = cfg_for(store8, tmp_path, 1)
    train_ds, _ = build_datasets(cfg1)
    torch.manual_seed(cfg1.run.seed)
    fresh = build_stage1_model(cfg1, validate_config(cfg1, train_ds.shape), train_ds.info.view_ids).state_dict()
    moved = [k for k in encoders if k in fresh and not torch.allclose(fresh[k], s1[k], atol=1e-3)]
    assert len(moved) > len(encoders) // 2, f"stage I barely moved: {len(moved)} of {len(encoders)} tensors"


def test_retrieval_probe_reads_the_encoders_as_stage_ii_does(experiment):
    """kmtr.eval.retrieval_probe on the stage-II checkpoint: its last encoder stage is the class
    token stage II aligns, its projections are stage II's embeddings, and both tables are filled."""
    from kmtr.analysis.retrieval import retrieval_accuracy
    from kmtr.eval.retrieval_probe import _load, retrieval_probe, subject_features
    from kmtr.data import KSpaceDataset
    from kmtr.train.stage2 import embed_split

    ckpt = experiment / "exp" / "stage2" / "last.pt"
    model, stage2, cfg = _load(ckpt)
    assert stage2
    ds = KSpaceDataset(cfg.data.data, "validation", cfg.data.mask, cfg.data.frames, with_seg=False)
    feats, moments = subject_features(model, ds, pool=8)
    z_i, z_k = embed_split(model, ds, torch.device("cpu"))
    np.testing.assert_allclose(feats["image.projected"], z_i, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats["kspace.projected"], z_k, rtol=1e-5, atol=1e-6)
    last = len(model.kspace.encoder.blocks) + 1
    c_i, c_k = embed_split(model, ds, torch.device("cpu"), projected=False)
    np.testing.assert_allclose(feats[f"kspace.{last}.cls"], c_k, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats[f"image.{last}.cls"], c_i, rtol=1e-5, atol=1e-6)
    assert feats["zero_filled_complex"].shape == (2, 9 * 2 * 4 * 4)  # 9 views, re/im, 32 / 8 pooled
    assert set(moments) == {f"{e}.{lv}.tokens" for e in ("kspace", "image") for lv in range(last + 1)}

    layers, retrieval, phenotype = retrieval_probe(ckpt, pool=8, phenotypes=["LVEDV", "LVM"])
    assert set(phenotype["phenotype"]) == {"LVEDV (mL)", "LVM (g)"} and len(phenotype) == 2 * 5
    assert phenotype["n_test"].eq(1).all() and np.isfinite(phenotype[["mae", "mean_guess_mae", "p"]]).all().all()
    with pytest.raises(ConfigError, match="no phenotype 'LVX'"):
        retrieval_probe(ckpt, phenotypes=["LVX"])
    assert len(layers) == 2 * (last + 1) and layers["stage"].iloc[-1] == "final norm"
    embedded = layers[layers["stage"] == "embedded"]
    assert (embedded["class_token"] == 0).all()  # the learned class token, the same for every subject
    assert ((layers["patch_tokens"] > 0) & (layers["patch_tokens"] <= 1)).all()
    assert retrieval["held_out"].eq(3).all() and retrieval["chance_top1"].iloc[0] == pytest.approx(1 / 3)
    direct = retrieval[retrieval["map"].str.startswith("none")]
    assert len(direct) == 1  # stage II's own retrieval, no map
    held = [KSpaceDataset(cfg.data.data, s, cfg.data.mask, cfg.data.frames, with_seg=False)
            for s in ("validation", "test")]
    zs = [embed_split(model, d, torch.device("cpu")) for d in held]
    expected = retrieval_accuracy(np.concatenate([b for _, b in zs]), np.concatenate([a for a, _ in zs]))
    assert direct["top1"].iloc[0] == expected["a2b_top1"]


@pytest.mark.parametrize("n_val", [1, 3])
def test_stage2_validates_a_split_that_leaves_one_subject_over(experiment, tmp_path, n_val):
    """A validation split of one subject, or one whose last batch would hold one (3 with batch 2),
    cannot be contrasted subject by subject: stage II skips validation or joins that subject to the
    batch before (found by tests/test_contract.py: 'the contrastive loss needs at least 2 subjects')."""
    from kmtr.train.runner import validation_batches

    assert validation_batches(3, 2) == [[0, 1, 2]] and validation_batches(5, 2) == [[0, 1], [2, 3, 4]]
    assert validation_batches(4, 2) == [[0, 1], [2, 3]] and validation_batches(1, 2) == [[0]]
    store = write_store(tmp_path / "s.zarr", n=4 + n_val, t=5, h=32, w=32, status=[1] * (4 + n_val),
                        split=[0] * 4 + [1] * n_val)
    s2 = train_one(cfg_for(store, tmp_path, 2, init=str(experiment / "exp" / "stage1")))
    rows = (Path(s2["run_dir"]) / "metrics.csv").read_text()
    assert np.isfinite(s2["last"]["loss"]) and ("image2kspace_top1" in rows) == (n_val > 1)


@pytest.mark.parametrize("task", ["regression", "classification", "segmentation", "reconstruction"])
def test_stage3_every_task_trains_from_stage2(experiment, store8, task):
    summary = train_one(cfg_for(store8, experiment, 3, task))
    assert np.isfinite(summary["last"]["loss"]) and summary["global_step"] == 2
    assert (experiment / "exp" / f"stage3-{task}" / "last.pt").exists()
    assert summary["last"]["tokens_per_s"] > 0  # the k-space encoder's patch tokens are counted


def test_stage3_starts_from_another_tasks_encoder(experiment, store8, tmp_path):
    """``--init`` may name a k-MTR stage-III run: its k-space encoder (``net.encoder.*``) is loaded."""
    seg = train_one(cfg_for(store8, tmp_path, 3, "segmentation", init=str(experiment / "exp" / "stage2")))
    seg_state = torch.load(Path(seg["run_dir"]) / "last.pt", weights_only=True)["model"]
    cfg = cfg_for(store8, tmp_path, 3, "regression", init=str(seg["run_dir"]), **{"optim.lr": "0"})
    reg = train_one(cfg)
    reg_state = torch.load(Path(reg["run_dir"]) / "last.pt", weights_only=True)["model"]
    key = "net.encoder.embed.proj.weight"
    assert torch.equal(reg_state[key], seg_state[key])  # lr 0: still the segmentation run's encoder
    s2 = torch.load(experiment / "exp" / "stage2" / "last.pt", weights_only=True)["model"]
    assert not torch.equal(seg_state[key], s2["kspace.embed.proj.weight"])


@pytest.mark.parametrize("pool", ["attention", "cls"])
def test_stage3_heads_read_pooled_tokens(store8, tmp_path, pool):
    """Every pooling of the encoder's tokens trains (here from scratch, with the magnitude input
    channel and the B0-phase augmentation on) and predicts."""
    from kmtr.eval.predict import load_run, predict_split

    extra = {"heads.pool": pool, "init": "scratch", "arch.kspace_magnitude_c": "0.05", "data.phase_amplitude": "3.0"}
    summary = train_one(cfg_for(store8, tmp_path, 3, "classification", **extra))
    assert np.isfinite(summary["last"]["loss"])
    run = load_run(summary["run_dir"])
    assert run.model.net.encoder.embed.proj.in_features == 5 * 8 * 8 * 3  # re, im, log-magnitude
    preds = predict_split(run, "validation")
    assert preds.pred.shape == (2, 2) and np.isfinite(preds.pred).all()


@pytest.mark.parametrize("method,task", [("resnet50", "regression"), ("resnet50_u", "classification"),
                                         ("resnet50_k", "regression"), ("unet", "segmentation"),
                                         ("unet_u", "segmentation"), ("mae", "classification")])
def test_baselines_train_one_step_and_evaluate(experiment, store8, method, task):
    from kmtr.eval.benchmark import _compare
    from kmtr.eval.predict import load_run, predict_split

    summary = train_one(cfg_for(store8, experiment, 3, task, method=method, **{"run.max_steps": "1"}))
    assert np.isfinite(summary["last"]["loss"])
    assert (summary["last"]["tokens_per_s"] > 0) == (method == "mae")  # image baselines have no tokens
    run = load_run(summary["run_dir"])
    preds = predict_split(run, "validation")
    assert len(preds.rows) == 2 and np.isfinite(preds.pred.astype(float)).all()
    comp = _compare(task, {"kmtr": preds, method: preds}, run.targets, n_boot=10, seed=0)
    assert comp.values.shape[1] >= 2 and not comp.paired.empty


def test_stage3_errors_before_training(store8, tmp_path):
    no_seg = write_store(tmp_path / "noseg.zarr", n=6, t=5, h=32, w=32)
    import zarr

    g = zarr.open_group(no_seg, mode="r+")
    del g["seg"]
    zarr.consolidate_metadata(no_seg)
    with pytest.raises(ConfigError, match="no 'seg' array"):
        train_one(cfg_for(no_seg, tmp_path, 3, "segmentation", init="scratch"))
    with pytest.raises(ConfigError, match="no positive or no negative case for stroke"):
        train_one(cfg_for(store8, tmp_path, 3, "classification", init="scratch", **{"heads.diseases": "CAD,stroke"}))
    with pytest.raises(ConfigError, match="no disease column"):
        train_one(cfg_for(store8, tmp_path, 3, "classification", init="scratch", **{"heads.diseases": "flu"}))
    with pytest.raises(ConfigError, match="no checkpoint to start from"):
        train_one(cfg_for(store8, tmp_path / "empty", 3, "regression"))
    with pytest.raises(ConfigError, match="does not do segmentation"):
        train_one(cfg_for(store8, tmp_path, 3, "segmentation", method="resnet50"))
    assert not (tmp_path / "exp").exists()


def test_regression_targets_use_training_statistics(store8, tmp_path):
    cfg = cfg_for(store8, tmp_path, 3, "regression", init="scratch")
    train_ds, _ = build_datasets(cfg)
    t = task_targets(cfg, train_ds)
    y = train_ds.split_labels("phenotypes")
    assert len(train_ds) == 5 and t["out_dim"] == 18
    np.testing.assert_allclose(t["mean"], np.nanmean(y, axis=0), rtol=1e-5)
    assert seg_layers(6, 4) == [2, 3, 4, 6] or seg_layers(6, 4)[-1] == 6


def test_only_kmtr_spectrum_reads_the_kspace_spectrum(store8, tmp_path):
    """k-MTR's heads read the class token alone; the spectrum is the separately named method
    kmtr_spectrum (issue 21), standardised on the training split."""
    from kmtr.eval.predict import load_run
    from kmtr.models.spectrum import spectrum_statistics

    steps = {"run.max_steps": "1"}
    run = load_run(train_one(cfg_for(store8, tmp_path, 3, "regression", init="scratch", method="kmtr_spectrum",
                                     **steps))["run_dir"])
    spectrum = run.model.net.spectrum
    train_ds, _ = build_datasets(run.cfg)
    mean, std = spectrum_statistics(spectrum, (train_ds.unaugmented(i) for i in range(len(train_ds))))
    np.testing.assert_allclose(spectrum.mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(spectrum.std.numpy(), np.where(std > 1e-6, std, 1.0), rtol=1e-5)
    assert spectrum.n_features == 9 * 16 * 5  # static + 4 frame differences per view, 16 rings
    assert run.model.net.head.net[0].in_features == 32 + spectrum.n_features
    assert run.cfg.method == "kmtr_spectrum" and (Path(run.path).name == "kmtr_spectrum-regression")

    # k-MTR ignores heads.spectrum_rings: its heads read the class token (width 32) and nothing else
    pure = train_one(cfg_for(store8, tmp_path / "pure", 3, "classification", init="scratch",
                             **steps, **{"heads.spectrum_rings": "16"}))
    net = load_run(pure["run_dir"]).model.net
    assert net.spectrum is None and net.pool == "cls" and net.head.heads[0].net[0].in_features == 32
    # a k-MTR run of an older kmtr whose heads read the spectrum is refused, not reported as k-MTR
    ckpt_path = Path(run.path) / "last.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    ckpt["config"]["method"] = "kmtr"
    torch.save(ckpt, ckpt_path)
    with pytest.raises(ValueError, match="older kmtr"):
        load_run(run.path)
    with pytest.raises(ConfigError, match="spectrum_rings"):
        train_one(cfg_for(store8, tmp_path / "bad", 3, "regression", init="scratch", method="kmtr_spectrum",
                          **{"heads.spectrum_rings": "1"}))


def _cli_args(store: str, out: Path) -> list[str]:
    args = ["--preset", "tiny", "--data", store, "--epochs", "1", "--batch-size", "2", "--out", str(out),
            "--frames", "5", "--patch", "5,8,8", "--workers", "0"]
    for key, value in SMALL.items():
        if key not in ("data.frames", "arch.patch", "data.num_workers"):
            args += ["--set", f"{key}={value}"]
    return args


@pytest.mark.slow
def test_cli_full_pipeline_then_eval_report(store8, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", *_cli_args(store8, tmp_path), "--name", "e2e"])
    assert res.exit_code == 0, res.output
    exp = tmp_path / "e2e"
    for sub in ("stage1", "stage2", "stage3-regression", "stage3-classification", "stage3-segmentation",
                "stage3-reconstruction"):
        assert (exp / sub / "last.pt").exists(), sub
    # a second call finds every stage finished and trains nothing
    again = runner.invoke(app, ["train", *_cli_args(store8, tmp_path), "--name", "e2e"])
    assert again.exit_code == 0 and again.output.count("already trained") == 6, again.output
    res = runner.invoke(app, ["eval", str(exp), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    report = exp / "report"
    text = (report / "report.md").read_text()
    for heading in ("Regression", "Classification", "Segmentation", "Reconstruction", "Stage II"):
        assert heading in text, heading
    reg = __import__("pandas").read_csv(report / "kmtr-regression_regression.csv")
    assert len(reg) == 18 and {"mae", "mae_sd", "mean_guess_mae"} <= set(reg.columns)
    cls = __import__("pandas").read_csv(report / "kmtr-classification_classification.csv")
    assert list(cls["disease"]) == ["CAD", "hypertension"]
    seg = __import__("pandas").read_csv(report / "kmtr-segmentation_segmentation.csv")
    assert "short-axis" in set(seg["view"]) and "short-axis Dice" in text  # from the store's view ids
    for png in ("kmtr-regression_scatter.png", "kmtr-classification_roc.png", "kmtr-segmentation_overlay.png",
                "kmtr-reconstruction_recon.png"):
        assert (report / png).stat().st_size > 1000, png
    assert list(report.glob("tsne_*.png"))


@pytest.mark.slow
def test_benchmark_acceleration_study_is_resumable(store8, tmp_path):
    runner = CliRunner()
    args = ["benchmark", "--data", store8, "--acc", "4", "--acc", "8", "--pattern", "vista", "--name", "bench",
            "--out", str(tmp_path), "--n-boot", "20", "--epochs", "1", "--method", "kmtr", "--method", "resnet50_k",
            "--task", "regression", "--device", "cpu"]
    for key, value in SMALL.items():
        args += ["--set", f"{key}={value}"]
    args += ["--set", "data.batch_size=2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "mask 'vista_r8' not in" in res.output  # checked before any training
    assert not (tmp_path / "bench" / "vista_r4").exists()
    import zarr

    g = zarr.open_group(store8, mode="r+")
    g.create_array("masks/vista_r8", data=g["masks/gaussian_r8"][:])
    zarr.consolidate_metadata(store8)
    try:
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        report = tmp_path / "bench" / "report"
        md = (report / "benchmark.md").read_text()
        assert "k-MTR" in md and "ResNet-50^k" in md and "mean guess" in md and "Paired tests" in md
        assert (report / "acceleration_regression.png").stat().st_size > 1000
        cache = tmp_path / "bench" / "vista_r8" / "resnet50_k-regression" / "predictions_test.npz"
        stamp = cache.stat().st_mtime
        res = runner.invoke(app, args)  # everything is there: nothing retrained or re-predicted
        assert res.exit_code == 0 and "== R =" not in res.output, res.output
        assert cache.stat().st_mtime == stamp
    finally:
        del g["masks/vista_r8"]
        zarr.consolidate_metadata(store8)


def test_cli_out_of_memory_is_a_clear_error(store8, tmp_path, monkeypatch):
    """A CUDA out-of-memory error (raised here by a stand-in for the stage) exits 2 with what to change."""
    import kmtr.pipeline as pipeline

    def oom(cfg, resume=False):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipeline, "train_one", oom)
    res = CliRunner().invoke(app, ["train", "--stage", "1", "--data", store8, "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "out of device memory (CUDA out of memory. Tried to allocate 20.00 GiB)" in res.output
    assert "--batch-size" in res.output and "--grad-checkpoint" in res.output


def test_eval_measures_phenotypes_on_the_predicted_segmentation(experiment, store8, tmp_path, monkeypatch):
    """The segmentation report adds phenotypes from short-axis areas, calibrated on the training split."""
    from kmtr.analysis import seg_phenotypes
    from kmtr.eval.predict import load_run
    from kmtr.eval.report import evaluate_run

    # the fixture's phenotypes are random numbers under the simulator's column names: calibrate two
    monkeypatch.setattr(seg_phenotypes, "FEATURES", {"LVEDV (mL)": ("lv_max",), "LVM (g)": ("epi_mean", "lv_mean")})
    seg = train_one(cfg_for(store8, tmp_path, 3, "segmentation", init=str(experiment / "exp" / "stage2"),
                            **{"run.max_steps": "1"}))
    res = evaluate_run(load_run(seg["run_dir"]), tmp_path / "report", "validation", n_boot=20)
    table = res["tables"]["phenotypes"]
    assert table["phenotype"].tolist() == ["LVEDV (mL)", "LVM (g)"]
    assert table["features"].tolist() == ["lv_max", "epi_mean + lv_mean"]
    assert (table["n"] == 2).all() and np.isfinite(table["mean_guess_mae"]).all()
    assert res["sections"][0][0].startswith("Phenotypes from the predicted segmentation")
    heading, areas = res["sections"][1]
    assert heading.startswith("Short-axis areas, predicted against the ground truth")
    assert areas["class"].tolist() == ["LV blood pool", "LV blood pool + myocardium", "RV blood pool"]
    assert (tmp_path / "report" / "kmtr-segmentation_phenotypes_scatter.png").stat().st_size > 1000
    assert (tmp_path / "report" / "kmtr-segmentation_phenotypes.csv").exists()
    # a store without training subjects (an external test set): no calibration, the rest is evaluated
    external = write_store(tmp_path / "external.zarr", n=3, t=5, h=32, w=32, status=[1] * 3, split=[1, 1, 2])
    res = evaluate_run(load_run(seg["run_dir"], data=external), tmp_path / "external", "validation", n_boot=20)
    assert "phenotypes" not in res["tables"] and len(res["tables"]["segmentation"])
    assert [h.split(",")[0] for h, _ in res["sections"]] == ["Short-axis areas"]  # the areas need no calibration
