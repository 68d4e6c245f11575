"""Benchmark: vectorised VISTA against straightforward loop implementations of the same algorithm.

    python benchmarks/bench_vista.py [--frames 50 --lines 128 --acc 4 8 16 --seed 0 --reference-acc 8 16]

For each R it times

* ``vectorised``: :func:`kspace_sim.masks.vista.vista_mask` (cache off);
* ``loop``: the same algorithm written as a loop over samples (each sample's force summed over
  all others with one vector expression, minimum-image periodic distances, all samples moving
  at once), float64. Same schedule and random streams, so it should give (nearly) the same mask;
* ``loop-ref`` (at the R values of ``--reference-acc``; minutes at R = 4): the loop as the reference MATLAB code writes it:
  the point set copied 3 × 3 for the periodic boundaries and samples updated one after the
  other (in place).

and prints the speed-ups and the quality metrics of the masks side by side. Targets: >= 20x
faster than the loop version with side-lobe level within 10 % and the same per-frame counts;
under 2 s for W = 128, T = 50, R = 4.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from kspace_sim.masks.quality import mask_quality  # noqa: E402
from kspace_sim.masks.vista import (  # noqa: E402
    VistaParams,
    _charges,
    _initial_positions,
    _interleave,
    _positions_to_mask,
    _resolve_duplicates,
    _wrap,
    vista_lines_per_frame,
    vista_mask,
)


# ------------------------------------------------------------------------------------------
# straightforward loop implementation
# ------------------------------------------------------------------------------------------


def loop_forces(k: np.ndarray, t: np.ndarray, p: int, T: int, a: float, s: float, alpha: float, sigma: float,
                tiled: bool, max_step: float, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Move every sample (flat arrays ``k``, ``t``) by its clipped force, one sample at a time.

    ``tiled=False``: minimum-image distances, forces from the positions at the start of the
    iteration (all samples move at once). ``tiled=True``: the reference code's 3 x 3 copies of
    the point set and in-place (sequential) updates. Returns the new positions and the forces.
    """
    N = k.size
    k_new = k.copy()
    forces = np.empty(N)
    src = k_new if tiled else k  # sequential updates read the moved positions
    for j in range(N):
        if tiled:
            kk = np.concatenate([src, src - p, src, src + p, src - p, src + p, src - p, src, src + p])
            tt = np.concatenate([t, t - T, t - T, t - T, t, t, t + T, t + T, t + T])
            dk = src[j] - kk
            dt = t[j] - tt
        else:
            kk, tt = src, t
            dk = src[j] - kk
            dk = dk - p * np.rint(dk / p)
            dt = t[j] - tt
            dt = dt - T * np.rint(dt / T)
        d = np.sqrt(dk**2 + (a * dt) ** 2)
        d[d == 0] = np.inf
        q, _ = _charges(kk, alpha, sigma)
        qj, qpj = _charges(np.array([src[j]]), alpha, sigma)
        fx = s * dk * qj[0] * q / d ** (s + 2) - qpj[0] * q / d**s
        forces[j] = fx.sum()
        move = float(np.clip(step * forces[j], -max_step, max_step))
        k_new[j] = k_new[j] + move
        if tiled:  # wrap at once, as the reference code
            k_new[j] = _wrap(np.array([k_new[j]]), p)[0]
    return k_new, forces


def loop_fill(K: np.ndarray, p: int, a: float, s: float, alpha: float, sigma: float, fraction: float) -> np.ndarray:
    """Fill never-sampled lines centre outwards; candidates' energy changes one by one."""
    T, n = K.shape
    lo = p // 2
    K = K.copy()
    k = K.ravel()
    t = np.repeat(np.arange(T), n).astype(np.float64)
    kmin, kmax = -int(math.floor(fraction * p / 2)), int(math.ceil(fraction * p / 2)) - 1
    lines = np.arange(max(kmin, -lo), min(kmax, p - lo - 1) + 1)
    order = sorted(lines.tolist(), key=lambda x: (abs(x), x))
    for h in order:
        if (k == h).any():
            continue
        counts = {line: int((k == line).sum()) for line in range(-lo, p - lo)}
        spare = [line for line, c in counts.items() if c >= 2]
        if not spare:
            break
        direction = 1 if h >= 0 else -1
        outer = [line for line in spare if direction * (line - h) > 0]
        pool = outer or spare
        line = min(pool, key=lambda x: abs(x - h))
        best, best_dE = None, np.inf
        for c in np.flatnonzero(k == line):
            dE = 0.0
            for k_c, sign in ((float(h), 1.0), (k[c], -1.0)):
                dk = k_c - k
                dk = dk - p * np.rint(dk / p)
                dt = t[c] - t
                dt = dt - T * np.rint(dt / T)
                d2 = dk**2 + (a * dt) ** 2
                d2[c] = np.inf
                q, _ = _charges(k, alpha, sigma)
                qc, _ = _charges(np.array([k_c]), alpha, sigma)
                dE += sign * qc[0] * float((q * d2 ** (-s / 2)).sum())
            if dE < best_dE:
                best, best_dE = c, dE
        k[best] = h
    return k.reshape(T, n)


def vista_loop(T: int, W: int, R: float, seed: int, tiled: bool = False) -> np.ndarray:
    """VISTA with the default parameters, loop implementation; ``(T, W)`` bool."""
    n = vista_lines_per_frame(W, R)
    prm = VistaParams().resolve(W, R)
    rng_init, rng_shift = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    K = _initial_positions(T, W, n, prm.alpha, prm.sigma, rng_init)
    t = np.repeat(np.arange(T), n).astype(np.float64)
    it, g = prm.iterations, prm.snap_every
    step, median_force = 1.0, None
    for i in range(1, it + 1):
        a = prm.time_scale
        if i > prm.interleave_at:
            a *= 1 + math.exp(-(i - prm.interleave_at - 1) / math.ceil(it / 60))
        k_before = K.ravel().copy()
        k_new, forces = loop_forces(k_before, t, W, T, a, prm.s, prm.alpha, prm.sigma, tiled, prm.max_step, step)
        if i == 2:
            median_force = float(np.median(np.abs(forces)))
        K = _wrap(k_new, W).reshape(T, n)
        snap = i % g == 0 or i == it
        if snap:
            K = _wrap(np.rint(K), W)
        if i == 3 and median_force:
            step = prm.step_size * (1 + R / 4) / median_force
        if i == prm.interleave_at:
            K = _interleave(np.rint(K), W, R, rng_shift)
            snap = True
        if snap:
            K = _resolve_duplicates(np.rint(K), W)
            if i >= prm.fill_from:
                K = loop_fill(K, W, prm.time_scale, prm.s, prm.alpha, prm.sigma, prm.fill_fraction)
    return _positions_to_mask(K.astype(np.int64), W)


# ------------------------------------------------------------------------------------------


def _timed(fn, *args, **kwargs):
    """``(result, wall seconds)``; the process CPU seconds are kept in ``_timed.cpu``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    _timed.cpu = time.process_time() - c0
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--lines", type=int, default=128)
    ap.add_argument("--acc", type=float, nargs="+", default=[4, 8, 16])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="vectorised runs per R (best and median reported)")
    ap.add_argument("--reference-acc", type=float, nargs="*", default=[8, 16],
                    help="R values at which the (slow: 9x the pairs) 3x3-tiled sequential loop also runs")
    args = ap.parse_args()
    T, W = args.frames, args.lines

    ref_acc = set(args.reference_acc)
    print(f"VISTA benchmark: T={T}, W={W}, seed={args.seed}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    summary = []
    for R in args.acc:
        times: dict[str, float] = {}
        masks: dict[str, np.ndarray] = {}
        runs, cpu = [], []
        for _ in range(args.repeats):
            m, dt = _timed(vista_mask, T, W, R, args.seed, cache=False)
            runs.append(dt)
            cpu.append(_timed.cpu)
        masks["vectorised"], times["vectorised"] = m, min(runs)
        masks["loop"], times["loop"] = _timed(vista_loop, T, W, R, args.seed, tiled=False)
        loop_cpu = _timed.cpu
        variants = ["vectorised", "loop"] + (["loop-ref"] if R in ref_acc else [])
        if "loop-ref" in variants:
            masks["loop-ref"], times["loop-ref"] = _timed(vista_loop, T, W, R, args.seed, tiled=True)
        qs = {v: mask_quality(masks[v]) for v in variants}
        print(f"\nR = {R:g}  (n = {vista_lines_per_frame(W, R)} lines/frame)")
        print(f"  vectorised: best {min(runs):.3f} s wall ({min(cpu):.3f} s CPU), median {np.median(runs):.3f} s "
              f"over {len(runs)} runs; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for v in variants[1:]:
            print(f"  {v:9s}: {times[v]:.2f} s  ->  speed-up {times[v] / times['vectorised']:.1f}x")
        print(f"  CPU-time speed-up vs loop: {loop_cpu:.2f} s / {min(cpu):.3f} s = {loop_cpu / min(cpu):.1f}x")
        print(f"  identical masks (vectorised vs loop): {np.array_equal(masks['vectorised'], masks['loop'])}, "
              f"differing entries: {int((masks['vectorised'] != masks['loop']).sum())}")
        header = f"  {'metric':28s}" + "".join(f"{v:>14s}" for v in variants)
        print(header)
        for field, fmt in [("acceleration", "{:.4f}"), ("lines_min", "{}"), ("lines_max", "{}"), ("max_gap_k", "{}"),
                           ("max_gap_t", "{}"), ("unsampled_fraction", "{:.4f}"), ("psf_sidelobe", "{:.4f}")]:
            print(f"  {field:28s}" + "".join(f"{fmt.format(getattr(qs[v], field)):>14s}" for v in variants))
        rel = abs(qs["vectorised"].psf_sidelobe - qs["loop"].psf_sidelobe) / qs["loop"].psf_sidelobe
        same_counts = bool((masks["vectorised"].sum(1) == masks["loop"].sum(1)).all())
        summary.append((R, times["vectorised"], times["loop"] / times["vectorised"], rel, same_counts,
                        times.get("loop-ref", float("nan")) / times["vectorised"]))
    print("\nsummary: R, vectorised s, speed-up vs loop, |side-lobe difference| vs loop, same per-frame counts, "
          "speed-up vs loop-ref")
    for R, tv, su, rel, same, suref in summary:
        print(f"  R={R:<4g} {tv:7.3f} s  {su:6.1f}x  {100 * rel:5.1f} %  {same}  {suref:6.1f}x")


if __name__ == "__main__":
    main()
