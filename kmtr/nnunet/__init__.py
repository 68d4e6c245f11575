"""nnU-Net (Isensee et al., Nature Methods 2021) as a segmentation baseline, run through nnU-Net's own CLI.

The paper's segmentation baselines are nnU-Net on fully sampled images and nnU-Net^u on zero-filled
undersampled images. Nothing of nnU-Net is re-implemented here:

* :mod:`kmtr.nnunet.export` writes the store's magnitude images and labels in nnU-Net's raw dataset
  format (one 2-D case per subject, view and kept frame);
* :mod:`kmtr.nnunet.run` runs ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train`` and
  ``nnUNetv2_predict`` (the ``nnunetv2`` package, ``pip install -e ".[nnunet]"``) with
  ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` inside the run folder;
* :mod:`kmtr.nnunet.predictions` reads nnU-Net's predicted label maps back into the
  :class:`kmtr.analysis.predictions.Predictions` that k-MTR's Dice / HD95 tables read.

``kmtr/nnunet/trainers/`` holds shorter nnU-Net trainer variants (subclasses of nnU-Net's
``nnUNetTrainer`` that change only the number of epochs and iterations), found by nnU-Net through its
``nnUNet_extTrainer`` search path. Importing this package does not import nnunetv2.
"""

from __future__ import annotations

import importlib.util

__all__ = ["INSTALL_HINT", "NNUNET_METHODS", "NNUNET_TASKS", "NnUNetMissing", "nnunet_available", "require_nnunet"]

#: benchmark method → the image it segments (:func:`kmtr.models.baselines.baseline_input` kinds)
NNUNET_METHODS: dict[str, str] = {"nnunet": "image", "nnunet_u": "image_under"}
#: the stage-III tasks nnU-Net does
NNUNET_TASKS: tuple[str, ...] = ("segmentation",)

INSTALL_HINT = 'nnU-Net is an optional extra: pip install -e ".[nnunet]"'


class NnUNetMissing(ValueError):
    """nnunetv2 is not installed (the ``nnunet`` extra): a request this installation cannot run (a
    ValueError like :class:`kmtr.train.runner.ConfigError`, so the CLI reports it in one line, exit 2).
    Defined without importing the trainer, as :mod:`kmtr.nnunet.worker` runs on this package."""


def nnunet_available() -> bool:
    """True when the ``nnunetv2`` package can be imported."""
    return importlib.util.find_spec("nnunetv2") is not None


def require_nnunet(method: str = "nnunet") -> None:
    """Raises :class:`NnUNetMissing` (one line naming the extra) when nnunetv2 is not installed."""
    if not nnunet_available():
        raise NnUNetMissing(f"method {method} needs nnunetv2, which is not installed; {INSTALL_HINT} "
                            f"(or leave {method} out of --method)")
