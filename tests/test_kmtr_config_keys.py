"""Issue 24: one MAE size definition (ArchConfig extends MAEConfig) and distinct names for the two
magnitude switches (arch.image_magnitude: the image MAE; heads.baseline_magnitude: the image
baselines, formerly heads.image_magnitude, which saved runs and --set still use)."""

from __future__ import annotations

import dataclasses

from kmtr.config import ArchConfig, MAEConfig, TrainConfig, apply_overrides, config_from_dict, config_to_dict


def test_arch_config_is_the_mae_sizes_plus_the_stage1_objective():
    from kmtr.models.mae import MAEConfig as ModelMAEConfig

    assert ModelMAEConfig is MAEConfig and issubclass(ArchConfig, MAEConfig)
    names = [f.name for f in dataclasses.fields(ArchConfig)]
    assert names[: len(dataclasses.fields(MAEConfig))] == [f.name for f in dataclasses.fields(MAEConfig)]


def test_the_two_magnitude_switches_keep_their_defaults_and_the_old_key_still_reads():
    cfg = TrainConfig()
    assert cfg.arch.image_magnitude is False and cfg.heads.baseline_magnitude is True
    assert not hasattr(cfg.heads, "image_magnitude")
    apply_overrides(cfg, {"heads.image_magnitude": "false"})
    assert cfg.heads.baseline_magnitude is False and cfg.arch.image_magnitude is False
    saved = config_to_dict(TrainConfig())
    saved["heads"]["image_magnitude"] = saved["heads"].pop("baseline_magnitude")
    saved["heads"]["image_magnitude"] = False
    assert config_from_dict(saved).heads.baseline_magnitude is False


def test_a_run_saved_under_the_old_key_has_the_same_config():
    from kmtr.train.run_guard import config_differences

    saved = config_to_dict(TrainConfig())
    saved["heads"]["image_magnitude"] = saved["heads"].pop("baseline_magnitude")
    assert config_differences(saved, config_to_dict(TrainConfig())) == []
    saved["heads"]["image_magnitude"] = False
    assert config_differences(saved, config_to_dict(TrainConfig())) == ["heads.baseline_magnitude False → True"]
