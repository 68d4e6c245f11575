"""Image and k-space CNN baselines (the paper's comparisons).

Inputs are built from fully sampled, per-subject normalised k-space (B, S, T, H, W) and the line
mask (B, S, T, W) by :func:`baseline_input`:

* ``image``        — ``ifft2c(k)``: the fully sampled image (upper bound).
* ``image_under``  — ``ifft2c(k · mask)``: the zero-filled undersampled image.
* ``kspace_under`` — ``k · mask``: zero-filled k-space, optionally signed-log compressed.

On a store with coils (docs/multicoil.md) the k-space is the coil k-space (B, C, S, T, H, W) that
:func:`kmtr.data.prepare_batch` synthesised (with noise) and normalised by the RMS of all coils'
sampled lines, and ``maps`` (B, C, S, H, W) are the true coil maps: the image kinds are the
**SENSE-1** combination with the true maps, ``Σ_c conj(S_c) · IFFT(k_c)`` (fully sampled) or
``Σ_c conj(S_c) · IFFT(k_c · mask)`` (zero-filled) — the same image the image MAE reads; without
noise its magnitude is the coil-free ``|x|``. ``kspace_under`` is the zero-filled coil k-space,
2·C real channels per view (real and imaginary part of each coil).

Models:

* :class:`ResNetBaseline` — a 3-D ResNet-50 over (T, H, W) with every slice's magnitude image as an
  input channel (S channels; UK Biobank's images are magnitude images, and the synthetic B0 phase
  of a store is a nuisance an image model should not have to learn away), or its real and
  imaginary parts (2S channels): (B, out_dim) regression / classification outputs. k-space inputs
  are always real and imaginary parts (2S channels; 2·C·S with C coils).
* :class:`UNetBaseline` — MONAI's 2-D U-Net on every (slice, frame) image, magnitude (1 channel) or
  (re, im) (2 channels): segmentation logits (B, S, C, T, H, W).
* :func:`cs_reconstruct` — the classical "reconstruct, then analyse" pipeline: per-frame
  compressed-sensing (L1-wavelet) reconstruction with sigpy, single coil.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.nets import UNet
from monai.networks.nets.resnet import ResNet, ResNetBottleneck
from torch import nn

from kmtr.coils import sense1
from kmtr.fft import ifft2c
from kmtr.normalise import signed_log

__all__ = [
    "INPUT_KINDS", "baseline_input", "to_channels", "resnet50", "ResNetBaseline", "UNetBaseline", "cs_reconstruct",
]

INPUT_KINDS = ("image", "image_under", "kspace_under")

RESNET50_LAYERS = [3, 4, 6, 3]
RESNET_INPLANES = (64, 128, 256, 512)


def _check_kind(kind: str, allowed: tuple[str, ...] = INPUT_KINDS) -> None:
    if kind not in allowed:
        raise ValueError(f"unknown baseline input kind {kind!r}; expected one of {allowed}")


def baseline_input(
    kspace: torch.Tensor, mask: torch.Tensor, kind: str, signed_log_c: float | None = None,
    maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build a baseline's complex input.

    Args:
        kspace: (B, S, T, H, W) complex, fully sampled, normalised; or, for a store with C coils,
            the coil k-space (B, C, S, T, H, W).
        mask: (B, S, T, W) bool, True = sampled line (repeated along H, and over coils).
        kind: one of :data:`INPUT_KINDS`.
        signed_log_c: for ``kspace_under`` only (ignored otherwise): when set, the real and
            imaginary parts are each mapped by ``sign(x)·log1p(|x|/c)`` and returned as the real
            and imaginary parts of the result, so :func:`to_channels` yields the compressed channels.
        maps: (B, C, S, H, W) complex true coil maps (``Σ_c |S_c|² = 1``); required for the image
            kinds of coil k-space (their SENSE-1 combination), ignored otherwise.

    Returns:
        (B, S, T, H, W) complex for the image kinds (coils: SENSE-1 images); k-space as given
        (B, S, T, H, W) or (B, C, S, T, H, W), zero-filled, for ``kspace_under``.

    Raises:
        ValueError: unknown kind, or coil k-space with an image kind and no maps.
    """
    _check_kind(kind)
    coils = kspace.ndim == 6
    if coils and kind != "kspace_under" and maps is None:
        raise ValueError("coil k-space (B, C, S, T, H, W) needs its coil maps for a SENSE-1 image")
    if kind == "image":
        return sense1(kspace, maps) if coils else ifft2c(kspace)
    lines = mask[:, None] if coils else mask  # the same lines in every coil
    under = kspace * lines[..., None, :].to(kspace.dtype)
    if kind == "image_under":
        return sense1(under, maps) if coils else ifft2c(under)
    if signed_log_c:
        return torch.view_as_complex(signed_log(torch.view_as_real(under), signed_log_c).contiguous())
    return under


def to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex (B, S, T, H, W) → real (B, 2S, T, H, W), channels ordered (s0 re, s0 im, s1 re, …);
    coil k-space (B, C, S, T, H, W) → (B, 2·C·S, T, H, W), ordered (view, coil, re/im):
    (s0 c0 re, s0 c0 im, s0 c1 re, …, s1 c0 re, …)."""
    if x.ndim == 6:
        x = x.transpose(1, 2)  # (B, S, C, T, H, W): view-major, then coil
        b, s, c = x.shape[:3]
        return torch.view_as_real(x).movedim(-1, 3).reshape(b, 2 * c * s, *x.shape[3:])
    b, s = x.shape[:2]
    return torch.view_as_real(x).movedim(-1, 2).reshape(b, 2 * s, *x.shape[2:])


def resnet50(in_channels: int, out_dim: int, width: float = 1.0, spatial_dims: int = 3) -> ResNet:
    """MONAI ResNet-50 (bottleneck blocks, layers [3, 4, 6, 3]), channels scaled by ``width``.

    ``block_inplanes = round(width · [64, 128, 256, 512])``; ``width = 1`` is the standard
    ResNet-50. The stem is a 7×…×7 conv with stride 2 in H and W but 1 in T (the first axis of a
    3-D input), then the usual 3×3 max-pool, so short time axes (T = 5) survive the network.
    Input (B, in_channels, T, H, W) (or (B, in_channels, H, W) with ``spatial_dims=2``) → (B, out_dim).
    """
    stride = (1, 2, 2) if spatial_dims == 3 else 2
    return ResNet(
        block=ResNetBottleneck,
        layers=RESNET50_LAYERS,
        block_inplanes=[max(1, round(width * c)) for c in RESNET_INPLANES],
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=7,
        conv1_t_stride=stride,
        no_max_pool=False,
        num_classes=out_dim,
    )


class ResNetBaseline(nn.Module):
    """:func:`baseline_input` → :func:`to_channels` → 3-D :func:`resnet50`: (B, out_dim).

    Args:
        kind: one of :data:`INPUT_KINDS`.
        slices: S (the network sees 2S input channels, or S with ``magnitude``).
        out_dim: outputs (targets or class logits).
        width: channel scale of the ResNet-50 (1 = standard).
        signed_log_c: signed-log constant for ``kspace_under`` (see :func:`baseline_input`).
        magnitude: image inputs as magnitude images (S channels), as UK Biobank ships them,
            instead of the real and imaginary parts (ignored for ``kspace_under``).
        coils: C of a store with coils (None: single-coil). Image kinds read the SENSE-1 image
            (the same S or 2S channels); ``kspace_under`` reads 2·C channels per view (2·C·S).
    """

    #: :class:`kmtr.train.task_net.TaskModel` passes the batch's coil maps (stores with coils)
    reads_coil_maps = True

    def __init__(
        self, kind: str, slices: int, out_dim: int, width: float = 1.0, signed_log_c: float | None = None,
        magnitude: bool = False, coils: int | None = None,
    ) -> None:
        super().__init__()
        _check_kind(kind)
        self.kind, self.signed_log_c, self.coils = kind, signed_log_c, coils
        self.magnitude = magnitude and kind != "kspace_under"
        if self.magnitude:
            per_view = 1
        else:
            per_view = 2 * (coils or 1) if kind == "kspace_under" else 2  # (coil,) re/im
        self.net = resnet50(per_view * slices, out_dim, width)

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
        """kspace (B, S, T, H, W) complex (coils: (B, C, S, T, H, W) with ``maps`` (B, C, S, H, W)),
        mask (B, S, T, W) bool → (B, out_dim)."""
        _check_coils(kspace, self.coils)
        x = baseline_input(kspace, mask, self.kind, self.signed_log_c, maps)
        return self.net(x.abs() if self.magnitude else to_channels(x))


def _check_coils(kspace: torch.Tensor, coils: int | None) -> None:
    got = kspace.shape[1] if kspace.ndim == 6 else None
    if got != coils:
        want = "single-coil k-space (B, S, T, H, W)" if coils is None else f"{coils}-coil k-space (B, {coils}, S, T, H, W)"
        raise ValueError(f"this baseline was built for {want}, got shape {tuple(kspace.shape)}")


class UNetBaseline(nn.Module):
    """MONAI 2-D U-Net on every (slice, frame) image: (B, S, T, H, W) → logits (B, S, C, T, H, W).

    Input channels are the real and imaginary parts of the complex image (``kind`` ``image`` or
    ``image_under``), or its magnitude with ``magnitude``; H and W must be divisible by
    ``2 ** (len(channels) - 1)``. On a store with coils the image is the SENSE-1 combination of
    the coil k-space with the true maps (:func:`baseline_input`): the same channels.
    """

    #: :class:`kmtr.train.task_net.TaskModel` passes the batch's coil maps (stores with coils)
    reads_coil_maps = True

    def __init__(
        self,
        kind: str,
        num_classes: int = 6,
        channels: tuple[int, ...] = (32, 64, 128, 256),
        num_res_units: int = 2,
        magnitude: bool = False,
    ) -> None:
        super().__init__()
        _check_kind(kind)
        if kind == "kspace_under":
            raise ValueError("UNetBaseline segments images: kind must be 'image' or 'image_under', not 'kspace_under'")
        self.kind, self.magnitude = kind, magnitude
        self.net = UNet(
            spatial_dims=2,
            in_channels=1 if magnitude else 2,
            out_channels=num_classes,
            channels=channels,
            strides=(2,) * (len(channels) - 1),
            num_res_units=num_res_units,
        )

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor, maps: torch.Tensor | None = None) -> torch.Tensor:
        """kspace (B, S, T, H, W) complex (coils: (B, C, S, T, H, W) with ``maps`` (B, C, S, H, W)),
        mask (B, S, T, W) bool → logits (B, S, C, T, H, W)."""
        image = baseline_input(kspace, mask, self.kind, maps=maps)
        b, s, t, h, w = image.shape
        if self.magnitude:
            x = image.abs().reshape(b * s * t, 1, h, w)
        else:
            x = torch.view_as_real(image).permute(0, 1, 2, 5, 3, 4).reshape(b * s * t, 2, h, w)
        y = self.net(x)
        return y.reshape(b, s, t, -1, h, w).transpose(2, 3)


def cs_reconstruct(kspace_under: np.ndarray, mask: np.ndarray, lamda: float = 1e-3, max_iter: int = 30) -> np.ndarray:
    """Compressed-sensing reconstruction, frame by frame (classical "reconstruct then analyse").

    Each 2-D frame is reconstructed with ``sigpy.mri.app.L1WaveletRecon`` (single coil, unit
    sensitivity map, sampling weights = the line mask), i.e. ``argmin_x ½‖M F x − y‖² + λ‖Ψ x‖₁``
    with ``F`` sigpy's centred orthonormal FFT (the same convention as :func:`kmtr.fft.fft2c`).

    Args:
        kspace_under: (S, T, H, W) complex, zero-filled undersampled k-space.
        mask: (S, T, W) bool line mask.
        lamda: wavelet-sparsity weight λ (relative to the data's scale; normalised k-space assumed).
        max_iter: iterations per frame.

    Returns:
        (S, T, H, W) complex64 images.
    """
    import sigpy.mri.app as app  # local: sigpy is only needed for this pipeline

    s, t, h, w = kspace_under.shape
    ones = np.ones((1, h, w), dtype=np.complex64)
    out = np.zeros((s, t, h, w), dtype=np.complex64)
    for i in range(s):
        for j in range(t):
            weights = np.broadcast_to(mask[i, j][None, :], (h, w)).astype(np.float32)
            y = (kspace_under[i, j] * weights).astype(np.complex64)[None]
            out[i, j] = app.L1WaveletRecon(
                y, ones, lamda, weights=weights[None], max_iter=max_iter, show_pbar=False
            ).run()
    return out
