"""Multi-coil k-space synthesised where it is consumed: the torch implementation, any device.

    k_c = FFT( S_c * IFFT(k) ) + sigma * (L n)_c ,   c = 1 … C,   Psi = L L^H

Same model and conventions as the simulator's numpy reference (documented in docs/multicoil.md):
centred orthonormal FFT (:mod:`kmtr.fft`), maps normalised so that ``sum_c |S_c|^2 = 1``, ``sigma``
the standard deviation of one coil's complex noise (``E|n|^2 = sigma^2``), ``Psi`` the coil noise
covariance in units of ``sigma^2``. A test holds the two equal within float tolerance when they
are given the same maps and the same standard white noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kmtr.fft import fft2c, ifft2c

__all__ = [
    "coil_kspace", "fresh_coil_acquisition", "noise_cholesky", "sense1", "standard_complex_noise",
    "stored_white_noise",
]


def noise_cholesky(cov: torch.Tensor) -> torch.Tensor:
    """Lower-triangular ``L`` (complex128) with ``cov = L L^H``; ``ValueError`` unless ``cov`` is a
    Hermitian positive-definite ``(C, C)`` matrix."""
    cov = torch.as_tensor(cov).to(torch.complex128)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"noise covariance must be a square (C, C) matrix, got shape {tuple(cov.shape)}")
    if not bool(torch.isfinite(torch.view_as_real(cov)).all()):
        raise ValueError("noise covariance has non-finite entries")
    scale = max(float(cov.abs().max()), 1e-300)
    if not torch.allclose(cov, cov.conj().T, rtol=0.0, atol=1e-10 * scale):
        raise ValueError("noise covariance is not Hermitian")
    chol, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise ValueError("noise covariance is not positive definite")
    return chol


def standard_complex_noise(shape: tuple[int, ...], generator: torch.Generator | None = None,
                           device: torch.device | str | None = None) -> torch.Tensor:
    """Standard complex white Gaussian noise ``E|n|^2 = 1`` (complex64), from ``generator``.

    torch's CPU and CUDA generators give different numbers for one seed: for draws that must be
    identical everywhere (the evaluation noise), pass noise drawn by the numpy reference instead.
    """
    return torch.randn(shape, generator=generator, dtype=torch.complex64, device=device)


def _checkerboard(h: int, w: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    i = torch.arange(h, device=device)[:, None]
    j = torch.arange(w, device=device)[None, :]
    return (1 - 2 * ((i + j) % 2)).to(dtype)


def _forward(kspace: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``fft2c(S_c * ifft2c(k))`` as ``(B, C, S, T, H, W)``.

    For H and W divisible by 4 the centring shifts are the checkerboard ``c = (-1)^(i+j)``
    (``fft2c(x) = c fft2(c x)``, ``ifft2c(k) = c ifft2(c k)``, REFERENCES.md), and the two inner
    ``c`` cancel (``c^2 = 1``): ``c fft2(S_c ifft2(c k))``, no shifted copies of the coil array.
    """
    h, w = kspace.shape[-2:]
    if not torch.is_complex(kspace):
        kspace = kspace.to(torch.complex64)
    maps = maps.to(device=kspace.device, dtype=kspace.dtype).unsqueeze(3)  # (B, C, S, 1, H, W)
    if h % 4 or w % 4:
        return fft2c(maps * ifft2c(kspace).unsqueeze(1))
    c = _checkerboard(h, w, kspace.real.dtype, kspace.device)
    image = torch.fft.ifft2(kspace * c, norm="ortho")  # = c * ifft2c(k)
    out = torch.fft.fft2(maps * image.unsqueeze(1), norm="ortho")
    out *= c
    return out


def coil_kspace(
    kspace: torch.Tensor,
    maps: torch.Tensor,
    sigma: torch.Tensor | float | None = None,
    noise_cov: torch.Tensor | None = None,
    white_noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Coil k-space from coil-free k-space, for a batch, on ``kspace``'s device.

    Args:
        kspace: ``(B, S, T, H, W)`` complex, fully sampled coil-free k-space.
        maps: ``(B, C, S, H, W)`` complex coil maps (the same for every frame).
        sigma: per-coil noise standard deviation: a float, a ``(B,)`` tensor (one per subject) or
            a ``(B, S)`` tensor (one per subject and slice); None = noise-free.
        noise_cov: ``(C, C)`` Hermitian positive-definite covariance in units of ``sigma^2``; None =
            independent coils.
        white_noise: ``(B, C, S, T, H, W)`` complex standard white noise to colour and scale (e.g.
            the numpy reference's draw, for bit-stable evaluation noise); None = drawn here with
            ``generator`` (a fresh draw per call: the augmentation).
        generator: torch generator for the draw (on ``kspace``'s device).

    Returns:
        ``(B, C, S, T, H, W)`` complex64 (complex128 for complex128 input).
    """
    if kspace.ndim != 5 or not torch.is_complex(kspace):
        raise ValueError(f"k-space must be complex (B, S, T, H, W), got {kspace.dtype} {tuple(kspace.shape)}")
    b, s, _, h, w = kspace.shape
    if maps.ndim != 5 or maps.shape[0] != b or maps.shape[2:] != (s, h, w) or not torch.is_complex(maps):
        raise ValueError(
            f"coil maps must be complex (B, C, S, H, W) = ({b}, C, {s}, {h}, {w}), got {maps.dtype} {tuple(maps.shape)}"
        )
    n_coils = maps.shape[1]
    if n_coils < 1:
        raise ValueError("coil maps have no coils")
    chol = noise_cholesky(noise_cov) if (sigma is not None and noise_cov is not None) else None
    if chol is not None and chol.shape[0] != n_coils:
        raise ValueError(f"noise covariance is {tuple(chol.shape)} for {n_coils} coils")
    sig = None
    if sigma is not None:
        sig = torch.as_tensor(sigma, device=kspace.device, dtype=kspace.real.dtype)
        if sig.ndim == 2 and tuple(sig.shape) == (b, s):
            sig = sig.reshape(b, 1, s, 1, 1, 1)
        elif sig.ndim <= 1 and sig.numel() in (1, b):
            sig = sig.reshape(-1, 1, 1, 1, 1, 1)
        else:
            raise ValueError(f"sigma must be a number, ({b},) or ({b}, {s}), got shape {tuple(sig.shape)}")
        if not bool(torch.isfinite(sig).all()) or bool((sig < 0).any()):
            raise ValueError("noise sigma must be finite and >= 0")
    out = _forward(kspace, maps)  # (B, C, S, T, H, W)
    if sig is None:
        return out
    if white_noise is None:
        white_noise = standard_complex_noise(tuple(out.shape), generator, out.device).to(out.dtype)
    elif tuple(white_noise.shape) != tuple(out.shape):
        raise ValueError(f"white noise must be {tuple(out.shape)}, got {tuple(white_noise.shape)}")
    noise = white_noise.to(device=out.device, dtype=out.dtype)
    if chol is not None:
        noise = torch.einsum("ij,bj...->bi...", chol.to(device=out.device, dtype=out.dtype), noise)
    return out + sig * noise


def stored_white_noise(noise_seed: int, shape: tuple[int, ...], frames: np.ndarray | None = None,
                       views: np.ndarray | None = None) -> np.ndarray:
    """A subject's stored (evaluation) standard white noise, bit-identical on every machine (same numpy).

    The store's ``coils.noise_rule`` (version ``kmtr.store.STORED_NOISE_RULE_VERSION``), repeated here because
    kmtr never imports the simulator: one independent numpy sub-stream per view ``s`` and frame ``t``,
    ``Generator(PCG64(SeedSequence(noise_seed, spawn_key=(s, t)))).standard_normal((C, H, W, 2), float32)
    * float32(1/sqrt(2))`` viewed as complex64 is the noise of all C coils at ``(s, t)``. Only the kept
    views and frames are drawn (T'/T of the whole draw's cost), each equal to its part of the whole.

    Args:
        noise_seed: the subject's ``coils/noise_seed``.
        shape: ``(C, S, T, H, W)`` of the whole draw (T = all frames of the store).
        frames: indices of the frames to keep (None = all T).
        views: indices of the views to keep (None = all S).

    Returns:
        ``(C, S', T', H, W)`` complex64, ``E|n|^2 = 1``, before colouring by ``L`` and scaling by sigma.
    """
    c, s, t, h, w = shape
    keep_v = np.arange(s) if views is None else np.asarray(views, dtype=np.int64).reshape(-1)
    keep_t = np.arange(t) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
    for keep, n, name in ((keep_v, s, "view"), (keep_t, t, "frame")):
        if keep.size and (keep.min() < 0 or keep.max() >= n):
            raise ValueError(f"{name} index out of range 0..{n - 1}")
    out = np.empty((c, len(keep_v), len(keep_t), h, w), np.complex64)
    pairs = np.empty((c, h, w, 2), np.float32)
    scale = np.float32(1.0 / math.sqrt(2.0))
    for i, si in enumerate(keep_v.tolist()):
        for j, ti in enumerate(keep_t.tolist()):
            seq = np.random.SeedSequence(int(noise_seed), spawn_key=(si, ti))
            np.random.Generator(np.random.PCG64(seq)).standard_normal(dtype=np.float32, out=pairs)
            pairs *= scale
            out[:, i, j] = pairs.view(np.complex64)[..., 0]
    return out


def sense1(coil_kspace: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """SENSE-1 coil combination with the true maps: ``sum_c conj(S_c) IFFT(k_c)``.

    Args:
        coil_kspace: ``(B, C, S, T, H, W)`` complex coil k-space (e.g. zero-filled: unsampled lines 0).
        maps: ``(B, C, S, H, W)`` complex, ``sum_c |S_c|^2 = 1``.

    Returns:
        ``(B, S, T, H, W)`` complex image (= the coil-free image ``x`` for noise-free, fully sampled data).
        For H, W divisible by 4 the centring shifts are the checkerboard ``c``:
        ``c · sum_c conj(S_c) ifft2(c · k_c)``.
    """
    maps = maps.to(device=coil_kspace.device, dtype=coil_kspace.dtype).unsqueeze(3)
    h, w = coil_kspace.shape[-2:]
    if h % 4 or w % 4:
        return (maps.conj() * ifft2c(coil_kspace)).sum(dim=1)
    c = _checkerboard(h, w, coil_kspace.real.dtype, coil_kspace.device)
    image = (maps.conj() * torch.fft.ifft2(coil_kspace * c, norm="ortho")).sum(dim=1)
    image *= c
    return image


def fresh_coil_acquisition(
    kspace: torch.Tensor,
    maps: torch.Tensor,
    sigma: torch.Tensor,
    noise_cov: torch.Tensor | None,
    generators: list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coil k-space with a fresh noise draw, and its SENSE-1 image, on ``kspace``'s device.

    Equal in distribution to :func:`coil_kspace` followed by :func:`sense1`, and cheaper: the white
    noise is drawn in the image domain (the orthonormal FFT is unitary, so white image noise of
    covariance sigma² Psi is white k-space noise of the same covariance),
    ``y_c = S_c x + sigma (L eta)_c``, ``k_c = FFT(y_c)``, and the SENSE-1 image
    ``sum_c conj(S_c) y_c`` is the same sum as ``sum_c conj(S_c) IFFT(k_c)`` without C inverse FFTs.
    For H, W divisible by 4 the centring shifts are the checkerboard ``c = (-1)^(i+j)``
    (``fft2c(z) = c fft2(c z)``): with ``x' = ifft2(c k) = c x`` and ``y'_c = S_c x' + sigma (L eta)_c``,
    ``k_c = c fft2(y'_c)`` and the image is ``c sum_c conj(S_c) y'_c`` (``c eta`` is white like ``eta``).

    Args:
        kspace: ``(B, S, T, H, W)`` complex coil-free k-space.
        maps: ``(B, C, S, H, W)`` complex maps.
        sigma: ``(B, S)`` per-coil noise standard deviation per subject and view.
        noise_cov: ``(C, C)`` covariance in units of sigma² (None = identity).
        generators: one torch generator per subject on ``kspace``'s device (None = the global one).

    Returns:
        ``(B, C, S, T, H, W)`` coil k-space and ``(B, S, T, H, W)`` SENSE-1 image, complex64.
    """
    b, s, t, h, w = kspace.shape
    c = maps.shape[1]
    dev = kspace.device
    kspace = kspace.to(torch.complex64)
    maps = maps.to(device=dev, dtype=torch.complex64).unsqueeze(3)  # (B, C, S, 1, H, W)
    # every (B, C, S, T, H, W) step works in place on one buffer: allocating them costs more than the arithmetic
    y = torch.empty((b, c, s, t, h, w), dtype=torch.complex64, device=dev)
    for i, g in enumerate(generators if generators is not None else [None] * b):
        y[i].normal_(generator=g)  # standard complex white noise, E|eta|^2 = 1
    if noise_cov is not None:
        chol = noise_cholesky(noise_cov).to(device=dev, dtype=torch.complex64)
        y = torch.einsum("ij,bj...->bi...", chol, y)
    y.mul_(torch.as_tensor(sigma, device=dev, dtype=torch.float32).reshape(b, 1, s, 1, 1, 1))
    board = None if h % 4 or w % 4 else _checkerboard(h, w, torch.float32, dev)
    x = ifft2c(kspace) if board is None else torch.fft.ifft2(kspace * board, norm="ortho")  # x, or c x
    y.addcmul_(maps, x.unsqueeze(1))  # y_c = S_c x + sigma (L eta)_c
    image = torch.zeros((b, s, t, h, w), dtype=torch.complex64, device=dev)
    conj = maps.conj().resolve_conj()
    for ci in range(c):  # SENSE-1, one coil at a time (no (B, C, ...) temporary)
        image.addcmul_(conj[:, ci], y[:, ci])
    if board is None:
        return fft2c(y), image
    coil_k = torch.fft.fft2(y, norm="ortho", out=y)
    coil_k.mul_(board)
    image.mul_(board)
    return coil_k, image
