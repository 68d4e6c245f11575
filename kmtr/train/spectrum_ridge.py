"""The ``spectrum_ridge`` baseline: linear models on the radial power spectrum of the undersampled
k-space, no encoder.

Features: :func:`kmtr.models.spectrum.spectrum_features` of each subject's undersampled k-space
(normalised per subject by the RMS of its sampled lines, no augmentation), standardised with the
training split's mean and SD. On a store with coils: of the coil k-space with the store's stored
noise, the power summed over coils (:func:`split_features`). Regression: one scikit-learn ``Ridge`` per phenotype on the
standardised target (subjects with a value only); classification: one ``LogisticRegression`` per
disease (subjects with a known label only; ``class_weight="balanced"`` when ``heads.balance =
weighted``). The regularisation strength of each output is chosen from a fixed grid
(:data:`RIDGE_ALPHAS`, :data:`LOGISTIC_CS`) by the validation split's loss: mean squared error of
the standardised phenotype, (class-balanced) log-loss of the disease.

The fitted coefficients become a :class:`SpectrumLinear` (descriptor + ``nn.Linear``) saved as an
ordinary stage-III ``last.pt``, so prediction, ``kmtr eval`` and ``kmtr benchmark`` treat it like
every other method. The grid, every validation loss and the chosen values are written to
``<run>/regularisation.json`` and kept in the checkpoint's ``targets``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from kmtr.config import TrainConfig, config_to_dict, save_config
from kmtr.data import KSpaceDataset
from kmtr.models.spectrum import KSpaceSpectrum, heads_spectrum_rings
from kmtr.normalise import normalise, subject_scale
from kmtr.train.checkpoint import load_checkpoint, save_checkpoint
from kmtr.train.runner import ConfigError, run_dir, seed_everything

__all__ = ["RIDGE_ALPHAS", "LOGISTIC_CS", "SpectrumLinear", "split_features", "fit_spectrum_ridge"]

#: ridge penalties tried per phenotype (features and target standardised)
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 5, 13))
#: inverse penalties tried per disease (features standardised)
LOGISTIC_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-5, 1, 13))


class SpectrumLinear(nn.Module):
    """Standardised radial spectrum → linear map: ``forward(kspace, mask)`` → (B, out_dim).

    Args:
        shape: (S, T, H, W) of the k-space it reads (normalised, fully sampled; undersampled here by mask).
        rings: radial rings of the descriptor.
        out_dim: phenotypes (regression, standardised units) or diseases (classification logits).
    """

    def __init__(self, shape: tuple[int, int, int, int], rings: int, out_dim: int) -> None:
        super().__init__()
        self.spectrum = KSpaceSpectrum(shape, rings)
        self.linear = nn.Linear(self.spectrum.n_features, out_dim)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=kspace.device.type, enabled=False):
            return self.linear(self.spectrum(kspace, mask))


def _evaluation_view(ds: KSpaceDataset) -> KSpaceDataset:
    """``ds`` itself, or the same subjects, mask and frames without augmentation and with the
    store's stored (evaluation) coil noise."""
    if ds.coil_noise == "stored" and not ds.augment.enabled:
        return ds
    return KSpaceDataset(ds.location, ds.split, ds.mask_name, len(ds.frames), with_seg=False, with_labels=False,
                         storage_options=ds.storage_options, coil_noise="stored")


@torch.no_grad()
def split_features(spectrum: KSpaceSpectrum, ds: KSpaceDataset, batch: int = 8) -> np.ndarray:
    """Unstandardised descriptor (n, n_features) float64 of every subject of ``ds`` (no augmentation).

    On a store with coils the descriptor reads the coil k-space with the store's **stored**
    (evaluation) noise draw, synthesised and normalised by :func:`kmtr.data.prepare_batch` on the
    spectrum's device (the RMS of all coils' sampled lines), whatever ``ds.coil_noise`` says: the
    features of a closed-form fit and of the standardisation statistics are bit-stable.
    """
    if ds.coils is not None:
        from torch.utils.data import default_collate

        from kmtr.data import prepare_batch

        view = _evaluation_view(ds)
        device = spectrum.rings.device
        feats = []
        for start in range(0, len(view), batch):
            b = prepare_batch(default_collate([view[i] for i in range(start, min(start + batch, len(view)))]), device)
            feats.append(spectrum.raw(b["kspace"], b["mask"]).double().cpu().numpy())
        return np.concatenate(feats) if feats else np.zeros((0, spectrum.n_features))
    out: list[np.ndarray] = []
    for start in range(0, len(ds), batch):
        ks, ms = zip(*(ds.unaugmented(i) for i in range(start, min(start + batch, len(ds)))))
        k = torch.stack([normalise(kk, subject_scale(kk, mm)) for kk, mm in zip(ks, ms)])
        out.append(spectrum.raw(k, torch.stack(ms)).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, spectrum.n_features))


def _fit_regression(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per-column ridge; y, yv standardised (NaN = missing). Returns (coef (P, F), intercept (P,), record)."""
    from sklearn.linear_model import Ridge

    coef = np.zeros((y.shape[1], x.shape[1]))
    intercept = np.zeros(y.shape[1])
    record: dict[str, Any] = {"grid": list(RIDGE_ALPHAS), "criterion": "validation MSE (standardised)", "outputs": []}
    for j in range(y.shape[1]):
        ok, okv = np.isfinite(y[:, j]), np.isfinite(yv[:, j])
        losses = []
        for alpha in RIDGE_ALPHAS:
            model = Ridge(alpha=alpha).fit(x[ok], y[ok, j])
            losses.append(float(np.mean((model.predict(xv[okv]) - yv[okv, j]) ** 2)) if okv.any() else float("nan"))
        best = int(np.nanargmin(losses)) if np.isfinite(losses).any() else len(RIDGE_ALPHAS) // 2
        model = Ridge(alpha=RIDGE_ALPHAS[best]).fit(x[ok], y[ok, j])
        coef[j], intercept[j] = model.coef_, model.intercept_
        record["outputs"].append({"chosen": RIDGE_ALPHAS[best], "val_loss": losses})
    return coef, intercept, record


def _fit_classification(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, balanced: bool
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Per-column logistic regression; labels 1/0, −1 unknown. Returns (coef (D, F), intercept (D,), record)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.utils.class_weight import compute_sample_weight

    coef = np.zeros((y.shape[1], x.shape[1]))
    intercept = np.zeros(y.shape[1])
    weight = "balanced" if balanced else None
    record: dict[str, Any] = {"grid": list(LOGISTIC_CS), "criterion": "validation log-loss"
                              + (" (class-balanced)" if balanced else ""), "outputs": []}
    for j in range(y.shape[1]):
        ok, okv = y[:, j] >= 0, yv[:, j] >= 0
        both = okv.any() and len(np.unique(yv[okv, j])) == 2
        sw = compute_sample_weight(weight, yv[okv, j]) if both and balanced else None
        losses = []
        for c in LOGISTIC_CS:
            model = LogisticRegression(C=c, class_weight=weight, max_iter=5000).fit(x[ok], y[ok, j])
            prob = model.predict_proba(xv[okv])[:, 1]
            losses.append(float(log_loss(yv[okv, j], prob, sample_weight=sw, labels=[0, 1])) if both else float("nan"))
        best = int(np.nanargmin(losses)) if np.isfinite(losses).any() else len(LOGISTIC_CS) // 2
        model = LogisticRegression(C=LOGISTIC_CS[best], class_weight=weight, max_iter=5000).fit(x[ok], y[ok, j])
        coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
        record["outputs"].append({"chosen": LOGISTIC_CS[best], "val_loss": losses})
    return coef, intercept, record


def fit_spectrum_ridge(cfg: TrainConfig, resume: bool | str = False) -> dict[str, Any]:
    """Fit the baseline for ``cfg.task`` (regression or classification) and write its run folder.

    A run folder that already holds ``last.pt`` is handled as every stage-III run
    (:func:`kmtr.train.run_guard.prepare_run_folder`): with ``auto`` (False) and the same config it
    is kept (its summary returned, nothing refitted), with another config it stops with
    :class:`~kmtr.train.run_guard.RunConflictError`; ``resume`` (True) or ``restart`` refit it
    (there is nothing to continue in a closed-form fit).

    Returns:
        ``{"last": {"loss": mean validation loss of the chosen models}, "history": [], "global_step": 0,
        "epoch", "model", "run_dir"}`` like :func:`kmtr.train.runner.fit_model`.

    Raises:
        ConfigError: no validation split (the regularisation is chosen on it), a task it does not do,
        labels absent from the store.
    """
    from kmtr.tasks import get_task
    from kmtr.train.run_guard import prepare_run_folder
    from kmtr.train.task_net import TaskModel

    task = get_task(cfg.task)
    if not task.pooled:
        raise ConfigError(f"method spectrum_ridge does not do {cfg.task} (it does regression, classification)")

    out = run_dir(cfg)
    mode = ("resume" if resume else "auto") if isinstance(resume, bool) else resume
    if prepare_run_folder(out, config_to_dict(cfg), mode, cfg.optim.epochs) and mode == "auto":
        state = load_checkpoint(out / "last.pt")
        print(f"{out}: spectrum_ridge already fitted, kept", flush=True)
        return {"last": state.get("summary", {}), "history": [], "global_step": 0, "epoch": state.get("epoch", 0),
                "model": None, "run_dir": out, "already_trained": True}
    if not cfg.data.val_split:
        raise ConfigError("spectrum_ridge chooses its regularisation on the validation split: set data.val_split")
    d = cfg.data
    train_ds = KSpaceDataset(d.data, d.train_split, d.mask, d.frames)
    val_ds = KSpaceDataset(d.data, d.val_split, d.mask, d.frames)
    targets = task.targets(cfg, train_ds)
    seed_everything(cfg.run.seed)
    rings = heads_spectrum_rings(cfg.heads)
    net = SpectrumLinear(train_ds.shape, rings, targets["out_dim"])
    model = TaskModel(net, task, targets, cfg.heads)
    start = time.perf_counter()
    print(f"stage III spectrum_ridge / {cfg.task}: {len(train_ds)} training subjects, {len(val_ds)} validation, "
          f"{net.spectrum.n_features} spectrum features ({rings} rings)", flush=True)
    raw, raw_val = split_features(net.spectrum, train_ds), split_features(net.spectrum, val_ds)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    net.spectrum.set_statistics(mean, std)
    std_used = net.spectrum.std.double().numpy()
    x, xv = (raw - mean) / std_used, (raw_val - mean) / std_used
    y, yv = task.split_targets(train_ds, targets), task.split_targets(val_ds, targets)
    if task.binary_targets:
        coef, intercept, record = _fit_classification(x, y, xv, yv, cfg.heads.balance == "weighted")
    else:
        coef, intercept, record = _fit_regression(x, y, xv, yv)
    with torch.no_grad():
        net.linear.weight.copy_(torch.from_numpy(coef).float())
        net.linear.bias.copy_(torch.from_numpy(intercept).float())
    record["names"] = targets["names"]
    chosen = [o["val_loss"][record["grid"].index(o["chosen"])] for o in record["outputs"]]
    val_loss = float(np.nanmean(chosen)) if np.isfinite(chosen).any() else float("nan")
    targets = {**targets, "regularisation": record}
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.json")
    (out / "regularisation.json").write_text(json.dumps(record, indent=2) + "\n")
    config = {**config_to_dict(cfg), "extra_state": {"targets": targets}}
    summary = {"loss": val_loss, "val_loss": val_loss, "seconds": time.perf_counter() - start}
    save_checkpoint({"model": model.state_dict(), "epoch": cfg.optim.epochs, "step_in_epoch": 0, "global_step": 0,
                     "world_size": 1, "config": config, "summary": summary}, out / "last.pt")
    print(f"spectrum_ridge / {cfg.task}: mean validation loss {val_loss:.4g} ({summary['seconds']:.1f} s), "
          f"run {out}", flush=True)
    return {"last": summary, "history": [], "global_step": 0, "epoch": cfg.optim.epochs, "model": model,
            "run_dir": out, "already_trained": False}
