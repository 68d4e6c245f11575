"""The one registry of stage-III methods (k-MTR, MAE w/o stage II and every baseline): what each
reads, which tasks it does, where it starts, how it is described in tables, how its network is
built and — for methods that do not train by gradient descent in :mod:`kmtr.stage3` — how
it is fitted. Training (:func:`kmtr.stage3.train_stage3`), prediction
(:func:`kmtr.eval.predict.load_run`), the benchmark and the CLIs all read :data:`METHODS`; a new
method is one :func:`register_method` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

from torch import nn

from kmtr.analysis.comparison import VARIANT_SEP
from kmtr.config import TrainConfig
from kmtr.errors import ConfigError
from kmtr.models.spectrum import SPECTRUM_RINGS, heads_spectrum_rings
from kmtr.tasks import TASKS, Task, get_task
from kmtr.train.init import encoder_prefix, load_prefixed
from kmtr.train.task_net import KSpaceTaskNet, TaskModel

__all__ = [
    "METHODS",
    "SPECTRUM_RINGS",
    "MethodSpec",
    "NetBuilder",
    "build_task_model",
    "default_methods",
    "method_label",
    "method_spec",
    "register_method",
    "spectrum_rings",
]

#: ``build(cfg, shape (S, T, H, W), view_ids, task, out_dim, state)`` → the method's network
#: (``forward(kspace, mask)``); ``state`` holds the stage-I/II weights it starts from, or None
NetBuilder = Callable[[TrainConfig, tuple[int, int, int, int], tuple[int, ...], Task, int, "dict[str, Any] | None"],
                      nn.Module]


class MethodSpec(NamedTuple):
    """One stage-III method: what it reads, which tasks it does, where it starts, and what it is
    (the description :func:`kmtr.eval.benchmark.method_table` prints beside every comparison),
    and how it is built and trained."""

    input: str  # image | image_under | kspace_under
    tasks: tuple[str, ...]
    init_from: str  # the stage whose checkpoint it starts from, or "" (from scratch)
    label: str = ""  # name in tables
    pretraining: str = "none"
    features: str = ""  # what the head reads
    recipe: str = ""  # how it is fitted
    build: NetBuilder | None = None  # its network (None: no kmtr model, ``fit`` does everything)
    fit: Callable[[TrainConfig, Any], dict[str, Any]] | None = None  # its own trainer (None: gradient descent)
    is_finished: Callable[[TrainConfig, bool], bool] | None = None  # for runs without last.pt
    own_recipe: Callable[[TrainConfig], tuple[str, str, Any, Any]] | None = None  # (lr, chosen by, epochs, batch)
    require: Callable[[str], None] | None = None  # checks its optional dependencies, before anything is written
    reads_spectrum: bool = False  # reads the radial spectrum (heads.spectrum_rings)
    counts_tokens: bool = False  # a patch-token encoder (tokens/s in the training log)
    needs_validation: bool = False  # chooses its settings on the validation split
    benchmark: bool = False  # one of `kmtr benchmark`'s default methods for its tasks
    lr_grid: tuple[str, tuple[float, ...]] | None = None  # learning rates `--lr-search` tries (kmtr.eval.lr_search)
    multicoil: bool = False  # reads stores with coils (its build takes ``coils=``; docs/multicoil.md)


def _kspace_encoder_net(cfg: TrainConfig, shape: tuple[int, int, int, int], view_ids: tuple[int, ...], task: Task,
                        out_dim: int, state: dict[str, Any] | None, coils: int | None = None) -> nn.Module:
    """The stage-I k-space MAE's encoder (weights from ``state``) with the task's head (``coils``:
    C of a store with coils, None for a single-coil store)."""
    from kmtr.train.maes import build_stage1_model, validate_config

    s1 = dataclasses.replace(cfg, stage=1, models="kspace")
    mae = build_stage1_model(s1, validate_config(s1, shape), view_ids, coils).kspace
    assert mae is not None
    mae.drop_decoder()
    if state is not None:
        load_prefixed(mae, state, encoder_prefix(state))
    return KSpaceTaskNet(mae, task, out_dim, cfg.heads, spectrum_rings(cfg))


def _resnet(cfg: TrainConfig, shape: tuple[int, int, int, int], view_ids: tuple[int, ...], task: Task, out_dim: int,
            state: dict[str, Any] | None, coils: int | None = None) -> nn.Module:
    from kmtr.models.baselines import ResNetBaseline

    return ResNetBaseline(method_spec(cfg.method).input, shape[0], out_dim, width=cfg.heads.resnet_width,
                          signed_log_c=cfg.arch.signed_log_c, magnitude=cfg.heads.baseline_magnitude, coils=coils)


def _unet(cfg: TrainConfig, shape: tuple[int, int, int, int], view_ids: tuple[int, ...], task: Task, out_dim: int,
          state: dict[str, Any] | None, coils: int | None = None) -> nn.Module:
    from kmtr.models.baselines import UNetBaseline

    return UNetBaseline(method_spec(cfg.method).input, out_dim, channels=tuple(cfg.heads.unet_channels),
                        magnitude=cfg.heads.baseline_magnitude)


def _spectrum_linear(cfg: TrainConfig, shape: tuple[int, int, int, int], view_ids: tuple[int, ...], task: Task,
                     out_dim: int, state: dict[str, Any] | None, coils: int | None = None) -> nn.Module:
    from kmtr.train.spectrum_ridge import SpectrumLinear

    return SpectrumLinear(shape, spectrum_rings(cfg), out_dim)


def _fit_spectrum_ridge(cfg: TrainConfig, resume: Any) -> dict[str, Any]:
    from kmtr.train.spectrum_ridge import fit_spectrum_ridge

    return fit_spectrum_ridge(cfg, resume)


def _fit_nnunet(cfg: TrainConfig, resume: Any) -> dict[str, Any]:
    from kmtr.nnunet.run import train_nnunet

    return train_nnunet(cfg, resume)


def _nnunet_finished(cfg: TrainConfig, same_config: bool) -> bool:
    from kmtr.nnunet.run import is_finished  # no last.pt: nnU-Net keeps its own checkpoints

    return is_finished(cfg, same_config)


def _require_nnunet(method: str) -> None:
    from kmtr.nnunet import require_nnunet

    require_nnunet(method)


def _nnunet_recipe(cfg: TrainConfig) -> tuple[str, str, Any, Any]:
    return ("nnU-Net's", f"nnU-Net's own recipe (SGD, poly decay from 0.01), {cfg.heads.nnunet_trainer}", "–",
            "nnU-Net's plan")


def _closed_form_recipe(cfg: TrainConfig) -> tuple[str, str, Any, Any]:
    return ("–", "closed form; regularisation chosen on validation (regularisation.json in the run)", "–",
            cfg.data.batch_size)


_FROM_SCRATCH = "trained from scratch, AdamW + warm-up + cosine"
#: learning-rate grids, (kind, values): "x preset lr" = factors of the preset's stage-III learning rate
#: (the pre-trained k-space encoders, whose paper learning rates are fine-tuning rates), "absolute" =
#: learning rates (networks trained from scratch, for which k-MTR's fine-tuning rates are no recipe)
FINE_TUNE_GRID = ("x preset lr", (0.1, 0.3, 1.0, 3.0, 10.0))
SCRATCH_CNN_GRID = ("absolute", (3e-5, 1e-4, 3e-4, 1e-3, 3e-3))
SCRATCH_UNET_GRID = ("absolute", (1e-4, 3e-4, 1e-3, 3e-3, 1e-2))
#: method → :class:`MethodSpec`, in the order tables list them (add one with :func:`register_method`)
METHODS: dict[str, MethodSpec] = {
    "kmtr": MethodSpec(
        "kspace_under", TASKS, "stage2", "k-MTR", "stage I k-space MAE + stage II contrastive alignment with images",
        "encoder's class token (heads.pool = cls) / encoder features (segmentation, reconstruction)",
        "fine-tuned end to end, AdamW + warm-up + cosine",
        build=_kspace_encoder_net, counts_tokens=True, benchmark=True, lr_grid=FINE_TUNE_GRID, multicoil=True),
    "mae": MethodSpec(
        "kspace_under", TASKS, "stage1", "MAE w/o stage II", "stage I k-space MAE only (no alignment)",
        "as k-MTR", "as k-MTR",
        build=_kspace_encoder_net, counts_tokens=True, benchmark=True, lr_grid=FINE_TUNE_GRID, multicoil=True),
    "resnet50": MethodSpec(
        "image", ("regression", "classification"), "", "ResNet-50 (full images)", "none (from scratch)",
        "3-D ResNet-50 over (T, H, W) on fully sampled magnitude images (one channel per view; with coils: "
        "SENSE-1 magnitude of the noisy coil k-space, true maps)",
        _FROM_SCRATCH,
        build=_resnet, benchmark=True, lr_grid=SCRATCH_CNN_GRID, multicoil=True),
    "resnet50_u": MethodSpec(
        "image_under", ("regression", "classification"), "", "ResNet-50^u", "none (from scratch)",
        "3-D ResNet-50 on zero-filled undersampled magnitude images (one channel per view; with coils: "
        "SENSE-1 magnitude of the zero-filled noisy coil k-space, true maps)",
        _FROM_SCRATCH,
        build=_resnet, benchmark=True, lr_grid=SCRATCH_CNN_GRID, multicoil=True),
    "resnet50_k": MethodSpec(
        "kspace_under", ("regression", "classification"), "", "ResNet-50^k", "none (from scratch)",
        "3-D ResNet-50 on zero-filled undersampled k-space (real, imaginary per view; with C coils 2C channels "
        "per view, real and imaginary of each coil, normalised as k-MTR's)",
        _FROM_SCRATCH,
        build=_resnet, benchmark=True, lr_grid=SCRATCH_CNN_GRID, multicoil=True),
    "unet": MethodSpec(
        "image", ("segmentation",), "", "U-Net (full images)", "none (from scratch)",
        "MONAI 2-D U-Net per view and frame on fully sampled magnitude images (with coils: SENSE-1 magnitude of the "
        "noisy coil k-space, true maps)",
        _FROM_SCRATCH,
        build=_unet, benchmark=True, lr_grid=SCRATCH_UNET_GRID, multicoil=True),
    "unet_u": MethodSpec(
        "image_under", ("segmentation",), "", "U-Net^u", "none (from scratch)",
        "MONAI 2-D U-Net per view and frame on zero-filled undersampled magnitude images (with coils: "
        "SENSE-1 magnitude of the zero-filled noisy coil k-space, true maps)",
        _FROM_SCRATCH,
        build=_unet, benchmark=True, lr_grid=SCRATCH_UNET_GRID, multicoil=True),
    "nnunet": MethodSpec(
        "image", ("segmentation",), "", "nnU-Net (full images)", "none (from scratch)",
        "nnU-Net v2's self-configured 2-D U-Net per view and frame on fully sampled magnitude images (with "
        "coils: SENSE-1 magnitude of the coil k-space with the store's stored noise, true maps)",
        "nnU-Net's own planning, preprocessing, training (heads.nnunet_trainer) and inference (kmtr/nnunet)",
        fit=_fit_nnunet, is_finished=_nnunet_finished, own_recipe=_nnunet_recipe, require=_require_nnunet,
        benchmark=True, multicoil=True),
    "nnunet_u": MethodSpec(
        "image_under", ("segmentation",), "", "nnU-Net^u", "none (from scratch)",
        "nnU-Net v2's self-configured 2-D U-Net per view and frame on zero-filled undersampled magnitude images "
        "(with coils: SENSE-1 magnitude of the zero-filled coil k-space with the store's stored noise, true maps)",
        "nnU-Net's own planning, preprocessing, training (heads.nnunet_trainer) and inference (kmtr/nnunet)",
        fit=_fit_nnunet, is_finished=_nnunet_finished, own_recipe=_nnunet_recipe, require=_require_nnunet,
        benchmark=True, multicoil=True),
    "spectrum_ridge": MethodSpec(
        "kspace_under", ("regression", "classification"), "", "spectrum ridge", "none (no encoder)",
        "hand-crafted radial power spectrum of the undersampled k-space (kmtr/models/spectrum.py; with coils: "
        "the power summed over coils, stored noise)",
        "scikit-learn ridge (regression) / logistic regression (classification), regularisation chosen on "
        "the validation split",
        build=_spectrum_linear, fit=_fit_spectrum_ridge, own_recipe=_closed_form_recipe, reads_spectrum=True,
        needs_validation=True, benchmark=True, multicoil=True),
    "kmtr_spectrum": MethodSpec(
        "kspace_under", ("regression", "classification"), "stage2", "k-MTR + spectrum",
        "as k-MTR", "k-MTR's class token concatenated with the standardised radial power spectrum (not the paper; "
        "with coils: the power summed over coils)",
        "as k-MTR",
        build=_kspace_encoder_net, counts_tokens=True, reads_spectrum=True, lr_grid=FINE_TUNE_GRID, multicoil=True),
}
#: names in tables of the reference rows that are no method
REFERENCE_LABELS = {"mean_guess": "mean guess", "zero_filled": "zero-filled"}
#: a method's prediction variant (:meth:`kmtr.tasks.base.Task.prediction_variants`, the comparison column
#: ``<method>:<variant>``, :data:`kmtr.analysis.comparison.VARIANT_SEP`) is named ``<method's label> + <words>``
VARIANT_LABELS = {"data_consistent": "data consistency"}


def method_spec(name: str) -> MethodSpec:
    """The registry entry of ``name``.

    Raises:
        ConfigError: unknown method.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def register_method(name: str, spec: MethodSpec) -> None:
    """Add a stage-III method to the registry (training, prediction and the benchmark then know it).

    Raises:
        ValueError: ``name`` is taken, or ``spec`` has neither a network builder nor a trainer,
        or names an unknown task.
    """
    if name in METHODS or name in REFERENCE_LABELS:
        raise ValueError(f"method {name!r} is already registered")
    if spec.build is None and spec.fit is None:
        raise ValueError(f"method {name!r} needs a network builder (build) or its own trainer (fit)")
    for t in spec.tasks:
        get_task(t)
    METHODS[name] = spec


def method_label(name: str) -> str:
    """The name of method (or reference row, or ``<method>:<variant>`` column) ``name`` in tables."""
    method, sep, variant = name.partition(VARIANT_SEP)
    if sep:
        return f"{method_label(method)} + {VARIANT_LABELS.get(variant, variant)}"
    if name in REFERENCE_LABELS:
        return REFERENCE_LABELS[name]
    return (METHODS[name].label or name) if name in METHODS else name


def default_methods(task: str) -> tuple[str, ...]:
    """`kmtr benchmark`'s methods for ``task`` when none are named, in registry order."""
    return tuple(m for m, s in METHODS.items() if s.benchmark and task in s.tasks)


def spectrum_rings(cfg: TrainConfig) -> int:
    """Rings of the radial spectrum this run's method reads (0 = none: k-MTR, the MAE and the image
    baselines never read it, whatever ``heads.spectrum_rings`` says)."""
    return heads_spectrum_rings(cfg.heads) if method_spec(cfg.method).reads_spectrum else 0


def check_method_does(cfg: TrainConfig) -> tuple[MethodSpec, Task]:
    """(method, task) of ``cfg`` from the registries.

    Raises:
        ConfigError: unknown task or method, or a method that does not do the task.
    """
    task = get_task(cfg.task)
    spec = method_spec(cfg.method)
    if cfg.task not in spec.tasks:
        raise ConfigError(f"method {cfg.method} does not do {cfg.task} (it does {', '.join(spec.tasks)})")
    return spec, task


def check_reads_coils(method: str, coils: int | None) -> None:
    """Refuse a method that does not read stores with coils on one (``coils`` = C, None = single-coil).

    Raises:
        ConfigError: one line naming the methods that do.
    """
    if coils is not None and not method_spec(method).multicoil:
        able = ", ".join(m for m, s in METHODS.items() if s.multicoil)
        raise ConfigError(f"method {method} does not read stores with coils (this store has {coils}); "
                          f"methods that do: {able}")


def build_task_model(
    cfg: TrainConfig, shape: tuple[int, int, int, int], view_ids: tuple[int, ...], targets: dict[str, Any],
    state: dict[str, Any] | None = None, coils: int | None = None,
) -> TaskModel:
    """The method's network for the task (encoder weights from ``state`` for kmtr / mae; ``coils``:
    C of a store with coils, None for a single-coil store).

    Raises:
        ConfigError: unknown method or task, a method that does not do the task, one without a
        kmtr model (nnU-Net trains and predicts itself, :mod:`kmtr.nnunet`), or a method that does
        not read stores with coils on one.
    """
    check_reads_coils(cfg.method, coils)
    spec = method_spec(cfg.method)
    if cfg.task not in spec.tasks:
        raise ConfigError(f"method {cfg.method} does not do {cfg.task} (it does {', '.join(spec.tasks)})")
    task = get_task(cfg.task)
    if spec.build is None:
        raise ConfigError(f"method {cfg.method} has no kmtr model; it is trained and evaluated by its own trainer "
                          f"({spec.recipe})")
    net = (spec.build(cfg, shape, view_ids, task, targets["out_dim"], state, coils=coils) if spec.multicoil
           else spec.build(cfg, shape, view_ids, task, targets["out_dim"], state))
    return TaskModel(net, task, targets, cfg.heads)
