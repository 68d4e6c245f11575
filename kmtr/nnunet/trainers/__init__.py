"""nnU-Net trainer variants of kmtr (imported only by :mod:`kmtr.nnunet.worker`, as it needs nnunetv2)."""

#: the trainers defined in :mod:`kmtr.nnunet.trainers.kmtr_nnunet_trainers`
KMTR_TRAINERS = ("nnUNetTrainer_1epoch_10iters", "nnUNetTrainer_10epochs_25iters")
