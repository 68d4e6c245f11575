"""Radial power spectrum of undersampled cine k-space: a fixed, hand-crafted descriptor.

It is read by two separately named methods, never by k-MTR itself (issue 21): ``spectrum_ridge``
(:mod:`kmtr.train.spectrum_ridge`: ridge / logistic regression on the descriptor alone, no
encoder) and ``kmtr_spectrum`` (k-MTR's heads reading the descriptor beside the class token). It
is computed from the undersampled k-space only (no image, no inverse FFT) and has no parameters to
learn. Its standardisation statistics come from the training split (:func:`spectrum_statistics`)
and are saved in the model's buffers.

Two groups of features, each a log mean power over the **sampled** k-space points of a radial
frequency ring (ring 0 is the centre sample, rings 1…R−1 have log-spaced edges out to the
corner). They are computed on k-space normalised per subject by the RMS of its sampled lines
(:mod:`kmtr.normalise`).

- **static** ``(S, R)``: the power over all selected frames. The radial spectrum of a slice
  encodes the sizes of the structures in it (a ring of wall thickness ``w`` has its spectral
  envelope at ``~1/w``). It does not depend on the orientation of the heart in plane.
- **dynamic** ``(S, T−1, R)``: the power of ``k_t − k_0``, frame ``t`` minus the first selected
  frame (end-diastole in UK Biobank cine), on the lines sampled in both. Static tissue cancels,
  so this measures how much the heart has moved since end-diastole: the stroke volume.

On a store with coils (docs/multicoil.md) the descriptor reads the coil k-space ``k_c``
(B, C, S, T, H, W) and the power of a sample is **summed over coils**, ``Σ_c |k_c|²`` (and
``Σ_c |k_c,t − k_c,0|²`` for the dynamic features): the power spectrum of the multi-coil
acquisition, each ring's log mean over its sampled points as above (the same lines in every coil).
Power is additive over coils, and the coil-summed power equals the coil-free one in total:
with ``Σ_c |S_c|² = 1`` and the unitary FFT, ``Σ_c Σ_k |FFT(S_c x)|² = Σ_p |x|²`` (Parseval); per
ring it is the coil-free spectrum blurred by the maps' (smooth, narrow-band) spectra, plus
``Σ_c Ψ_cc σ² = C σ²`` of noise per sample. The feature count is the single-coil one.

Why: on the 256-subject demo the tiny k-space transformer's pooled output regressed LVEDV, LVEF
and LVM no better than the mean guess, and its disease AUCs were at chance; a linear model on
these features beats the mean guess for all three phenotypes. How far such second-order k-space
statistics go is a question worth a baseline of its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["SPECTRUM_RINGS", "heads_spectrum_rings", "ring_index", "spectrum_features", "KSpaceSpectrum",
           "spectrum_statistics"]

#: rings of the radial spectrum read by the spectrum methods when ``heads.spectrum_rings`` is 0
SPECTRUM_RINGS = 16


def heads_spectrum_rings(heads: Any) -> int:
    """Rings a method that reads the spectrum uses: ``heads.spectrum_rings``, 0 meaning :data:`SPECTRUM_RINGS`.

    Raises:
        ConfigError: fewer than 2 rings asked for.
    """
    from kmtr.errors import ConfigError

    rings = heads.spectrum_rings or SPECTRUM_RINGS
    if rings < 2:
        raise ConfigError(f"heads.spectrum_rings must be 0 (the default, {SPECTRUM_RINGS}) or at least 2, not {rings}")
    return rings

_EPS = 1e-8  # power floor, in units of the subject's mean power (normalised k-space has mean power 1)


def ring_index(h: int, w: int, rings: int) -> torch.Tensor:
    """Ring of every k-space sample of a centred ``(h, w)`` grid → ``(h, w)`` int64 in ``[0, rings)``.

    The radius is measured in samples from the centre ``(h // 2, w // 2)`` (the DC sample of
    :func:`kmtr.fft.fft2c`). Ring 0 is ``r < 1``; rings ``1 … rings − 1`` split ``[1, r_max]`` with
    log-spaced edges, ``r_max`` the corner radius.

    Raises:
        ValueError: ``rings`` < 2.
    """
    if rings < 2:
        raise ValueError(f"a radial spectrum needs at least 2 rings, not {rings}")
    ky = torch.arange(h, dtype=torch.float64) - h // 2
    kx = torch.arange(w, dtype=torch.float64) - w // 2
    radius = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    r_max = math.hypot(h / 2, w / 2)
    inner = torch.logspace(0.0, math.log10(r_max), rings, dtype=torch.float64)[:-1]  # rings - 1 inner edges
    return torch.bucketize(radius, inner, right=True).clamp_max(rings - 1)


def _ring_log_power(power: torch.Tensor, sampled: torch.Tensor, onehot: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Log mean power per ring over the sampled points.

    power (..., H, W) with zeros where not sampled; sampled (..., W) float (1 = line sampled);
    onehot (H·W, R); columns (W, R) = samples of each line in each ring → (..., R).
    """
    total = power.flatten(-2) @ onehot
    count = sampled @ columns
    return torch.log(total / count.clamp_min(1.0) + _EPS)


def spectrum_features(kspace: torch.Tensor, mask: torch.Tensor, rings: torch.Tensor, n_rings: int) -> torch.Tensor:
    """The descriptor of a batch, unstandardised.

    Args:
        kspace: (B, S, T, H, W) complex, normalised per subject, fully sampled (undersampled here);
            or coil k-space (B, C, S, T, H, W), whose power is summed over coils.
        mask: (B, S, T, W) bool or 0/1, the sampled phase-encode lines of each frame.
        rings: (H, W) int64 from :func:`ring_index`.
        n_rings: R.

    Returns:
        (B, S·R + S·(T−1)·R) float32: the static features, then the dynamic ones (view-major).
    """
    onehot = nn.functional.one_hot(rings.flatten(), n_rings).to(torch.float32)  # (H·W, R)
    columns = onehot.reshape(*rings.shape, n_rings).sum(dim=0)  # (W, R)
    k = kspace.to(torch.complex64)
    coils = k.ndim == 6
    m = mask.to(torch.float32)
    lines = m[:, None] if coils else m  # the same lines in every coil

    def power(z: torch.Tensor) -> torch.Tensor:  # |z|², summed over coils
        p = z.real.square() + z.imag.square()
        return p.sum(dim=1) if coils else p

    sampled = k * lines[..., None, :]
    static = _ring_log_power(power(sampled).sum(dim=2), m.sum(dim=2), onehot, columns)  # (B, S, R)
    b, t = k.shape[0], k.shape[-3]
    if t < 2:
        return static.reshape(b, -1)
    both = m[:, :, 1:] * m[:, :, :1]  # (B, S, T−1, W): sampled in frame t and in frame 0
    diff = (k[..., 1:, :, :] - k[..., :1, :, :]) * (both[:, None] if coils else both)[..., None, :]
    dynamic = _ring_log_power(power(diff), both, onehot, columns)  # (B, S, T−1, R)
    return torch.cat([static.reshape(b, -1), dynamic.reshape(b, -1)], dim=1)


class KSpaceSpectrum(nn.Module):
    """Standardised radial-spectrum descriptor: ``forward(kspace, mask)`` → (B, n_features) float32.

    Args:
        shape: (S, T, H, W) of the k-space it reads.
        rings: R, the number of radial rings.

    The buffers ``mean`` and ``std`` (n_features,) are 0 and 1 until :meth:`set_statistics`
    (training-split values); they travel in the model's state dict.
    """

    def __init__(self, shape: tuple[int, int, int, int], rings: int) -> None:
        super().__init__()
        s, t, h, w = shape
        self.n_rings = int(rings)
        self.register_buffer("rings", ring_index(h, w, rings))
        self.n_features = s * self.n_rings * (1 + max(t - 1, 0))
        self.register_buffer("mean", torch.zeros(self.n_features))
        self.register_buffer("std", torch.ones(self.n_features))

    def raw(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unstandardised features (B, n_features), computed in float32 whatever the autocast."""
        with torch.autocast(device_type=kspace.device.type, enabled=False):
            return spectrum_features(kspace, mask, self.rings, self.n_rings)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.raw(kspace, mask) - self.mean) / self.std

    def set_statistics(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        """Standardise with these per-feature statistics (std ≤ 1e-6 is treated as 1)."""
        std_t = torch.as_tensor(std, dtype=torch.float32)
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.where(std_t > 1e-6, std_t, torch.ones_like(std_t)))


@torch.no_grad()
def spectrum_statistics(
    spectrum: KSpaceSpectrum, samples: Iterable[tuple[torch.Tensor, torch.Tensor]], batch: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and SD of the descriptor over the given subjects.

    Args:
        spectrum: the descriptor.
        samples: an iterable of ``(kspace (S, T, H, W) complex as stored, mask (S, T, W))`` — one
            per training subject, without augmentation. Each is normalised per subject here.
        batch: subjects per computation.

    Returns:
        (mean, std), each (n_features,) float64.
    """
    from kmtr.normalise import normalise, subject_scale

    total = np.zeros(spectrum.n_features)
    total_sq = np.zeros(spectrum.n_features)
    n = 0
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def flush() -> None:
        nonlocal n
        if not pending:
            return
        device = spectrum.rings.device  # the model's device: statistics computed where it runs
        k = torch.stack([normalise(kk, subject_scale(kk, mm)) for kk, mm in pending]).to(device)
        f = spectrum.raw(k, torch.stack([m for _, m in pending]).to(device)).double().cpu().numpy()
        total[:] += f.sum(axis=0)
        total_sq[:] += (f**2).sum(axis=0)
        n += len(f)
        pending.clear()

    for kspace, mask in samples:
        pending.append((kspace, mask))
        if len(pending) == batch:
            flush()
    flush()
    if n == 0:
        raise ValueError("no subjects to compute the spectrum statistics from")
    mean = total / n
    return mean, np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
