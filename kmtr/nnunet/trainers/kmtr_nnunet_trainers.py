"""Shorter schedules of nnU-Net's own trainer, for CPU runs (the ``tiny`` preset and the CI test).

Each class is nnU-Net's ``nnUNetTrainer`` (same plans, network, augmentation, loss, optimiser,
poly learning-rate schedule, validation and inference) with fewer epochs and fewer iterations per
epoch, as nnU-Net's own ``nnUNetTrainer_<X>epochs`` variants change only the epoch count. nnU-Net
finds them by name through the ``nnUNet_extTrainer`` environment variable, which
:mod:`kmtr.nnunet.run` points at this folder; only nnU-Net imports this module.

The ``paper`` preset uses the default ``nnUNetTrainer`` (1000 epochs × 250 iterations).
"""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class _ShortSchedule(nnUNetTrainer):
    """nnUNetTrainer with ``EPOCHS`` epochs of ``ITERATIONS`` training and ``VAL_ITERATIONS``
    validation batches, and a checkpoint every ``SAVE_EVERY`` epochs (resumable with ``--c``)."""

    EPOCHS = 1000
    ITERATIONS = 250
    VAL_ITERATIONS = 50
    SAVE_EVERY = 50

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.EPOCHS
        self.num_iterations_per_epoch = self.ITERATIONS
        self.num_val_iterations_per_epoch = self.VAL_ITERATIONS
        self.save_every = self.SAVE_EVERY


class nnUNetTrainer_1epoch_10iters(_ShortSchedule):
    """1 epoch of 10 iterations (2 validation batches): the CI test of the whole nnU-Net path."""

    EPOCHS, ITERATIONS, VAL_ITERATIONS, SAVE_EVERY = 1, 10, 2, 1


class nnUNetTrainer_10epochs_25iters(_ShortSchedule):
    """10 epochs of 25 iterations (5 validation batches; 250 iterations, one default epoch's worth):
    the ``tiny`` preset on a CPU, where one iteration of nnU-Net's 2-D network at 128 × 128 with the
    tiny preset's batch of 5 takes about 3 s."""

    EPOCHS, ITERATIONS, VAL_ITERATIONS, SAVE_EVERY = 10, 25, 5, 2
