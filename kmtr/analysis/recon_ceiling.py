"""The reconstruction decoder's ceiling set by its output layer.

The stage-III reconstruction decoder (:class:`kmtr.models.mae.TokenDecoder`) ends in one linear layer
shared by every token, ``patch = W h + b`` with ``h`` ``d``-wide (``heads.rec_width``, or
``arch.dec_width``) and ``patch`` a token's ``pt·ph·pw·2`` fully sampled k-space values. Every patch it
predicts therefore lies in one ``d``-dimensional affine subspace. The subspace that fits the true
k-space best in mean squared error is the span of the tokens' top ``d`` principal directions around
their mean (Eckart–Young), so projecting the *true* test tokens onto the one fitted on the training
split gives what the decoder could reach at best, even if it knew every unsampled line. The PSNR is
the evaluation's (:func:`kmtr.analysis.metrics.reconstruction_metrics`, magnitude images, per-subject
normalised k-space as in training), beside the zero-filled input's.

    python -m kmtr.analysis.recon_ceiling STORE [--dims 16,32,64,128] [--patch 5,16,16] [--frames 5]
"""

from __future__ import annotations

import argparse
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from kmtr.analysis.metrics import reconstruction_metrics
from kmtr.data import KSpaceDataset, prepare_batch, zero_filled_image
from kmtr.fft import ifft2c
from kmtr.models.tokenizer import TokenGrid, patchify, unpatchify

__all__ = ["principal_subspace", "project_tokens", "reconstruction_ceiling"]


def principal_subspace(token_batches: Iterable[np.ndarray], dims: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and top principal directions of tokens given in batches (covariance accumulated in float64).

    Args:
        token_batches: arrays (n_i, P) of real token values (any number of batches).
        dims: number of directions to keep (≤ P).

    Returns:
        ``mean`` (P,), ``basis`` (P, dims) orthonormal columns in decreasing variance, and ``variances``
        (P,) every direction's variance in decreasing order (for the energy kept).
    """
    total, outer, n = None, None, 0
    for x in token_batches:
        x = np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])
        total = x.sum(axis=0) if total is None else total + x.sum(axis=0)
        outer = x.T @ x if outer is None else outer + x.T @ x
        n += len(x)
    if total is None or n < 2:
        raise ValueError("need at least two tokens")
    if not 0 <= dims <= len(total):
        raise ValueError(f"dims must be in 0..{len(total)}, not {dims}")
    mean = total / n
    cov = outer / n - np.outer(mean, mean)
    variances, vectors = np.linalg.eigh(cov)
    order = np.argsort(variances)[::-1]
    return mean, vectors[:, order[:dims]], np.clip(variances[order], 0.0, None)


def project_tokens(tokens: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Closest points of the affine subspace ``mean + span(basis)`` to ``tokens`` (..., P): the best a
    linear output layer of width ``basis.shape[1]`` can emit for them."""
    x = np.asarray(tokens, dtype=np.float64) - mean
    return (x @ basis) @ basis.T + mean


def _split_arrays(store: str, split: str, mask: str, frames: int | None, patch: tuple[int, int, int],
                  batch_size: int = 4):
    """Yield (tokens (B, L, P) float32, target magnitude (B, S, T, H, W), zero-filled magnitude, grid)."""
    ds = KSpaceDataset(store, split, mask, frames, with_seg=False, with_labels=False)
    for raw in DataLoader(ds, batch_size=batch_size):
        batch = prepare_batch(raw, "cpu")
        k = batch["kspace"]
        if k.ndim != 5:
            raise ValueError("the ceiling is defined for single-coil stores (B, S, T, H, W)")
        grid = TokenGrid(*k.shape[1:], patch)
        yield (patchify(torch.view_as_real(k), grid).numpy(), batch["image"].abs().numpy(),
               zero_filled_image(batch).abs().numpy(), grid)


def reconstruction_ceiling(store: str, dims: Sequence[int], patch: tuple[int, int, int] = (5, 16, 16),
                           frames: int | None = 5, mask: str = "vista_r4", train_split: str = "train",
                           test_split: str = "test") -> pd.DataFrame:
    """PSNR of the true test k-space projected onto the best ``d``-dimensional affine token subspace.

    Args:
        store: a single-coil store (the trainer's contract).
        dims: output-layer widths ``d`` to evaluate.
        patch: token patch (pt, ph, pw) as ``arch.patch``; ``frames`` as ``data.frames``.

    Returns:
        One row per ``d``: ``dims``, ``energy_kept`` (fraction of the training tokens' variance),
        ``psnr`` (dB, mean over test subjects) and ``zero_filled_psnr`` (dB, the same subjects).
    """
    train = (tok for tok, *_ in _split_arrays(store, train_split, mask, frames, patch))
    mean, basis, variances = principal_subspace(train, max(dims))
    tests = list(_split_arrays(store, test_split, mask, frames, patch))
    grid = tests[0][3]
    target = np.concatenate([t[1] for t in tests])
    zero_filled = reconstruction_metrics(np.concatenate([t[2] for t in tests]), target)["psnr"].mean()
    rows = []
    for d in dims:
        images = []
        for tokens, *_ in tests:
            values = torch.from_numpy(project_tokens(tokens, mean, basis[:, :d]).astype(np.float32))
            images.append(ifft2c(torch.view_as_complex(unpatchify(values, grid).contiguous())).abs().numpy())
        psnr = reconstruction_metrics(np.concatenate(images), target)["psnr"].mean()
        rows.append({"dims": d, "energy_kept": float(variances[:d].sum() / variances.sum()), "psnr": float(psnr),
                     "zero_filled_psnr": float(zero_filled)})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store")
    parser.add_argument("--dims", default="16,32,64,128,256,512")
    parser.add_argument("--patch", default="5,16,16")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--mask", default="vista_r4")
    args = parser.parse_args(argv)
    table = reconstruction_ceiling(args.store, [int(d) for d in args.dims.split(",")],
                                   tuple(int(p) for p in args.patch.split(",")), args.frames, args.mask)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
