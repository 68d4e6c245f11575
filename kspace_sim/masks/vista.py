"""VISTA: variable-density incoherent spatiotemporal acquisition (Ahmad et al., MRM 2015).

A ``(T, W)`` k–t pattern with exactly ``n = round(W / R)`` distinct phase-encoding lines per
frame, found by minimising a Coulomb-like energy on the periodic k–t plane::

    U = 1/2 sum_{i != j} q_i q_j / ((k_i - k_j)^2 + (a (t_i - t_j))^2)^(s/2),
    q(k) = 1 - alpha exp(-k^2 / (2 sigma^2))        (smaller charge near k = 0 -> denser there)

Samples move along k only (frames are fixed), every step clipped to ``±R/4``. The schedule
follows the published algorithm and its reference MATLAB code:

* start: per frame, ``n`` distinct lines drawn with probability ∝ ``0.1 + alpha/(1-alpha)
  exp(-k^2/sigma^2)``;
* every iteration all samples move at once along the force ``-dU/dk`` (step normalised after
  iteration 3 so that the median move is ``step_size (1 + R/4)``);
* every ``snap_every``-th iteration (and the last) samples snap to the grid and duplicate lines of
  a frame move to the nearest free line of that frame;
* at ``interleave_at`` all frames are re-seeded from one averaged pattern with per-frame shifts
  ``round(R/2 (u - 0.5))``, and the time axis is temporarily stretched (as the reference code);
* from ``fill_from`` on, at snap iterations, phase encodes never sampled in any frame are filled
  centre outwards, each by the lowest-energy move of a sample from the nearest line sampled in
  at least two frames (outer side first), so the time average covers every line whenever
  ``T n >= W``.

Periodic distances use the minimum-image convention and are computed for all pairs at once,
per frame offset (each unordered pair once), in cache-sized blocks; the point set is never
tiled. Index arrays, work buffers and block views depend only on the shape and are built once
per mask (:class:`_PairPlan`), so an iteration is a fixed sequence of in-place array operations.
Optional fully sampled ACS lines, cycling of a short pattern over time and an on-disk cache
(:mod:`kspace_sim.masks.cache`) are available; see :func:`vista_mask`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from kspace_sim.masks.cache import MaskCache
from kspace_sim.masks.registry import acs_block_start, register_pattern

__all__ = [
    "VistaParams",
    "vista_mask",
    "vista_lines_per_frame",
    "vista_effective_acceleration",
    "VISTA_VERSION",
]

#: Bumped whenever the generator's output for given parameters changes (part of the cache key).
VISTA_VERSION = "1"

_BLOCK_ELEMENTS = 1 << 16  # pair-block size (float32 elements) kept in cache per step


def vista_lines_per_frame(n_lines: int, acceleration: float) -> int:
    """``n = round(W / R)`` lines per frame (Python rounding, as the other patterns), at least 1."""
    return max(1, int(round(n_lines / acceleration)))


def vista_effective_acceleration(n_lines: int, acceleration: float, acs_lines: int = 0) -> tuple[float, float]:
    """Exact per-frame acceleration ``(with ACS, without ACS)``.

    With ACS: ``W / n``. Without: ``(W - acs) / (n - acs)``, the acceleration of the incoherent
    (VISTA) part alone. Both equal ``W / n`` when ``acs_lines == 0``.
    """
    n = vista_lines_per_frame(n_lines, acceleration)
    return n_lines / n, (n_lines - acs_lines) / (n - acs_lines)


@dataclass(frozen=True)
class VistaParams:
    """Every VISTA parameter; ``None`` fields take the published defaults (see :meth:`resolve`).

    Attributes:
        iterations: gradient-descent iterations (120).
        s: exponent of the potential, ``1/d^s`` (1.4).
        alpha: variable-density strength in ``[0, 1)``; 0 = uniform density (0.28).
        sigma: width of the density envelope in lines (``p / 5``, p = lines VISTA places).
        time_scale: distance of adjacent frames in units of lines, ``W`` of the paper
            (``R / 10 + 0.25``).
        step_size: median displacement per iteration relative to ``1 + R/4`` (0.25).
        max_step: largest move of a sample per iteration, lines (``R / 4``).
        snap_every: snap to the grid and resolve duplicates every this many iterations
            (``iterations // 6`` = 20).
        interleave_at: iteration of the time-interleaving re-seed (``round(iterations / 2)`` = 60);
            0 disables it.
        fill_from: first iteration at which never-sampled lines are filled
            (``round(5 iterations / 6)`` = 100); 0 disables the fill.
        fill_fraction: central fraction of k-space whose time average is made fully sampled (1.0).
    """

    iterations: int = 120
    s: float = 1.4
    alpha: float = 0.28
    sigma: float | None = None
    time_scale: float | None = None
    step_size: float = 0.25
    max_step: float | None = None
    snap_every: int | None = None
    interleave_at: int | None = None
    fill_from: int | None = None
    fill_fraction: float = 1.0

    def resolve(self, n_lines: int, acceleration: float) -> VistaParams:
        """Copy with every ``None`` replaced by its default for ``p = n_lines`` lines at R."""
        it = int(self.iterations)
        return VistaParams(
            iterations=it,
            s=float(self.s),
            alpha=float(self.alpha),
            sigma=float(n_lines / 5 if self.sigma is None else self.sigma),
            time_scale=float(acceleration / 10 + 0.25 if self.time_scale is None else self.time_scale),
            step_size=float(self.step_size),
            max_step=float(acceleration / 4 if self.max_step is None else self.max_step),
            snap_every=int(max(1, it // 6) if self.snap_every is None else self.snap_every),
            interleave_at=int(max(1, _round_half_away(it / 2)) if self.interleave_at is None else self.interleave_at),
            fill_from=int(max(1, _round_half_away(5 * it / 6)) if self.fill_from is None else self.fill_from),
            fill_fraction=float(self.fill_fraction),
        )

    def validate(self) -> None:
        """Raise ``ValueError`` for any parameter outside its meaningful range (resolved params)."""
        checks = [
            (_is_int(self.iterations) and self.iterations >= 1, f"iterations must be an integer >= 1, got {self.iterations}"),
            (np.isfinite(self.s) and 0 < self.s <= 10, f"s must be in (0, 10], got {self.s}"),
            (np.isfinite(self.alpha) and 0 <= self.alpha < 1, f"alpha must be in [0, 1), got {self.alpha}"),
            (self.sigma is None or (np.isfinite(self.sigma) and self.sigma > 0), f"sigma must be > 0, got {self.sigma}"),
            (self.time_scale is None or (np.isfinite(self.time_scale) and self.time_scale > 0),
             f"time_scale must be > 0, got {self.time_scale}"),
            (np.isfinite(self.step_size) and self.step_size > 0, f"step_size must be > 0, got {self.step_size}"),
            (self.max_step is None or (np.isfinite(self.max_step) and self.max_step > 0),
             f"max_step must be > 0, got {self.max_step}"),
            (self.snap_every is None or (_is_int(self.snap_every) and 1 <= self.snap_every <= self.iterations),
             f"snap_every must be an integer in [1, iterations={self.iterations}], got {self.snap_every}"),
            (self.interleave_at is None or (_is_int(self.interleave_at) and 0 <= self.interleave_at <= self.iterations),
             f"interleave_at must be an integer in [0, iterations={self.iterations}] (0 = off), got {self.interleave_at}"),
            (self.fill_from is None or (_is_int(self.fill_from) and 0 <= self.fill_from <= self.iterations),
             f"fill_from must be an integer in [0, iterations={self.iterations}] (0 = off), got {self.fill_from}"),
            (np.isfinite(self.fill_fraction) and 0 < self.fill_fraction <= 1,
             f"fill_fraction must be in (0, 1], got {self.fill_fraction}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"VISTA: {message}")


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _round_half_away(x: float | np.ndarray) -> Any:
    """MATLAB-style rounding (halves away from zero), as the reference implementation."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


# --------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------


def _validate_request(n_frames: int, n_lines: int, acceleration: float, seed: int, acs_lines: int,
                      cycle_frames: int | None) -> int:
    if not (_is_int(n_frames) and n_frames >= 2):
        raise ValueError(f"VISTA needs T >= 2 frames, got {n_frames}")
    if not (_is_int(n_lines) and n_lines >= 2):
        raise ValueError(f"VISTA needs W >= 2 lines, got {n_lines}")
    try:
        r = float(acceleration)
    except (TypeError, ValueError):
        raise ValueError(f"acceleration R must be a number, got {acceleration!r}") from None
    if not np.isfinite(r) or r <= 1:
        raise ValueError(f"VISTA needs R > 1, got R={acceleration}")
    if r > n_lines:
        raise ValueError(f"acceleration R={acceleration} exceeds the number of lines W={n_lines}")
    if not (_is_int(seed) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = vista_lines_per_frame(n_lines, r)
    if not (_is_int(acs_lines) and 0 <= acs_lines < n):
        raise ValueError(f"acs_lines must be an integer in [0, n={n}) (n = round(W/R) lines per frame), got {acs_lines}")
    if cycle_frames is not None and not (_is_int(cycle_frames) and cycle_frames >= 2):
        raise ValueError(f"cycle_frames must be None or an integer >= 2, got {cycle_frames}")
    return n


def _charges(k: np.ndarray, alpha: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Charge ``q(k) = 1 - alpha exp(-k^2/(2 sigma^2))`` and its derivative ``dq/dk``."""
    e = alpha * np.exp(-(k * k) / (2 * sigma * sigma))
    return 1 - e, e * k / (sigma * sigma)


def _initial_positions(n_frames: int, p: int, n: int, alpha: float, sigma: float,
                       rng: np.random.Generator) -> np.ndarray:
    """``(T, n)`` centred integer k of ``n`` distinct lines per frame, drawn without replacement
    with probability ∝ ``0.1 + alpha/(1-alpha) exp(-k^2/sigma^2)`` (Gumbel top-k, exact)."""
    k = np.arange(p) - p // 2
    prob = 0.1 + alpha / (1 - alpha) * np.exp(-(k * k) / (sigma * sigma))
    keys = np.log(prob)[None, :] - np.log(-np.log(rng.random((n_frames, p))))
    idx = np.argpartition(-keys, n - 1, axis=1)[:, :n]
    return np.sort(k[idx], axis=1).astype(np.float64)


def _wrap(k: np.ndarray, p: int) -> np.ndarray:
    """Wrap centred positions into ``[-p//2 - 1/2, p - p//2 - 1/2)``."""
    lo = -(p // 2) - 0.5
    return np.mod(k - lo, p) + lo


class _PairPlan:
    """What :func:`_forces` needs that depends only on the shape ``(T, n)``, built once per mask
    and reused by every iteration: the offset blocks, gather indices, masks, float32 work buffers
    and their block-shaped views, so that an iteration allocates (almost) nothing, takes no page
    faults and does no index arithmetic. It holds mutable buffers: one plan per generator run.

    Per-sample arrays of the partner frames live in a "block layout": rows of ``n`` values, block
    after block, each block a ``(T, d, n)`` array (frame t, its partner frame ``(t + D) % T``).
    """

    def __init__(self, T: int, n: int) -> None:
        self.shape = (T, n)
        n_off = T // 2 + 1
        offsets = np.arange(n_off)
        per = max(1, _BLOCK_ELEMENTS // (T * n * n))
        t = np.arange(T)
        fwd = (t[:, None] + offsets[None, :]) % T  # (T, D): partner frame of frame t at offset D
        react = (offsets > 0) & ~((T % 2 == 0) & (offsets == T // 2))
        self.D32 = offsets.astype(np.float32)
        rows = T * n_off
        size = T * n * min(per, n_off) * n
        buffers = [np.empty(size, dtype=np.float32) for _ in range(4)]
        self.Kf, self.q, self.qp = (np.empty((T, n), dtype=np.float32) for _ in range(3))
        self.Ko, self.qo, self.qpo, self.Fo, self.Fb = (np.empty((rows, n), dtype=np.float32) for _ in range(5))
        self.hr, self.gr = np.zeros((rows, n), dtype=np.float32), np.zeros((rows, n), dtype=np.float32)
        self.Kf4, self.qrow = self.Kf.reshape(T, n, 1, 1), self.q[:, None, :]
        self.blocks: list[dict[str, Any]] = []
        gather, back, nonreact = [], [], []
        for c0 in range(0, n_off, per):
            D = offsets[c0 : c0 + per]
            nd = D.size
            sl = slice(T * c0, T * (c0 + nd))  # the block's rows
            gather.append(fwd[:, c0 : c0 + nd].ravel())
            # frame u receives Fo[(u - D_i) % T, i]: a (d, T) gather of the block's (T, d) rows
            bwd = (t[None, :] - D[:, None]) % T
            back.append(sl.start + bwd * nd + np.arange(nd)[:, None])
            nonreact.append(np.broadcast_to(~react[c0 : c0 + nd], (T, nd)).ravel())
            dk, d2, g, h = (b[: T * n * nd * n].reshape(T, n, nd, n) for b in buffers)
            self.blocks.append(dict(
                c0=c0, nd=nd, self_pairs=bool(D[0] == 0), react=bool(react[c0 : c0 + nd].any()),
                dk=dk, d2=d2, g=g, h=h, g2=g.reshape(T, n, nd * n), h2=h.reshape(T, n, nd * n),
                same=d2[:, :, 0, :], Ko=self.Ko[sl].reshape(T, 1, nd, n), qo=self.qo[sl].reshape(T, nd * n, 1),
                hr=self.hr[sl].reshape(T, 1, nd * n), gr=self.gr[sl].reshape(T, 1, nd * n),
            ))
        self.gather, self.back = np.concatenate(gather), np.concatenate(back).ravel()
        self.nonreact = np.flatnonzero(np.concatenate(nonreact))
        self.zero_pair = np.empty((T, n, n), dtype=bool)
        nb = len(self.blocks)
        self.per, self.nd_max = per, min(per, n_off)
        self.mm = np.empty((2, nb, T, n, 1), dtype=np.float32)  # per block: sums of h q_o and g q_o
        # the force terms in the order the blocks add them: own term, then the reaction if any
        self.terms = np.empty((nb, 2, T, n), dtype=np.float32)
        rows_used = [2 * c + r for c, b in enumerate(self.blocks) for r in ((0, 1) if b["react"] else (0,))]
        self.rows = None if len(rows_used) == 2 * nb else np.array(rows_used)
        # reaction sums over each block's offsets: the equal-sized blocks at once, a short last one alone
        self.n_uniform = nb if self.blocks[-1]["nd"] == per else nb - 1
        # With many equal-sized blocks, their partner positions as contiguous slabs,
        # G[u, i, d, j] = K[(u + d) % T, j] (block c0's partners: G[c0 : c0 + T]), and the own
        # positions spread to the block's shape, A[t, i, d, j] = K[t, i], both filled once per
        # call: each block's subtraction then runs over contiguous arrays instead of a
        # broadcast one (inner loops only d n long).
        self.slabs = self.n_uniform >= 3
        self.need_Ko = not self.slabs or self.n_uniform < nb
        if self.slabs:
            U = (self.n_uniform - 1) * per + T
            self.row_idx = np.arange(U + per - 1) % T
            self.Krow = np.empty((U + per - 1, n), dtype=np.float32)
            z = self.Krow.itemsize
            self.G_src = np.lib.stride_tricks.as_strided(self.Krow, shape=(U, n, per, n),
                                                         strides=(n * z, 0, n * z, z), writeable=False)
            self.G = np.empty((U, n, per, n), dtype=np.float32)
            self.A = np.empty((T, n, per, n), dtype=np.float32)
            for b in self.blocks[: self.n_uniform]:
                b["slab"] = self.G[b["c0"] : b["c0"] + T]


def _forces(K: np.ndarray, p: int, a: float, s: float, alpha: float, sigma: float,
            plan: _PairPlan | None = None) -> np.ndarray:
    """Force ``-dU/dk`` on every sample, ``(T, n)`` from positions ``(T, n)``.

    All pairs are handled frame offset by frame offset (``D = 0 .. T//2``): offset D pairs frame
    t with frame t + D (minimum image in t, so the time distance is ``a D``) and, transposed,
    gives the reaction on frame t + D, so each unordered pair is evaluated once. Offsets are
    stacked into ``(T, n, d, n)`` blocks of about ``_BLOCK_ELEMENTS`` pairs (cache-sized, work
    buffers reused), whose sums are batched matrix-vector products over T. k distances use the
    minimum image. float32 inside, float64 out. ``plan``: the shape-only precomputation
    (:class:`_PairPlan`), reused across calls; built here when None.

    Per block: 12 elementwise passes over preallocated buffers, each over long contiguous inner
    loops where possible, and 4 batched matrix-vector products. Everything per sample (charges,
    gathers of the partner frames, the reaction terms and the sum of the blocks' terms, in block
    order) is done once per call for all blocks together.
    """
    T, n = K.shape
    if plan is None or plan.shape != (T, n):
        plan = _PairPlan(T, n)
    Kf, q, qp = plan.Kf, plan.q, plan.qp
    np.copyto(Kf, K, casting="same_kind")
    for dst, src in zip((q, qp), _charges(K, alpha, sigma)):
        np.copyto(dst, src, casting="same_kind")
    if plan.need_Ko:
        np.take(Kf, plan.gather, axis=0, out=plan.Ko)
    if plan.slabs:
        np.take(Kf, plan.row_idx, axis=0, out=plan.Krow)
        np.copyto(plan.G, plan.G_src)
        np.copyto(plan.A, plan.Kf4)
    np.take(q, plan.gather, axis=0, out=plan.qo)
    np.take(qp, plan.gather, axis=0, out=plan.qpo)
    pf, inv_p = np.float32(p), np.float32(1.0 / p)
    ss, half_s = np.float32(s), np.float32(-s / 2)
    tt = (a * plan.D32) ** 2  # (a D)^2 per offset
    per, nb, ndm = plan.per, len(plan.blocks), plan.nd_max
    if per > 1:  # spread to (block, n_self, d, n_other): the additions then have long inner loops
        tt_pad = np.zeros(nb * ndm, dtype=tt.dtype)
        tt_pad[: tt.size] = tt
        tts = np.empty((nb, n, ndm, n), dtype=tt.dtype)
        tts[...] = tt_pad.reshape(nb, 1, ndm, 1)
    mm0, mm1 = plan.mm
    for c, b in enumerate(plan.blocks):
        dk, d2, g, h = b["dk"], b["d2"], b["g"], b["h"]
        if "slab" in b:  # (T, n_self, d, n_other)
            np.subtract(plan.A, b["slab"], out=dk)
        else:
            np.subtract(plan.Kf4, b["Ko"], out=dk)
        np.multiply(dk, inv_p, out=g)
        np.rint(g, out=g)
        g *= pf
        dk -= g
        np.multiply(dk, dk, out=d2)
        if per == 1:
            d2 += tt[b["c0"]]
        else:
            d2 += tts[c, :, : b["nd"]]
        if b["self_pairs"]:  # self pairs (and coincident samples) carry no force
            np.equal(b["same"], 0, out=plan.zero_pair)
            np.copyto(b["same"], np.inf, where=plan.zero_pair)
        np.log(d2, out=g)
        g *= half_s
        np.exp(g, out=g)  # d^-s
        np.divide(g, d2, out=h)
        h *= dk  # dk d^-(s+2)
        # force on each sample itself: sum over all partners of all offsets in the block
        np.matmul(b["h2"], b["qo"], out=mm0[c])
        np.matmul(b["g2"], b["qo"], out=mm1[c])
        # reaction on the partner frame (dk -> -dk), except where the block already holds both
        # orders of each pair: offset 0 and, for even T, offset T/2
        if b["react"]:
            np.matmul(plan.qrow, b["h2"], out=b["hr"])  # sum over self j
            np.matmul(plan.qrow, b["g2"], out=b["gr"])
    # reactions of all blocks at once: Fo[t, i] acts on frame (t + D_i) % T
    Fo = plan.Fo
    np.multiply(-ss, plan.qo, out=Fo)
    Fo *= plan.hr
    Fo -= plan.qpo * plan.gr
    Fo[plan.nonreact] = 0
    np.take(Fo, plan.back, axis=0, out=plan.Fb)
    terms, nu, m = plan.terms, plan.n_uniform, T * per
    if nu:  # each block's reactions summed over its offsets, in offset order
        np.add.reduce(plan.Fb[: nu * m].reshape(nu, per, T, n), axis=1, out=terms[:nu, 1])
    if nu < nb:
        np.add.reduce(plan.Fb[nu * m :].reshape(-1, T, n), axis=0, out=terms[nu, 1])
    np.multiply(ss * q, mm0[..., 0], out=terms[:, 0])
    terms[:, 0] -= qp * mm1[..., 0]
    # the blocks' terms added one after the other (own term, then reaction), as block by block
    flat = terms.reshape(-1, T, n)
    F = np.add.reduce(flat if plan.rows is None else flat[plan.rows], axis=0)
    return F.astype(np.float64)


def _move_energy(K: np.ndarray, frames: np.ndarray, src: np.ndarray, dst: np.ndarray, p: int, a: float,
                 s: float, alpha: float, sigma: float) -> np.ndarray:
    """Energy change of moving sample ``src[c]`` (flat index into ``K``, frame ``frames[c]``) to
    line ``dst[c]``, for every candidate c at once: ``(C,)``."""
    T, n = K.shape
    kf = K.ravel()
    tf = np.repeat(np.arange(T), n)
    q_all, _ = _charges(kf, alpha, sigma)
    out = []
    for k_new in (dst, kf[src]):
        dk = k_new[:, None] - kf[None, :]
        dk -= p * np.rint(dk / p)
        dt = frames[:, None] - tf[None, :]
        dt -= T * np.rint(dt / T)
        d2 = dk * dk + (a * dt) ** 2
        d2[np.arange(src.size), src] = np.inf  # not with itself (lines are distinct per frame)
        phi = d2 ** (-s / 2)
        q_new, _ = _charges(k_new, alpha, sigma)
        out.append(q_new * (phi @ q_all))
    return out[0] - out[1]


def _resolve_duplicates(K: np.ndarray, p: int) -> np.ndarray:
    """Integer positions ``(T, n)``: move every repeated line of a frame to the nearest free line
    of the same frame (periodic distance, ties to the lower line)."""
    lo = p // 2
    idx = K.astype(np.int64) + lo
    srt = np.sort(idx, axis=1)
    bad = np.flatnonzero((np.diff(srt, axis=1) == 0).any(axis=1))
    for f in bad:
        row = idx[f]
        used = np.zeros(p, dtype=bool)
        for j in range(row.size):
            if used[row[j]]:
                free = np.flatnonzero(~used)
                d = np.abs(free - row[j])
                d = np.minimum(d, p - d)
                row[j] = free[np.argmin(d)]
            used[row[j]] = True
        idx[f] = row
    return (idx - lo).astype(np.float64)


def _fill_holes(K: np.ndarray, p: int, a: float, s: float, alpha: float, sigma: float,
                fraction: float) -> np.ndarray:
    """Fill phase encodes never sampled in any frame (within the central ``fraction`` of k),
    centre outwards. Each hole takes the sample, among those on the nearest line sampled in at
    least two frames (outer side first, else inner side), whose move costs the least energy."""
    T, n = K.shape
    lo = p // 2
    K = K.copy()
    kmin, kmax = -int(math.floor(fraction * p / 2)), int(math.ceil(fraction * p / 2)) - 1
    lines = np.arange(max(kmin, -lo), min(kmax, p - lo - 1) + 1)
    # centre-out order, negative side first on ties
    order = lines[np.lexsort((lines, np.abs(lines)))]
    counts = np.bincount((K.ravel().astype(np.int64) + lo), minlength=p)
    for h in order:
        if counts[h + lo] > 0:
            continue
        spare = np.flatnonzero(counts >= 2) - lo
        if spare.size == 0:
            break
        direction = 1 if h >= 0 else -1
        outer = spare[direction * (spare - h) > 0]
        pool = outer if outer.size else spare
        line = pool[np.argmin(np.abs(pool - h))]
        src = np.flatnonzero(K.ravel() == line)
        frames = src // n
        dE = _move_energy(K, frames.astype(np.float64), src, np.full(src.size, float(h)), p, a, s, alpha, sigma)
        pick = src[int(np.argmin(dE))]
        K.ravel()[pick] = h
        counts[line + lo] -= 1
        counts[h + lo] += 1
    return K


def _interleave(K: np.ndarray, p: int, acceleration: float, rng: np.random.Generator) -> np.ndarray:
    """Re-seed every frame from the frame-averaged sorted pattern, shifted per frame by
    ``round(R/2 (u - 0.5))``; integer positions ``(T, n)``."""
    T, _ = K.shape
    base = _round_half_away(np.sort(K, axis=1).mean(axis=0))
    shift = _round_half_away(acceleration / 2 * (rng.random(T) - 0.5))
    lo = p // 2
    return np.mod(base[None, :] + shift[:, None] + lo, p) - lo


def _vista_core(n_frames: int, p: int, n: int, acceleration: float, seed: int, prm: VistaParams) -> np.ndarray:
    """VISTA positions on a ``p``-line grid: ``(T, n)`` centred integer k, distinct per frame."""
    rng_init, rng_shift = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    K = _initial_positions(n_frames, p, n, prm.alpha, prm.sigma, rng_init)
    it, g = prm.iterations, prm.snap_every
    stretch_tau = math.ceil(it / 60)
    step, median_force = 1.0, None
    plan = _PairPlan(n_frames, n)  # shape-only indices and buffers, reused by every iteration
    for i in range(1, it + 1):
        a = prm.time_scale
        if prm.interleave_at and i > prm.interleave_at:
            a *= 1 + math.exp(-(i - prm.interleave_at - 1) / stretch_tau)
        F = _forces(K, p, a, prm.s, prm.alpha, prm.sigma, plan)
        if i == 2:
            median_force = float(np.median(np.abs(F)))
        K = _wrap(K + np.clip(step * F, -prm.max_step, prm.max_step), p)
        snap = i % g == 0 or i == it
        if snap:
            K = _wrap(np.rint(K), p)
        if i == 3 and median_force:
            step = prm.step_size * (1 + acceleration / 4) / median_force
        if i == prm.interleave_at:
            K = _interleave(np.rint(K), p, acceleration, rng_shift)
            snap = True
        if snap:
            K = _resolve_duplicates(np.rint(K), p)
            if prm.fill_from and i >= prm.fill_from:
                K = _fill_holes(K, p, prm.time_scale, prm.s, prm.alpha, prm.sigma, prm.fill_fraction)
    return K.astype(np.int64)


def _positions_to_mask(K: np.ndarray, p: int) -> np.ndarray:
    T = K.shape[0]
    m = np.zeros((T, p), dtype=bool)
    m[np.arange(T)[:, None], K + p // 2] = True
    return m


def _compute(n_frames: int, n_lines: int, acceleration: float, seed: int, acs_lines: int,
             cycle_frames: int | None, prm: VistaParams) -> np.ndarray:
    n = vista_lines_per_frame(n_lines, acceleration)
    p, m = n_lines - acs_lines, n - acs_lines
    r_inner = p / m if acs_lines else float(acceleration)
    T = n_frames if cycle_frames is None else min(cycle_frames, n_frames)
    core = _positions_to_mask(_vista_core(T, p, m, r_inner, seed, prm.resolve(p, r_inner)), p)
    if T < n_frames:
        core = core[np.arange(n_frames) % T]
    if not acs_lines:
        return core
    out = np.ones((n_frames, n_lines), dtype=bool)
    start = acs_block_start(n_lines, acs_lines)
    out[:, :start] = core[:, :start]
    out[:, start + acs_lines :] = core[:, start:]
    return out


def _resolved_params(prm: VistaParams, n_lines: int, n: int, acceleration: float, acs_lines: int) -> VistaParams:
    """Validate ``prm`` and resolve its defaults for VISTA's grid (the ACS block removed)."""
    prm.validate()
    p, m = n_lines - acs_lines, n - acs_lines
    r_inner = p / m if acs_lines else float(acceleration)
    resolved = prm.resolve(p, r_inner)
    resolved.validate()
    return resolved


def check_vista_request(n_frames: int, n_lines: int, acceleration: float, **options: Any) -> None:
    """Raise ``ValueError`` for any request :func:`vista_mask` would refuse (R <= 1, T < 2, ...),
    without computing a mask: the registry's ``check_request`` hook, run before a build writes.
    ``options`` are :func:`vista_mask`'s keyword options (an unknown one raises ``TypeError``), with
    ``seed`` (default 0)."""
    seed = options.pop("seed", 0)
    a = inspect.signature(vista_mask).bind(n_frames, n_lines, acceleration, seed, **options)
    a.apply_defaults()
    args = a.arguments
    n = _validate_request(n_frames, n_lines, acceleration, seed, args["acs_lines"], args["cycle_frames"])
    prm = VistaParams(*(args[f.name] for f in fields(VistaParams)))
    _resolved_params(prm, n_lines, n, acceleration, args["acs_lines"])


@register_pattern("vista", "VISTA variable-density incoherent k-t sampling (Ahmad et al. 2015)")
def vista_mask(
    n_frames: int,
    n_lines: int,
    acceleration: float,
    seed: int,
    *,
    iterations: int = 120,
    s: float = 1.4,
    alpha: float = 0.28,
    sigma: float | None = None,
    time_scale: float | None = None,
    step_size: float = 0.25,
    max_step: float | None = None,
    snap_every: int | None = None,
    interleave_at: int | None = None,
    fill_from: int | None = None,
    fill_fraction: float = 1.0,
    acs_lines: int = 0,
    cycle_frames: int | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> np.ndarray:
    """VISTA k–t mask, ``(T, W)`` bool with exactly ``round(W / R)`` distinct lines per frame.

    Args:
        n_frames, n_lines: T (>= 2) and W (>= 2, phase-encoding lines; k = 0 at index W // 2).
        acceleration: R, ``1 < R <= W``; ``n = round(W / R)`` lines per frame.
        seed: non-negative integer; the mask is a deterministic function of all arguments.
        iterations, s, alpha, sigma, time_scale, step_size, max_step, snap_every, interleave_at,
            fill_from, fill_fraction: the algorithm's parameters, see :class:`VistaParams`
            (defaults: the paper's; sigma, time_scale and max_step default from the grid VISTA
            places lines on and its acceleration).
        acs_lines: fully sampled central lines in every frame, part of the ``n`` lines
            (``0 <= acs_lines < n``). VISTA then places ``n - acs_lines`` lines per frame on the
            ``W - acs_lines`` other lines, the ACS block removed from its grid; see
            :func:`vista_effective_acceleration` for R with and without ACS.
        cycle_frames: compute a pattern of this many frames (e.g. <= 32, the reference code's
            advice) and repeat it cyclically over the T frames; None = a full-length pattern.
        cache: read/write the on-disk cache (:class:`~kspace_sim.masks.cache.MaskCache`), keyed
            by every argument above and :data:`VISTA_VERSION`.
        cache_dir: cache directory (default: ``$KSPACE_SIM_CACHE`` or ``~/.cache/kspace_sim/masks``).

    Returns:
        ``(T, W)`` bool, True = line sampled in that frame.

    Raises:
        ValueError: before any work, for R <= 1 or R > W, W or T < 2, or any parameter outside
            its range.
    """
    n = _validate_request(n_frames, n_lines, acceleration, seed, acs_lines, cycle_frames)
    prm = VistaParams(iterations, s, alpha, sigma, time_scale, step_size, max_step, snap_every,
                      interleave_at, fill_from, fill_fraction)
    resolved = _resolved_params(prm, n_lines, n, acceleration, acs_lines)
    compute = lambda: _compute(int(n_frames), int(n_lines), float(acceleration), int(seed), int(acs_lines),  # noqa: E731
                               None if cycle_frames is None or cycle_frames >= n_frames else int(cycle_frames),
                               prm)
    if not cache:
        return compute()
    key = {
        "pattern": "vista",
        "version": VISTA_VERSION,
        "n_frames": int(n_frames),
        "n_lines": int(n_lines),
        "acceleration": float(acceleration),
        "seed": int(seed),
        "acs_lines": int(acs_lines),
        "cycle_frames": None if cycle_frames is None or cycle_frames >= n_frames else int(cycle_frames),
        **asdict(resolved),
    }
    return MaskCache(cache_dir).get_or_compute(key, compute, shape=(n_frames, n_lines))


vista_mask.check_request = check_vista_request  # type: ignore[attr-defined]
