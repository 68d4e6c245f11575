"""Reconstruction of the complex image (B, S, T, H, W) from undersampled k-space: a transformer
decoder like the stage-I k-space decoder (REFERENCES.md: "reconstruction decoder like the stage-I
k-space decoder, trained from scratch") predicts the fully sampled k-space patch of every token,
and the image is its centred inverse FFT; loss = MSE on real and imaginary parts of the
per-subject normalised image (equal to the k-space MSE: the FFT is orthonormal); PSNR / SSIM
beside the zero-filled input's, and of the same prediction with the acquired k-space samples put
back (:func:`kmtr.data.data_consistent_image`, hard data consistency: no parameters, nothing read
but the undersampled k-space), a separate row: the trained decoder is not changed by it."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import torch

from kmtr.analysis import figures, metrics
from kmtr.analysis.comparison import VARIANT_SEP, TaskComparison, frames, paired_rows
from kmtr.analysis.predictions import Predictions
from kmtr.analysis.stats import bootstrap_ci, wilcoxon_paired
from kmtr.analysis.summaries import pm
from kmtr.data import data_consistent_image, zero_filled_image
from kmtr.errors import ConfigError
from kmtr.fft import ifft2c
from kmtr.models.mae import TokenDecoder
from kmtr.models.tokenizer import unpatchify
from kmtr.tasks.base import EvalContext, Task, TruthSink

__all__ = ["DATA_CONSISTENT", "Reconstruction", "compare_reconstruction", "decoder_width"]

#: the prediction variant with the acquired k-space samples put back
DATA_CONSISTENT = "data_consistent"


class Reconstruction(Task):
    name = "reconstruction"
    metric = "PSNR (dB)"

    def targets(self, cfg: Any, train_ds: Any) -> dict[str, Any]:
        decoder_width(cfg.heads.rec_width, cfg.arch.dec_width, cfg.arch.dec_heads)  # a bad width stops here
        return {"out_dim": 0, "names": []}

    def build_head(self, net: Any, encoder: Any, in_dim: int, out_dim: int, heads: Any) -> torch.nn.Module:
        view_ids = tuple(int(v) for v in encoder.pos.view_ids.tolist())
        width = decoder_width(heads.rec_width, encoder.cfg.dec_width, encoder.cfg.dec_heads)
        return TokenDecoder(encoder.grid, view_ids, dataclasses.replace(encoder.cfg, dec_width=width),
                            encoder.grid.patch_dim)

    def run_head(self, net: Any, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        enc = net.encoder
        tokens, keep = enc.encoder_inputs(kspace, mask)
        latent, _ = enc.encode(tokens, keep)
        values = net.head(latent, keep)  # (B, L, P): fully sampled k-space patches (re, im)
        return ifft2c(torch.view_as_complex(unpatchify(values.float(), enc.grid).contiguous()))

    def loss(self, model: Any, out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        err = torch.view_as_real(out - batch["image"].to(out.dtype))
        return err.pow(2).mean()

    def prediction_array(self, pred: torch.Tensor) -> np.ndarray:
        return pred.abs().float().cpu().numpy()

    def collect_truth(self, batch: dict[str, torch.Tensor], raw: dict[str, Any], ds: Any, model: Any,
                      keep: TruthSink) -> None:
        keep("image", batch["image"].abs())
        keep("zero_filled", zero_filled_image(batch).abs())  # SENSE-1 of the zero-filled coil k-space for coils

    def prediction_variants(self, batch: dict[str, torch.Tensor], pred: torch.Tensor) -> dict[str, torch.Tensor]:
        return {DATA_CONSISTENT: data_consistent_image(pred, batch)}

    def compare(self, preds: dict[str, Predictions], targets: dict[str, Any], n_boot: int, seed: int
                ) -> TaskComparison:
        return compare_reconstruction(preds, n_boot, seed)

    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        test = ctx.test
        image = test.truth["image"]
        dc = test.variants.get(DATA_CONSISTENT)
        compared = {"reconstruction": (None, test.pred),
                    "reconstruction + acquired samples (data consistency)": (DATA_CONSISTENT, dc),
                    "zero-filled": ("zero_filled", test.truth["zero_filled"])}
        rows = {name: metrics.reconstruction_metrics(x, image) for name, (_, x) in compared.items() if x is not None}
        df = rows["reconstruction"]
        for name, (prefix, _) in compared.items():
            if prefix is not None and name in rows:
                df = df.assign(**{f"{prefix}_{col}": rows[name][col].to_numpy() for col in ("psnr", "ssim")})
        k = min(4, len(test.rows))
        s_mid = 0
        figures.reconstruction_grid(image[:k, s_mid, 0], test.truth["zero_filled"][:k, s_mid, 0],
                                    test.pred[:k, s_mid, 0], [f"subject {i}, slice {s_mid}" for i in range(k)],
                                    ctx.out / f"{ctx.tag}_recon.png",
                                    data_consistent=None if dc is None else dc[:k, s_mid, 0])
        summary = pd.DataFrame({
            "input": list(rows),
            "PSNR (dB) ± SD": [pm(m["psnr"].mean(), m["psnr"].std(), digits=2) for m in rows.values()],
            "SSIM ± SD": [pm(m["ssim"].mean(), m["ssim"].std()) for m in rows.values()],
        })
        zero_filled = rows["zero-filled"]["psnr"].to_numpy()
        paired = []
        for name, m in rows.items():
            if name != "zero-filled":
                r = wilcoxon_paired(m["psnr"].to_numpy(), zero_filled, n_boot=ctx.n_boot, seed=ctx.seed)
                paired.append({"input": name, "PSNR − zero-filled (dB)": f"{r.diff:.2f} [{r.lo:.2f}, {r.hi:.2f}]",
                               "subjects above zero-filled": f"{int((m['psnr'].to_numpy() > zero_filled).sum())} "
                                                             f"of {len(zero_filled)}",
                               "p (Wilcoxon)": r.p_value})
        heading = ("PSNR = 10·log10(max(target)² / MSE) over each subject's magnitude images (all views, "
                   "kept frames), the same per-subject normalisation for every row; paired over subjects")
        return {"tables": {"reconstruction": df}, "summary": summary, "sections": [(heading, pd.DataFrame(paired))]}


def decoder_width(rec_width: int, dec_width: int, dec_heads: int) -> int:
    """The reconstruction decoder's width: ``heads.rec_width``, or the stage-I decoders' ``arch.dec_width``
    when it is 0; ``ConfigError`` unless it is ≥ 1 and divisible by ``arch.dec_heads``."""
    width = int(rec_width) or int(dec_width)
    if int(rec_width) < 0 or width % int(dec_heads):
        raise ConfigError(f"heads.rec_width = {rec_width}: the reconstruction decoder's width must be 0 (= arch.dec_width "
                          f"{dec_width}) or a positive multiple of arch.dec_heads = {dec_heads}")
    return width


def compare_reconstruction(preds: dict[str, Predictions], n_boot: int = 1000, seed: int = 0) -> TaskComparison:
    """PSNR (dB) per method, each method's prediction with the acquired samples put back where it has
    that variant (column ``<method>:data_consistent``), and the zero-filled input (``zero_filled``)."""
    first = next(iter(preds.values()))
    psnr = {}
    for m, p in preds.items():
        psnr[m] = metrics.reconstruction_metrics(p.pred, p.truth["image"])["psnr"].to_numpy()
        if DATA_CONSISTENT in p.variants:
            psnr[f"{m}{VARIANT_SEP}{DATA_CONSISTENT}"] = metrics.reconstruction_metrics(
                p.variants[DATA_CONSISTENT], p.truth["image"])["psnr"].to_numpy()
    psnr["zero_filled"] = metrics.reconstruction_metrics(first.truth["zero_filled"],
                                                         first.truth["image"])["psnr"].to_numpy()
    cells = {(0, m): bootstrap_ci(np.mean, x, n_boot=n_boot, seed=seed) for m, x in psnr.items()}
    v, lo, hi = frames(["PSNR (dB)"], list(psnr), cells)
    paired = paired_rows(["PSNR (dB)"], list(psnr), lambda j, m: wilcoxon_paired(psnr["kmtr"], psnr[m],
                                                                                 n_boot=n_boot, seed=seed))
    return TaskComparison("reconstruction", "PSNR", True, v, lo, hi, paired)
