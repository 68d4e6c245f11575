"""Augmentations that stay valid in k-space.

The store holds fully sampled k-space ``k = fft2c(x)`` of a complex image ``x``. An augmentation
must produce the k-space of the *transformed image*, so:

* **Flips** are done exactly in k-space. With the centred orthonormal DFT and an even length
  ``N``, flipping the image ``y[n] = x[N-1-n]`` gives
  ``Y[k] = exp(2πi (k - N/2) / N) · X[(N - k) mod N]``: a flip of k-space about ``N/2`` (a flip
  followed by a roll of one sample) times a linear phase ramp. (Odd ``N``: a plain flip.)
* **Rotations** by an arbitrary angle are done in image space (``ifft2c`` → bilinear rotation of
  the real and imaginary parts → ``fft2c``); segmentations rotate with nearest-neighbour.
* **B0 phase**: the image is multiplied by a fresh smooth random phase per slice (static over
  time; Gaussian-filtered noise as in the simulator, peak ``phase_amplitude`` radians). The
  magnitude image, the anatomy and every label are unchanged; only the synthetic, subject-random
  phase, which a model must learn to ignore, is redrawn.

The acquisition mask is left unchanged: it describes the scanner's sampling pattern, not the
anatomy, so the augmented k-space is what that pattern would have measured on the augmented
object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import fourier_gaussian

from kmtr.fft import fft2c, ifft2c

__all__ = ["AugmentParams", "flip_kspace", "mirror_lines", "rotate_image", "smooth_phase", "sample_params", "augment_sample"]


@dataclass(frozen=True)
class AugmentParams:
    """One sample's augmentation: flips along H / W, a rotation angle in degrees, and a phase
    map ``(S, H, W)`` in radians to multiply the image by (None = none)."""

    flip_h: bool = False
    flip_w: bool = False
    angle: float = 0.0
    phase: np.ndarray | None = None


def mirror_lines(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` re-indexed along ``dim`` as the k-space samples move when the image is flipped:
    ``x[(N − k) mod N]`` for an even length ``N`` (a flip about N/2), ``x[N − 1 − k]`` for an odd one.
    :func:`flip_kspace` is this times a phase ramp; applied to a sampling mask it gives the mirrored
    pattern (which lines of the flipped image's k-space are measured)."""
    flipped = torch.flip(x, dims=(dim,))
    return flipped if x.shape[dim] % 2 == 1 else torch.roll(flipped, shifts=1, dims=dim)


def flip_kspace(k: torch.Tensor, dim: int) -> torch.Tensor:
    """k-space ``(..., H, W)`` of the image flipped along ``dim`` (-2 = H, -1 = W); exact."""
    n = k.shape[dim]
    rolled = mirror_lines(k, dim)  # X[(N - k) mod N] (even N)
    if n % 2 == 1:
        return rolled
    idx = torch.arange(n, device=k.device, dtype=torch.float64)
    ramp = torch.polar(torch.ones_like(idx), 2 * math.pi * (idx - n // 2) / n).to(k.dtype)
    shape = [1] * k.ndim
    shape[dim] = n
    return rolled * ramp.view(shape)


def rotate_image(x: torch.Tensor, angle_deg: float, nearest: bool = False) -> torch.Tensor:
    """Rotate ``(..., H, W)`` images (real or complex) by ``angle_deg`` about the centre, zero fill."""
    if angle_deg == 0.0:
        return x
    lead, (h, w) = x.shape[:-2], x.shape[-2:]
    if torch.is_complex(x):
        planes = torch.view_as_real(x).movedim(-1, -3).reshape(-1, 2, h, w)
    else:
        planes = x.reshape(-1, 1, h, w)
    orig_dtype = planes.dtype
    planes = planes.float()
    a = math.radians(angle_deg)
    theta = torch.tensor([[math.cos(a), -math.sin(a) * h / w, 0.0], [math.sin(a) * w / h, math.cos(a), 0.0]])
    grid = F.affine_grid(theta[None].expand(planes.shape[0], 2, 3), list(planes.shape), align_corners=False)
    mode = "nearest" if nearest else "bilinear"
    out = F.grid_sample(planes, grid, mode=mode, padding_mode="zeros", align_corners=False)
    out = out.to(orig_dtype)
    if torch.is_complex(x):
        return torch.view_as_complex(out.reshape(*lead, 2, h, w).movedim(-3, -1).contiguous())
    return out.reshape(*lead, h, w)


def smooth_phase(rng: np.random.Generator, shape: tuple[int, int, int], amplitude: float,
                 smoothness: float = 0.15) -> np.ndarray:
    """``(S, H, W)`` smooth random phase maps (rad), one per slice: white noise filtered by a
    periodic Gaussian of σ = ``smoothness`` × the mean side, centred, peak ``amplitude``."""
    s, h, w = shape
    sigma = smoothness * 0.5 * (h + w)
    spectrum = np.fft.rfft2(rng.standard_normal((s, h, w)))
    field = np.fft.irfft2(fourier_gaussian(spectrum, sigma=(0.0, sigma, sigma), n=w), s=(h, w))
    field -= field.mean(axis=(1, 2), keepdims=True)
    peak = np.abs(field).max(axis=(1, 2), keepdims=True)
    return (field * (amplitude / np.maximum(peak, 1e-12))).astype(np.float32)


def sample_params(rng: np.random.Generator, flip_p: float, max_angle: float, phase_amplitude: float = 0.0,
                  shape: tuple[int, int, int] | None = None) -> AugmentParams:
    """Draw one sample's parameters (flips with probability ``flip_p``, angle ~ U(-max, max), and
    with ``phase_amplitude`` > 0 a smooth phase map of ``shape`` (S, H, W))."""
    flip_h = bool(rng.random() < flip_p)
    flip_w = bool(rng.random() < flip_p)
    angle = float(rng.uniform(-max_angle, max_angle)) if max_angle > 0 else 0.0
    phase = smooth_phase(rng, shape, phase_amplitude) if phase_amplitude > 0 and shape is not None else None
    return AugmentParams(flip_h=flip_h, flip_w=flip_w, angle=angle, phase=phase)


def augment_sample(
    kspace: torch.Tensor, seg: torch.Tensor | None, params: AugmentParams
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Apply ``params`` to one subject.

    Args:
        kspace: (S, T, H, W) complex fully sampled k-space.
        seg: (S, T, H, W) uint8 label map or None.

    Returns:
        The augmented ``(kspace, seg)`` with the same shapes.
    """
    if params.phase is not None:
        rot = torch.polar(torch.ones(params.phase.shape), torch.from_numpy(params.phase)).to(kspace.dtype)
        kspace = fft2c(ifft2c(kspace) * rot[:, None])
    if params.angle != 0.0:
        kspace = fft2c(rotate_image(ifft2c(kspace), params.angle))
        if seg is not None:
            seg = rotate_image(seg.float(), params.angle, nearest=True).round().to(torch.uint8)
    if params.flip_h:
        kspace = flip_kspace(kspace, -2)
        seg = torch.flip(seg, dims=(-2,)) if seg is not None else None
    if params.flip_w:
        kspace = flip_kspace(kspace, -1)
        seg = torch.flip(seg, dims=(-1,)) if seg is not None else None
    return kspace, seg
