"""The training and validation datasets of a run, from its config (every stage)."""

from __future__ import annotations

from kmtr.config import TrainConfig
from kmtr.data import AugmentConfig, KSpaceDataset
from kmtr.errors import ConfigError

__all__ = ["build_datasets"]


def build_datasets(cfg: TrainConfig) -> tuple[KSpaceDataset, KSpaceDataset | None]:
    """Train (augmented) and validation datasets; raises StoreError early on bad input."""
    d = cfg.data
    if not d.data:
        raise ConfigError("no data given (--data STORE | URL | MANIFEST)")
    aug = AugmentConfig(enabled=d.augment, flip_p=d.flip_p, max_angle=d.max_angle, phase_amplitude=d.phase_amplitude,
                        seed=cfg.run.seed)
    # stores with coils: a fresh noise draw per epoch for training, the stored draw for validation
    train = KSpaceDataset(d.data, d.train_split, d.mask, d.frames, aug, cache=d.cache, coil_noise="fresh")
    val = KSpaceDataset(d.data, d.val_split, d.mask, d.frames, None, cache=d.cache) if d.val_split else None
    return train, val
