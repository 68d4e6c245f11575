"""Benchmark: cost of synthesising multi-coil k-space for one subject, as a ratio to the single-coil FFT.

    python benchmarks/bench_coils.py [--coils 8 --slices 9 --frames 50 --size 128 --snr 20 --rho 0.3
                                      --repeats 3 --threads 1 --device cpu]

One subject of ``slices x frames x size x size`` (9 x 50 x 128 x 128 by default, smooth random
magnitude images with a smooth phase; the content does not change the cost). Baselines, timed in
the same run:

* ``numpy single-coil FFT``: the existing build's k-space step,
  :func:`kspace_sim.fft.fft2c_modulated` of the magnitude images and the phase factor;
* ``torch single-coil FFT``: :func:`kmtr.fft.fft2c` of the same complex images (the torch
  implementation's baseline, on ``--device``).

Measured against them (best of ``--repeats``):

* ``maps from params``: :func:`kspace_sim.coils.subject_coil_maps` for every slice (sigpy birdcage
  on an extended grid + cubic interpolation), i.e. regenerating the maps from the compact form;
* ``numpy coil_kspace``: :func:`kspace_sim.acquisition.coil_kspace` noise-free, with white noise at
  ``--snr`` dB, and with noise correlated across coils (``Psi_ij = rho^|i-j|``);
* ``torch coil_kspace``: :func:`kmtr.coils.coil_kspace` (B = 1) noise-free and with noise drawn by
  a seeded torch generator (and correlated), on ``--device``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._timing import best_of  # noqa: E402


def subject_images(slices: int, frames: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Magnitude ``(S, T, H, W)`` float32 in [0, 1] and a static phase factor ``(S, 1, H, W)`` complex64."""
    import scipy.ndimage

    rng = np.random.default_rng(seed)
    mag = scipy.ndimage.gaussian_filter(rng.random((slices, 1, size, size)), sigma=(0, 0, 3, 3))
    mag = (mag - mag.min()) / (mag.max() - mag.min())
    scale = np.linspace(0.8, 1.0, frames)[None, :, None, None]
    phase = scipy.ndimage.gaussian_filter(rng.standard_normal((slices, 1, size, size)), sigma=(0, 0, 10, 10))
    return (mag * scale).astype(np.float32), np.exp(1j * 20 * phase).astype(np.complex64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--slices", type=int, default=9)
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--snr", type=float, default=20.0)
    p.add_argument("--rho", type=float, default=0.3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="scipy.fft workers and torch threads")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    args = p.parse_args()

    import torch

    from kmtr.coils import coil_kspace as torch_coil_kspace
    from kmtr.fft import fft2c as torch_fft2c
    from kspace_sim.acquisition import coil_kspace
    from kspace_sim.coils import subject_coil_geometries, subject_coil_maps
    from kspace_sim.fft import fft2c_modulated
    from kspace_sim.noise import correlation_matrix, noise_sigma

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    mag, factor = subject_images(args.slices, args.frames, args.size)
    shape = (args.size, args.size)
    kspace = fft2c_modulated(mag, factor, workers=args.threads)
    geometries = subject_coil_geometries(0, "bench", args.slices, args.coils)
    maps = subject_coil_maps(geometries, shape)  # (C, S, H, W)
    psi = correlation_matrix(args.coils, args.rho)
    sigma = noise_sigma(mag * factor, args.snr)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    k_t = torch.from_numpy(kspace).to(dev)[None]
    maps_t = torch.from_numpy(maps).to(dev)[None]
    psi_t = torch.from_numpy(psi).to(dev)
    image_t = torch.from_numpy(mag * factor).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)

    def run_torch(**kw):
        def fn():
            out = torch_coil_kspace(k_t, maps_t, generator=gen, **kw)
            sync()
            del out
        return fn

    def run_torch_fft():
        out = torch_fft2c(image_t)
        sync()
        del out

    r, w = args.repeats, args.threads
    maps4 = maps[:, :, None]  # (C, S, 1, H, W): the same map for every frame
    size_mb = kspace.nbytes / 2**20
    print(f"one subject: {args.slices} x {args.frames} x {args.size} x {args.size} complex64 ({size_mb:.0f} MB), "
          f"{args.coils} coils, SNR {args.snr} dB, rho {args.rho}, threads {args.threads}, torch device {dev}")
    base_np = best_of(lambda: fft2c_modulated(mag, factor, workers=args.threads), r)
    base_t = best_of(run_torch_fft, r)
    rows = [
        ("numpy single-coil FFT (build baseline)", base_np, base_np),
        ("maps from params (all slices)", best_of(lambda: subject_coil_maps(geometries, shape), r), base_np),
        ("numpy coil_kspace, noise-free", best_of(lambda: coil_kspace(kspace, maps4, workers=w), r), base_np),
        ("numpy coil_kspace, white noise",
         best_of(lambda: coil_kspace(kspace, maps4, sigma=sigma, seed=1, workers=w), r), base_np),
        ("numpy coil_kspace, correlated noise",
         best_of(lambda: coil_kspace(kspace, maps4, sigma=sigma, noise_cov=psi, seed=1, workers=w), r), base_np),
        (f"torch single-coil FFT ({dev.type} baseline)", base_t, base_t),
        ("torch coil_kspace, noise-free", best_of(run_torch(), r), base_t),
        ("torch coil_kspace, white noise", best_of(run_torch(sigma=sigma), r), base_t),
        ("torch coil_kspace, correlated noise", best_of(run_torch(sigma=sigma, noise_cov=psi_t), r), base_t),
    ]
    print(f"{'step':42s} {'seconds':>9s} {'x baseline':>11s}")
    for name, sec, base in rows:
        print(f"{name:42s} {sec:9.3f} {sec / base:11.1f}")
    t_np = rows[3][1]
    print(f"torch / numpy (white noise): {rows[7][1] / t_np:.2f}; per coil, numpy noise-free: "
          f"{rows[2][1] / args.coils / base_np:.2f} x baseline")


if __name__ == "__main__":
    main()
