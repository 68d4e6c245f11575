"""Train or predict with nnU-Net through its Python API, in a process of its own.

Run by :mod:`kmtr.nnunet.run` as ``python -m kmtr.nnunet.worker <command> …`` with ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` set to the run folder's (nnU-Net reads them when it is
imported, so each run gets a fresh process). Commands:

* ``check-trainer NAME`` — exit 0 when NAME is one of nnU-Net's trainers or of
  :mod:`kmtr.nnunet.trainers.kmtr_nnunet_trainers`, else one line and exit 2;
* ``train DATASET FOLD TRAINER DEVICE [--continue]`` — what ``nnUNetv2_train DATASET 2d FOLD -tr
  TRAINER -device DEVICE [--c]`` does (nnU-Net's trainer class, its ``maybe_load_checkpoint`` and
  ``run_training``), except that the trainer may also be one of ours and nnU-Net's final validation
  pass over its own validation fold is not run (the benchmark evaluates on the test split);
* ``predict DATASET FOLD TRAINER DEVICE INPUT OUTPUT [--disable_tta]`` — nnU-Net's ``nnUNetPredictor``
  (sliding window with Gaussian weighting and mirroring, nnU-Net's defaults) on every image of INPUT with
  ``checkpoint_final.pth``, label maps written to OUTPUT; finished cases are skipped
  (``overwrite=False``), so an interrupted prediction resumes.

Only this module (and the trainers it loads) imports nnunetv2.
"""

from __future__ import annotations

import argparse
import os
import sys
from os.path import join
from typing import Any

CONFIGURATION = "2d"
PLANS = "nnUNetPlans"


def find_trainer(name: str) -> Any:
    """nnU-Net's trainer class ``name`` (searched where nnU-Net searches), else ours; None if neither."""
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    found = recursive_find_python_class(join(nnunetv2.__path__[0], "training", "nnUNetTrainer"), name,
                                        "nnunetv2.training.nnUNetTrainer")
    if found is None:
        from kmtr.nnunet.trainers import kmtr_nnunet_trainers

        found = getattr(kmtr_nnunet_trainers, name, None)
    return found


def _device(name: str) -> Any:
    import torch

    if name == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))  # as nnUNetv2_train -device cpu
        return torch.device("cpu")
    torch.set_num_threads(1)  # nnU-Net's setting on a GPU
    torch.set_num_interop_threads(1)
    return torch.device(name)


def _fold(fold: str) -> int | str:
    return fold if fold == "all" else int(fold)


def train(dataset: str, fold: str, trainer_name: str, device_name: str, continue_training: bool) -> None:
    """nnU-Net's single-device ``run_training`` with the trainer class resolved by :func:`find_trainer`."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.run.run_training import maybe_load_checkpoint

    device = _device(device_name)
    trainer_class = find_trainer(trainer_name)
    if trainer_class is None:
        raise SystemExit(f"unknown nnU-Net trainer {trainer_name!r}")
    folder = join(nnUNet_preprocessed, dataset)
    plans = load_json(join(folder, PLANS + ".json"))
    trainer = trainer_class(plans=plans, configuration=CONFIGURATION, fold=_fold(fold),
                            dataset_json=load_json(join(folder, "dataset.json")), device=device)
    maybe_load_checkpoint(trainer, continue_training, False)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    trainer.run_training()


def predict(dataset: str, fold: str, trainer_name: str, device_name: str, source: str, target: str,
            mirroring: bool = True) -> None:
    """``nnUNetPredictor`` initialised as ``initialize_from_trained_model_folder`` does (plans,
    dataset.json and ``checkpoint_final.pth`` of the fold; the network built by the trainer class),
    then ``predict_from_files_sequential`` (one process)."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.paths import nnUNet_results
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    device = _device(device_name)
    trainer_class = find_trainer(trainer_name)
    if trainer_class is None:
        raise SystemExit(f"unknown nnU-Net trainer {trainer_name!r}")
    model_dir = join(nnUNet_results, dataset, f"{trainer_name}__{PLANS}__{CONFIGURATION}")
    dataset_json = load_json(join(model_dir, "dataset.json"))
    plans_manager = PlansManager(load_json(join(model_dir, "plans.json")))
    checkpoint = torch.load(join(model_dir, f"fold_{fold}", "checkpoint_final.pth"), map_location="cpu",
                            weights_only=False)
    configuration = plans_manager.get_configuration(checkpoint["init_args"]["configuration"])
    network = trainer_class.build_network_architecture(
        configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans_manager, configuration, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    predictor = nnUNetPredictor(use_mirroring=mirroring, device=device,
                                perform_everything_on_device=device.type == "cuda", allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration, [checkpoint["network_weights"]],
                                    dataset_json, checkpoint["trainer_name"],
                                    checkpoint.get("inference_allowed_mirroring_axes"))
    os.makedirs(target, exist_ok=True)
    predictor.predict_from_files_sequential(source, target, save_probabilities=False, overwrite=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kmtr.nnunet.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-trainer")
    check.add_argument("trainer")
    for name in ("train", "predict"):
        p = sub.add_parser(name)
        for arg in ("dataset", "fold", "trainer", "device"):
            p.add_argument(arg)
        if name == "train":
            p.add_argument("--continue", dest="continue_training", action="store_true")
        else:
            p.add_argument("source")
            p.add_argument("target")
            p.add_argument("--disable_tta", action="store_true", help="as nnUNetv2_predict --disable_tta")
    args = parser.parse_args(argv)
    if args.command == "check-trainer":
        if find_trainer(args.trainer) is None:
            print(f"unknown nnU-Net trainer {args.trainer!r}: neither nnU-Net's (nnunetv2.training.nnUNetTrainer) "
                  f"nor kmtr's (kmtr/nnunet/trainers)", file=sys.stderr)
            raise SystemExit(2)
    elif args.command == "train":
        train(args.dataset, args.fold, args.trainer, args.device, args.continue_training)
    else:
        predict(args.dataset, args.fold, args.trainer, args.device, args.source, args.target, not args.disable_tta)


if __name__ == "__main__":
    main()
