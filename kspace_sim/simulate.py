"""One subject through the simulator, in memory: views → B0 phase → FFT → masks.

Pure computation on arrays (no I/O), so that it can be tested, benchmarked and run inside any
scheduler. Every random draw is seeded from the global seed and the subject id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kspace_sim.fft import fft2c_modulated
from kspace_sim.masks import acs_lines_mask, make_mask, mask_bank, mask_name, validate_mask_request
from kspace_sim.phase import phase_factor, smooth_phase_map
from kspace_sim.seeding import derive_rng, derive_seed
from kspace_sim.sources.subject import SubjectVolumes
from kspace_sim.views import ViewStack, extract_views

DEFAULT_VISTA_BANK = 16

__all__ = ["DEFAULT_VISTA_BANK", "default_bank_size", "MaskSpec", "SimulationParams", "SimulatedSubject", "simulate_subject", "subject_masks", "mask_banks", "bank_seed", "validate_masks"]


@dataclass(frozen=True)
class MaskSpec:
    """One undersampling mask to store.

    Attributes:
        pattern: registered pattern name.
        acceleration: R.
        options: pattern options.
        bank_size: 0 = an independent pattern per slice; K > 0 = each slice takes one of K
            patterns computed once per build (seeded from the global seed and the mask name) with
            a per-slice cyclic time shift (see :func:`kspace_sim.masks.make_mask`). ``None`` (the
            default): :func:`default_bank_size` (16 for VISTA, whose patterns take seconds each; else 0).
    """

    pattern: str
    acceleration: float
    options: dict[str, Any] = field(default_factory=dict)
    bank_size: int | None = None

    def __post_init__(self) -> None:
        if self.bank_size is None:
            object.__setattr__(self, "bank_size", default_bank_size(self.pattern))

    @property
    def name(self) -> str:
        return mask_name(self.pattern, self.acceleration)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "acceleration": float(self.acceleration),
            "options": dict(self.options),
            "bank_size": int(self.bank_size),
        }


def default_bank_size(pattern: str, bank: int | None = None) -> int:
    """The mask bank size: ``bank`` when given, else 16 precomputed patterns for VISTA (seconds per
    pattern), else 0 (a fresh pattern per slice)."""
    if bank is not None:
        return bank
    return DEFAULT_VISTA_BANK if pattern == "vista" else 0


def bank_seed(spec: MaskSpec, global_seed: int) -> int:
    """Seed of a spec's pattern bank: derived from the global seed and the mask name."""
    return derive_seed(global_seed, "mask-bank", spec.name)


def mask_banks(specs: list[MaskSpec], global_seed: int, n_frames: int, n_lines: int) -> dict[str, np.ndarray]:
    """The ``(K, T, W)`` pattern bank of every spec with ``bank_size > 0`` (computed once per build)."""
    return {
        spec.name: mask_bank(
            spec.pattern, spec.bank_size, n_frames, n_lines, spec.acceleration, bank_seed(spec, global_seed), **spec.options
        )
        for spec in specs
        if spec.bank_size > 0
    }


@dataclass(frozen=True)
class SimulationParams:
    """Every parameter that changes the k-space of a subject (recorded in the store)."""

    crop: int = 128
    frames: int = 50
    phase_amplitude: float = float(np.pi)
    phase_smoothness: float = 0.15
    phase_ramp: float = 0.5

    def validate(self) -> None:
        if self.crop < 8 or self.crop % 4:
            raise ValueError(f"crop must be a multiple of 4 and >= 8, got {self.crop}")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")
        if self.phase_amplitude < 0 or self.phase_smoothness <= 0 or self.phase_ramp < 0:
            raise ValueError("phase amplitude/ramp must be >= 0 and smoothness > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SimulatedSubject:
    """The simulator's output for one subject.

    Attributes:
        kspace: ``(S, T, H, W)`` complex64, fully sampled.
        views: the cropped magnitude views and their metadata.
        masks: ``{name: (S, T, W) bool}``.
    """

    kspace: np.ndarray
    views: ViewStack
    masks: dict[str, np.ndarray]


def subject_masks(
    subject_id: str,
    specs: list[MaskSpec],
    global_seed: int,
    n_slices: int,
    n_frames: int,
    n_lines: int,
    banks: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Masks ``{name: (S, T, W) bool}`` of one subject, seeded by (global seed, subject, mask name).

    ``banks`` are the precomputed :func:`mask_banks` (computed here when missing).
    """
    missing = [s for s in specs if s.bank_size > 0 and (banks is None or s.name not in banks)]
    banks = {**(banks or {}), **mask_banks(missing, global_seed, n_frames, n_lines)}
    return {
        spec.name: make_mask(
            spec.pattern,
            n_slices,
            n_frames,
            n_lines,
            spec.acceleration,
            derive_seed(global_seed, subject_id, "mask", spec.name),
            bank=banks.get(spec.name),
            **spec.options,
        )
        for spec in specs
    }


def simulate_subject(
    vol: SubjectVolumes,
    params: SimulationParams,
    masks: list[MaskSpec],
    global_seed: int,
    banks: dict[str, np.ndarray] | None = None,
) -> SimulatedSubject:
    """Simulate the fully sampled k-space and the undersampling masks of one subject.

    Steps: :func:`kspace_sim.views.extract_views` (S = 9 views, T frames, crop × crop, [0, 1]),
    a smooth static B0 phase per slice, then the centred orthonormal FFT over (H, W).
    """
    views = extract_views(vol, crop=params.crop, n_frames=params.frames)
    s, _, h, w = views.images.shape
    phase = np.stack(
        [
            smooth_phase_map(
                (h, w),
                derive_rng(global_seed, vol.subject_id, "phase", i),
                params.phase_amplitude,
                params.phase_smoothness,
                params.phase_ramp,
            )
            for i in range(s)
        ]
    )
    kspace = fft2c_modulated(views.images, phase_factor(phase))  # = fft2c(apply_phase(images, phase))
    return SimulatedSubject(kspace, views, subject_masks(vol.subject_id, masks, global_seed, s, params.frames, w, banks))


def validate_masks(specs: list[MaskSpec], params: SimulationParams) -> None:
    """Fail before any work on an unknown pattern, an impossible R, options the pattern refuses
    (e.g. VISTA with R = 1) or two masks with the same name."""
    seen: set[str] = set()
    for spec in specs:
        if spec.bank_size < 0:
            raise ValueError(f"mask bank size must be >= 0, got {spec.bank_size}")
        validate_mask_request(spec.pattern, spec.acceleration, params.frames, params.crop, **spec.options)
        acs_lines_mask(spec.pattern, params.crop, spec.acceleration, **spec.options)
        if spec.name in seen:
            raise ValueError(f"mask {spec.name} requested twice")
        seen.add(spec.name)

