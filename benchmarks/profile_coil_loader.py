"""Where the trainer's coil loader spends its time in training mode (fresh noise), step by step.

The training loader (benchmarks/bench_coil_loader.py, ``train`` row) reads a subject's coil-free
k-space and maps from the store, then :func:`kmtr.data.prepare_batch` runs
:func:`kmtr.coils.fresh_coil_acquisition` and the normalisation. This script times the same steps
one at a time on one batch of the synthetic 8-coil store (9 × T' of 50 frames × 128 × 128), best of
``--repeats``, and prints each as seconds per subject and as a share of the coil loader's total, next
to the single-coil loader's own steps (read, one inverse FFT, normalisation) in the same run:

* ``read``: ``KSpaceDataset.__getitem__`` (k-space of the kept frames, mask, maps (C, S, H, W));
* ``noise draw``: ``normal_`` of the (B, C, S, T', H, W) complex buffer, one generator per subject;
* ``sigma``: scaling it by sigma per view;
* ``ifft x``: the coil-free image (one inverse FFT per view and frame);
* ``maps``: ``y_c += S_c x`` (``addcmul`` over C);
* ``sense-1``: ``sum_c conj(S_c) y_c``, one coil at a time;
* ``fft coils``: the C forward FFTs per view and frame and the checkerboard;
* ``rms``: the per-subject RMS of the sampled lines of all coils (:func:`kmtr.normalise.subject_scale`);
* ``divide``: the in-place division of the coil k-space by it (the image's division is not timed).

    python benchmarks/profile_coil_loader.py [--coils 8] [--frames 5] [--batch 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import default_collate

from benchmarks._store import synthetic_store
from benchmarks._timing import best_of
from kmtr.coils import _checkerboard, fresh_coil_acquisition
from kmtr.data import KSpaceDataset
from kmtr.fft import ifft2c
from kmtr.normalise import subject_scale


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--coils", type=int, default=8)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--folder", help="where synthetic stores are written (reused when present)")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    n = args.batch
    single = synthetic_store(n, 50, 128, args.folder)
    coils = synthetic_store(n, 50, 128, args.folder or str(Path(single).parent), n_coils=args.coils)
    ds1 = KSpaceDataset(single, "all", "vista_r4", args.frames, with_labels=False)
    dsc = KSpaceDataset(coils, "all", "vista_r4", args.frames, with_labels=False, coil_noise="fresh")
    r = args.repeats

    read1 = best_of(lambda: default_collate([ds1[i] for i in range(n)]), r)
    readc = best_of(lambda: default_collate([dsc[i] for i in range(n)]), r)
    b1 = default_collate([ds1[i] for i in range(n)])
    bc = default_collate([dsc[i] for i in range(n)])
    k, maps, sigma, mask = bc["kspace"], bc["maps"], bc["sigma"], bc["mask"]
    bsz, s, t, h, w = k.shape
    c = maps.shape[1]
    seeds = bc["noise_seed"].tolist()
    board = _checkerboard(h, w, torch.float32, k.device)
    maps6 = maps.unsqueeze(3)
    y = torch.empty((bsz, c, s, t, h, w), dtype=torch.complex64)

    def draw() -> None:
        for i, seed in enumerate(seeds):
            y[i].normal_(generator=torch.Generator().manual_seed(int(seed)))

    x = torch.fft.ifft2(k * board, norm="ortho")
    image = torch.zeros((bsz, s, t, h, w), dtype=torch.complex64)
    conj = maps6.conj().resolve_conj()

    def sense() -> None:
        image.zero_()
        for ci in range(c):
            image.addcmul_(conj[:, ci], y[:, ci])

    def fft_coils() -> None:
        out = torch.fft.fft2(y, norm="ortho")
        out.mul_(board)

    coil_k, _ = fresh_coil_acquisition(k, maps, sigma, None, [torch.Generator().manual_seed(v) for v in seeds])

    def rms() -> torch.Tensor:
        return torch.stack([subject_scale(coil_k[b], mask[b]) for b in range(bsz)])

    scale = rms()

    steps = [
        ("read", readc),
        ("noise draw", best_of(draw, r)),
        ("sigma", best_of(lambda: y.mul_(sigma.reshape(bsz, 1, s, 1, 1, 1)), r)),
        ("ifft x", best_of(lambda: torch.fft.ifft2(k * board, norm="ortho"), r)),
        ("maps", best_of(lambda: y.addcmul_(maps6, x.unsqueeze(1)), r)),
        ("sense-1", best_of(sense, r)),
        ("fft coils", best_of(fft_coils, r)),
        ("rms", best_of(rms, r)),
        ("divide", best_of(lambda: coil_k.div_(scale.reshape(-1, 1, 1, 1, 1, 1)), r)),  # as prepare_batch, in place
    ]
    whole = best_of(lambda: fresh_coil_acquisition(k, maps, sigma, None,
                                                    [torch.Generator().manual_seed(v) for v in seeds]), r)
    k1, m1 = b1["kspace"], b1["mask"]

    def single_prepare() -> None:
        scale = torch.stack([subject_scale(k1[b], m1[b]) for b in range(bsz)])
        kn = k1 / scale.reshape(-1, 1, 1, 1, 1)
        ifft2c(kn)

    prep1 = best_of(single_prepare, r)
    total = sum(v for _, v in steps)
    print(f"stores: {single} | {coils}; batch {bsz}, (C, S, T', H, W) = ({c}, {s}, {t}, {h}, {w}), "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'step':12s} {'s/subject':>10s} {'share':>7s}")
    for name, sec in steps:
        print(f"{name:12s} {sec / bsz:10.4f} {sec / total:7.1%}")
    print(f"{'sum':12s} {total / bsz:10.4f}  (fresh_coil_acquisition in one call: {whole / bsz:.4f} s/subject)")
    one = read1 + prep1
    print(f"single-coil loader: read {read1 / bsz:.4f} + prepare {prep1 / bsz:.4f} = {one / bsz:.4f} s/subject; "
          f"coil loader / single-coil = {total / one:.1f}x the time (ratio of rates {one / total:.2f})")


if __name__ == "__main__":
    main()
