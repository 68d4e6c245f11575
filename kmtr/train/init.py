"""Starting a stage from the previous one: find its checkpoint, adopt its architecture, load weights."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn

from kmtr.config import TrainConfig, config_from_dict
from kmtr.errors import ConfigError
from kmtr.train.checkpoint import load_checkpoint

__all__ = ["resolve_init", "load_init", "adopt_architecture", "encoder_prefix", "load_prefixed"]


def resolve_init(cfg: TrainConfig, previous: str) -> Path:
    """The checkpoint a stage starts from: ``cfg.init`` (a ``.pt`` file or a run folder holding
    ``last.pt``), else ``<out_dir>/<name>/<previous>/last.pt``.

    Raises:
        ConfigError: no such checkpoint (names the stage to run first).
    """
    path = Path(cfg.init) if cfg.init else Path(cfg.run.out_dir) / cfg.run.name / previous
    if path.is_dir() or not path.suffix:
        path = path / "last.pt"
    if not path.exists():
        hint = f"--init PATH, or run `kmtr train --stage {previous[5]}` with --name {cfg.run.name}" \
            if previous.startswith("stage") else "--init PATH"
        raise ConfigError(f"no checkpoint to start from at {path} ({hint})")
    return path


def load_init(path: Path) -> tuple[dict[str, Any], TrainConfig]:
    """(model state dict, the training config saved with it)."""
    state = load_checkpoint(path)
    return state["model"], config_from_dict({k: v for k, v in state.get("config", {}).items() if k != "extra_state"})


def adopt_architecture(cfg: TrainConfig, init_cfg: TrainConfig) -> TrainConfig:
    """Copy the architecture and frame count of the checkpoint's run into ``cfg`` (in place);
    gradient checkpointing stays as ``cfg`` asks."""
    grad_ckpt = cfg.arch.grad_checkpoint
    cfg.arch = copy.deepcopy(init_cfg.arch)
    cfg.arch.grad_checkpoint = grad_ckpt
    cfg.data.frames = init_cfg.data.frames
    return cfg


def encoder_prefix(state: dict[str, Any]) -> str:
    """Where the k-space encoder's weights sit in a checkpoint's model state: ``kspace`` in a
    stage-I or stage-II checkpoint, ``net.encoder`` in a k-MTR stage-III one (e.g. starting
    regression from a segmentation fine-tune: ``--init runs/<name>/stage3-segmentation``)."""
    if any(k.startswith("kspace.") for k in state):
        return "kspace"
    if any(k.startswith("net.encoder.") for k in state):
        return "net.encoder"
    raise ConfigError("the checkpoint holds no k-space encoder (no 'kspace.' or 'net.encoder.' weights)")


def load_prefixed(module: nn.Module, state: dict[str, Any], prefix: str) -> None:
    """Load the entries ``<prefix>.<key>`` of ``state`` that ``module`` has (decoders of the
    previous stage are ignored); every parameter of ``module`` must be found.

    Raises:
        ConfigError: a parameter of ``module`` is missing from the checkpoint or has another shape.
    """
    own = module.state_dict()
    picked = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".") and k[len(prefix) + 1:] in own}
    missing = sorted(set(own) - set(picked))
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} weights of {prefix!r}, e.g. {missing[:3]}")
    bad = [k for k, v in picked.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ConfigError(f"checkpoint weights of {prefix!r} have other shapes: {bad[:3]}")
    module.load_state_dict(picked)
