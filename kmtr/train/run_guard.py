"""What a training command may do with a run folder that already holds a checkpoint.

A run is never discarded silently. With ``mode``:

* ``"auto"`` (the default of ``kmtr train``): a folder without ``last.pt`` starts fresh; one whose
  saved config *matches* the requested one continues from ``last.pt`` (a finished run trains
  nothing more); any other stops with :class:`RunConflictError`, one line naming the differences
  and the choices.
* ``"resume"`` (``--resume``): continue from ``last.pt`` whatever the requested config (e.g. more
  epochs, another learning rate); the new config is saved with the run from then on.
* ``"restart"`` (``--restart``): delete the run folder and train from scratch.

"Matches" means every config field is equal except the bookkeeping fields in :data:`BOOKKEEPING`,
which change how a run is executed or reported but not what it computes (progress bars, logging
and checkpoint cadence, the step cap, the device, DataLoader workers and caching, gradient
checkpointing and stage II's gradient-caching chunk size, which give the same gradients), and
except the spelling of local paths (``data.data`` and ``init`` are compared as absolute paths).
A field missing from a run saved before that field existed counts as the field's default in
:class:`kmtr.config.TrainConfig` (a new field's default is the behaviour from before it existed), so
adding an option does not turn every older run into a conflict.
"""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

from kmtr.config import RENAMED_KEYS, TrainConfig, config_to_dict
from kmtr.train.checkpoint import load_checkpoint

__all__ = ["BOOKKEEPING", "MODES", "RunConflictError", "flatten", "config_differences", "saved_config",
           "prepare_run_folder", "check_run_folder"]

#: Dotted config keys that do not change what a run computes (see the module docstring).
BOOKKEEPING = frozenset({
    "run.name", "run.out_dir", "run.device", "run.log_every", "run.ckpt_every_steps", "run.png_every_epochs",
    "run.tensorboard", "run.progress", "run.max_steps", "data.num_workers", "data.cache", "arch.grad_checkpoint",
    "optim.chunk_size",
})
_PATH_KEYS = ("data.data", "init")
MODES = ("auto", "resume", "restart")


class RunConflictError(ValueError):
    """The run folder holds a checkpoint of another configuration (or of a finished run)."""


def flatten(config: dict[str, Any]) -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` → ``{"optim.lr": 1}`` (``extra_state`` dropped)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key == "extra_state":
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _normalised(key: str, value: Any) -> Any:
    if key in _PATH_KEYS and isinstance(value, str) and value and "://" not in value and value != "scratch":
        return os.path.abspath(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@cache
def _field_defaults() -> dict[str, Any]:
    """Every config field's default, flattened (``{"heads.seg_out_stride": 1, …}``)."""
    return flatten(config_to_dict(TrainConfig()))


def config_differences(saved: dict[str, Any], requested: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """``"key saved → requested"`` for every non-bookkeeping field that differs (nested dicts as
    :func:`kmtr.config.config_to_dict` writes them); keys starting with one of ``ignore`` are skipped.
    A field the saved run lacks (saved before the field existed) counts as the field's default."""
    a = {RENAMED_KEYS.get(k, k): v for k, v in flatten(saved).items()}  # runs saved before a key was renamed
    b = flatten(requested)
    defaults = _field_defaults()
    a.update({k: defaults[k] for k in b if k not in a and k in defaults})
    out = []
    for key in sorted(set(a) | set(b)):
        if key in BOOKKEEPING or key.startswith(ignore):
            continue
        va, vb = _normalised(key, a.get(key, "<absent>")), _normalised(key, b.get(key, "<absent>"))
        if va != vb:
            out.append(f"{key} {va!r} → {vb!r}")
    return out


def saved_config(run_dir: str | Path) -> tuple[dict[str, Any], int] | None:
    """(config, epochs trained) of the run's ``last.pt``, None when there is none."""
    ckpt = Path(run_dir) / "last.pt"
    if not ckpt.exists():
        return None
    state = load_checkpoint(ckpt)
    return dict(state.get("config") or {}), int(state.get("epoch", 0))


def prepare_run_folder(run_dir: str | Path, requested: dict[str, Any], mode: str, epochs: int,
                       remove: bool = True) -> bool:
    """Decide, before any training, what happens to ``run_dir``; returns True when training
    continues from its ``last.pt``, False when it starts from scratch.

    Args:
        requested: the run's config as :func:`kmtr.config.config_to_dict` gives it.
        mode: ``auto`` | ``resume`` | ``restart`` (see the module docstring).
        epochs: the requested epoch count (to say whether the saved run is finished).
        remove: delete the folder on ``restart`` (False on all but one DDP process).

    Raises:
        RunConflictError: ``auto`` and the saved config differs (message: one line, the
            differences and the choices).
        ValueError: an unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"run mode must be one of {', '.join(MODES)}, not {mode!r}")
    run_dir = Path(run_dir)
    if mode == "restart":
        if remove and run_dir.exists():
            shutil.rmtree(run_dir)
            print(f"--restart: removed the previous run in {run_dir}", flush=True)
        return False
    saved = saved_config(run_dir)
    if saved is None:
        return False
    if mode == "resume":
        return True
    check_run_folder(run_dir, requested)
    return True


def check_run_folder(run_dir: str | Path, requested: dict[str, Any], ignore: tuple[str, ...] = ()) -> None:
    """Raise :class:`RunConflictError` when ``run_dir`` holds a checkpoint whose config differs from
    ``requested`` (bookkeeping fields and keys starting with ``ignore`` aside); used early, before
    any data is read, with ``ignore`` = what a stage adopts from its init checkpoint."""
    saved = saved_config(run_dir)
    if saved is None:
        return
    config, done = saved
    diffs = config_differences(config, requested, ignore)
    if diffs:
        state = "finished" if done >= int(flatten(config).get("optim.epochs", 0) or 0) else f"at epoch {done}"
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise RunConflictError(
            f"{run_dir} holds a run ({state}) with another config ({shown}): --resume continues it with the new "
            f"config, --restart deletes it and starts over, or choose another --name"
        )
