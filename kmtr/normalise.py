"""Invertible k-space normalisation.

1. **Per-subject scale** (always): ``k_n = k / s`` with ``s = sqrt(mean |k|²)`` over the
   **sampled** points of the subject's (S, T, H, W) k-space only (the lines its acquisition mask
   keeps, after frame selection and augmentation): a scanner has nothing else, so no information
   from the unsampled lines reaches a model's input through the scale, at training or test time.
   For a store with coils ``k`` is the (noisy) coil k-space (C, S, T, H, W) and the mean runs over
   the sampled points of every coil.
   The fully sampled k-space and the images (training targets, stage-II image branch) are divided
   by the same ``s``. ``s`` travels with each sample (``batch["scale"]``); ``k = k_n · s`` undoes it.
2. **Signed log** (optional, model-side): applied to the real and imaginary channels separately,
   ``f(x) = sign(x) · log1p(|x| / c)``, inverse ``x = sign(y) · c · expm1(|y|)``. It compresses
   k-space's dynamic range (DC ≫ periphery) for the k-space MAE's input and target.
"""

from __future__ import annotations

import torch

__all__ = ["subject_scale", "normalise", "denormalise", "signed_log", "signed_log_inverse"]


def subject_scale(k: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """RMS magnitude of a subject's **sampled** k-space → 0-d float32 tensor (> 0).

    Args:
        k: (S, T, H, W) complex k-space, or (C, S, T, H, W) coil k-space (values on unsampled
            lines are ignored).
        mask: (S, T, W) bool or 0/1, True = sampled phase-encode line (repeated along H and coils).
    """
    if k.ndim == mask.ndim + 2:  # coil k-space: gather the sampled lines (no full-size temporaries)
        lines = k.transpose(-1, -2)[:, mask.to(device=k.device, dtype=torch.bool)]  # (C, lines, H)
        if lines.numel() == 0:
            return torch.tensor(eps, dtype=torch.float32, device=k.device)
        return torch.sqrt(2.0 * torch.view_as_real(lines).float().square().mean()).clamp_min(eps)
    m = mask.to(device=k.device, dtype=torch.float32)[..., None, :]  # (S, T, 1, W)
    power = (k.real.float() ** 2 + k.imag.float() ** 2) * m
    count = m.sum() * k.shape[-2]
    return torch.sqrt(power.sum() / count.clamp_min(1.0)).clamp_min(eps)


def normalise(k: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``k / scale``; ``scale`` is 0-d (one subject) or (B,) for a batch ``(B, ...)``."""
    return k / scale.reshape(scale.shape + (1,) * (k.ndim - scale.ndim)).to(k.device)


def denormalise(k: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise`."""
    return k * scale.reshape(scale.shape + (1,) * (k.ndim - scale.ndim)).to(k.device)


def signed_log(x: torch.Tensor, c: float) -> torch.Tensor:
    """``sign(x) · log1p(|x| / c)`` elementwise on a real tensor."""
    return torch.sign(x) * torch.log1p(x.abs() / c)


def signed_log_inverse(y: torch.Tensor, c: float) -> torch.Tensor:
    """Inverse of :func:`signed_log`: ``sign(y) · c · expm1(|y|)``."""
    return torch.sign(y) * c * torch.expm1(y.abs())
