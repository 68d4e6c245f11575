"""Masked autoencoders over complex cardiac cine data (after MAE's ``models_mae.py``).

Two models share one skeleton (:class:`MaskedAutoencoder`):

* :class:`ImageMAE` — input the complex image (B, S, T, H, W) as 2 channels; a random
  ``mask_ratio`` of the tokens is hidden from the encoder; loss = MSE on the hidden tokens.
* :class:`KSpaceMAE` — input the *undersampled* k-space ``k · mask`` (acquisition mask, lines
  along W). Tokens whose (pt × pw) block contains no sampled line carry no data and are dropped
  from the encoder input; the decoder predicts every token of the *fully sampled* k-space.
  Loss (over all tokens, all values)::

      L = mean((k̂ − k)²)  +  λ · mean( |k̂ − k|² / (|k| + ε)² )

  The first term is plain MSE on the real/imaginary channels; it is dominated by the bright
  k-space centre. The second, magnitude-aware term is a relative error per complex sample,
  normalised by the *target* magnitude ``|k|`` (a constant weight, so the term is a convex
  weighted MSE that also fits the dim periphery; ``ε`` caps the weight of near-zero samples).
  k-space is normalised per subject by the RMS of its sampled lines (about unit RMS), so
  ``ε = 1`` (default) weights samples dimmer than that RMS like plain MSE and down-weights the
  bright centre by ``1/|k|²``; in short runs on the fixture ``ε = 0.1`` mostly taught the model to output zeros (NMSE ≈ 1), ``ε = 1`` did not.
  ``rel_to="prediction"`` uses ``|k̂|`` instead (the formula as first written in the issue);
  that version flattens to 1 for large ``|k̂|`` and is not the default.
  With ``signed_log`` set, input and target are first mapped by ``sign(x)·log1p(|x|/c)`` per
  channel (see :mod:`kmtr.normalise`) and the loss is computed in that domain.

  **Magnitude channel** (``magnitude_c``, off by default): the real and imaginary parts of a
  sample carry the synthetic B0 phase, which is random per subject, so in a small cohort the
  anatomy (sizes, thicknesses) is a small, non-linear part of them. A third input channel
  ``log1p(|k| / c)`` per sample gives the encoder the phase-free, range-compressed magnitude
  directly (0 where a line is not sampled).

  **Coils.** On a store with C receive coils the input and target are the coil k-space
  (B, C, S, T, H, W): ``2·C`` channels per sample ordered (coil, re/im), plus C log-magnitude
  channels with ``magnitude_c`` (:func:`kmtr.models.tokenizer.complex_channels`); the loss is the
  same per complex sample. C = 1 on (B, S, T, H, W) input is the single-coil model unchanged.

Encoders: patch embedding + positional code over (slice, t, h, w) + view code, a class token,
a pre-norm ViT (``scaled_dot_product_attention``). Kept tokens are packed to the front; when
samples keep different numbers of tokens the rest is padding that no token attends to. With
``distance_bias`` (the tiny preset's image MAE; off in the paper preset) every encoder and
decoder block also adds :class:`kmtr.models.distance_bias.DistanceBias` to its attention logits,
following the packed tokens.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from kmtr.config import MAEConfig
from kmtr.models.distance_bias import DistanceBias
from kmtr.models.tokenizer import (
    PatchEmbed,
    PositionalCode,
    TokenGrid,
    channels_complex,
    complex_channels,
    patchify,
    undersample,
    unpatchify,
)
from kmtr.models.vit import Transformer
from kmtr.normalise import signed_log, signed_log_inverse

__all__ = [
    "MAEConfig", "MaskedAutoencoder", "TokenDecoder", "init_weights", "ImageMAE", "KSpaceMAE", "random_keep", "kspace_token_keep", "count_parameters",
]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def random_keep(batch: int, length: int, mask_ratio: float, device: torch.device | str) -> torch.Tensor:
    """(B, L) bool, True = visible; exactly ``L - int(L · mask_ratio)`` visible tokens per sample (≥ 1)."""
    n_keep = max(1, length - int(length * mask_ratio))
    noise = torch.rand(batch, length, device=device)
    ids = torch.argsort(noise, dim=1)[:, :n_keep]
    keep = torch.zeros(batch, length, dtype=torch.bool, device=device)
    return keep.scatter_(1, ids, True)


def kspace_token_keep(mask: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
    """(B, S, T, W) line mask → (B, L) bool: the token's (pt × pw) block has a sampled line."""
    b = mask.shape[0]
    s, nt, nh, nw = grid.counts
    pt, _, pw = grid.patch
    blocks = mask.reshape(b, s, nt, pt, nw, pw).any(dim=5).any(dim=3)  # (B, S, nt, nw)
    return blocks[:, :, :, None, :].expand(b, s, nt, nh, nw).reshape(b, -1)


class MaskedAutoencoder(nn.Module):
    """Encoder over the visible tokens, light decoder over all tokens (see module docstring)."""

    def __init__(
        self, grid: TokenGrid, view_ids: tuple[int, ...], cfg: MAEConfig, in_dim: int | None = None,
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.grid, self.cfg = grid, cfg
        self.embed = PatchEmbed(in_dim or grid.patch_dim, cfg.width)
        self.pos = PositionalCode(grid, cfg.width, view_ids)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.encoder = Transformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.grad_checkpoint)
        self.distance_bias = DistanceBias(grid, cfg.heads) if cfg.distance_bias else None
        self.decoder: TokenDecoder | None = TokenDecoder(grid, view_ids, cfg, out_dim or grid.patch_dim)
        nn.init.normal_(self.cls_token, std=0.02)
        self.apply(init_weights)

    def drop_decoder(self) -> "MaskedAutoencoder":
        """Remove the decoder (stages II and III use the encoder only); returns self."""
        self.decoder = None
        return self

    def encode(self, tokens: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encode the visible tokens.

        Args:
            tokens: (B, L, P) patch values. keep: (B, L) bool, True = visible.

        Returns:
            latent (B, 1 + Lk, D) — class token first, then the visible tokens in token order
            (Lk = most visible tokens in the batch) — and key_valid (B, 1 + Lk) bool, or None
            when no sample needs padding.
        """
        x, key_valid, order, _ = self._pack(tokens, keep)
        return self.encoder(x, key_valid, bias=self._bias(order, key_valid)), key_valid

    def _bias(self, order: torch.Tensor, key_valid: torch.Tensor | None) -> torch.Tensor | None:
        """The encoder's attention bias for the packed tokens ``order`` (B, Lk), or None when off."""
        if self.distance_bias is None:
            return None
        # no padding and every token packed: every sample keeps every token, in grid order (stages II
        # and III), so the whole grid's bias, computed once, applies
        every_token = key_valid is None and order.shape[1] == self.grid.num_tokens
        return self.distance_bias(None if every_token else order)

    def _pack(
        self, tokens: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Embed, add the code, pack visible tokens first and prepend the class token.

        Returns x (B, 1 + Lk, D), key_valid (or None), order (B, Lk) token index of each packed
        slot, valid (B, Lk) bool (False = padding slot).
        """
        b = tokens.shape[0]
        x = self.embed(tokens) + self.pos()[None].to(tokens.dtype)
        counts = keep.sum(dim=1)
        n_keep = int(counts.max())
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n_keep]
        x = torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[-1]))
        valid = torch.arange(n_keep, device=x.device)[None] < counts[:, None]
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        key_valid = None
        if not bool(valid.all()):
            key_valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), valid], dim=1)
        return x, key_valid, order, valid

    def decode(self, latent: torch.Tensor, key_valid: torch.Tensor | None, keep: torch.Tensor) -> torch.Tensor:
        """latent (B, 1 + Lk, D), keep (B, L) → predicted patch values (B, L, P) for every token."""
        if self.decoder is None:
            raise RuntimeError("this model's decoder was dropped (encoder-only)")
        return self.decoder(latent, keep)

    def encode_features(
        self, tokens: torch.Tensor, keep: torch.Tensor, layers: Sequence[int] = ()
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Encode the visible tokens and lay the results out on the full token grid.

        Args:
            tokens: (B, L, P). keep: (B, L) bool. layers: 1-based encoder blocks whose raw outputs
                are also returned.

        Returns:
            ``cls`` (B, D) class token, ``full`` (B, L, D) final (normed) features in token order
            and ``feats`` — one (B, L, D) tensor per entry of ``layers``; tokens the encoder did
            not see (keep False) are zeros in ``full`` and ``feats``.
        """
        x, key_valid, order, valid = self._pack(tokens, keep)
        out, feats = self.encoder(x, key_valid, return_layers=tuple(layers) or (len(self.encoder.blocks),),
                                  bias=self._bias(order, key_valid))
        if not layers:
            feats = []
        n = keep.shape[1]
        return out[:, 0], _on_grid(out, order, valid, n), [_on_grid(f, order, valid, n) for f in feats]

    def encode_stages(self, tokens: torch.Tensor, keep: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every stage of the encoder (for probes): the embedded tokens, each block's raw output and the
        final (normed) output, each as ``(cls (B, D), full (B, L, D))`` laid out as :meth:`encode_features`
        lays them (tokens the encoder did not see are zeros)."""
        x, key_valid, order, valid = self._pack(tokens, keep)
        out, feats = self.encoder(x, key_valid, return_layers=range(1, len(self.encoder.blocks) + 1),
                                  bias=self._bias(order, key_valid))
        n = keep.shape[1]
        return [(y[:, 0], _on_grid(y, order, valid, n)) for y in (x, *feats, out)]


def _on_grid(y: torch.Tensor, order: torch.Tensor, valid: torch.Tensor, n: int) -> torch.Tensor:
    """Packed encoder output (B, 1 + Lk, D) → its visible tokens on the full token grid (B, n, D), zeros
    elsewhere (``order``, ``valid`` as :meth:`MaskedAutoencoder._pack` returns them)."""
    idx = order[..., None].expand(-1, -1, y.shape[-1])
    return y.new_zeros(y.shape[0], n, y.shape[-1]).scatter(1, idx, y[:, 1:] * valid[..., None].to(y.dtype))


def init_weights(m: nn.Module) -> None:
    """MAE initialisation: Xavier-uniform linear layers with zero bias, unit LayerNorms."""
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class TokenDecoder(nn.Module):
    """MAE decoder: packed encoder output → values (B, L, out_dim) for every token of the grid.

    Visible tokens are embedded to ``dec_width``, hidden ones get a learned mask token, the
    positional code is added and ``dec_depth`` transformer blocks run over all tokens (class token
    first); a linear head maps each token to ``out_dim`` values. Used as the stage-I decoders and,
    freshly initialised, as stage III's reconstruction decoder.
    """

    def __init__(self, grid: TokenGrid, view_ids: tuple[int, ...], cfg: MAEConfig, out_dim: int) -> None:
        super().__init__()
        self.embed = nn.Linear(cfg.width, cfg.dec_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_width))
        self.pos = PositionalCode(grid, cfg.dec_width, view_ids)
        self.blocks = Transformer(cfg.dec_width, cfg.dec_depth, cfg.dec_heads, cfg.mlp_ratio, cfg.grad_checkpoint)
        self.distance_bias = DistanceBias(grid, cfg.dec_heads) if cfg.distance_bias else None
        self.head = nn.Linear(cfg.dec_width, out_dim)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """latent (B, 1 + Lk, D) (class token, then visible tokens in token order), keep (B, L) → (B, L, out_dim)."""
        y = self.embed(latent)
        cls, vis = y[:, :1], y[:, 1:]
        rank = (keep.long().cumsum(dim=1) - 1).clamp_min(0)
        gathered = torch.gather(vis, 1, rank[..., None].expand(-1, -1, vis.shape[-1]))
        full = torch.where(keep[..., None], gathered, self.mask_token.to(gathered.dtype))
        full = full + self.pos()[None].to(full.dtype)
        bias = None if self.distance_bias is None else self.distance_bias()
        out = self.blocks(torch.cat([cls, full], dim=1), bias=bias)
        return self.head(out[:, 1:])


class ImageMAE(MaskedAutoencoder):
    """MAE on images with random token masking: complex images (re, im), or with ``magnitude``
    their magnitude |x| only (UK Biobank ships magnitude images; the smooth B0 phase then does not
    reach the image encoder)."""

    def __init__(
        self, grid: TokenGrid, view_ids: tuple[int, ...], cfg: MAEConfig, mask_ratio: float = 0.7,
        magnitude: bool = False,
    ) -> None:
        dim = grid.patch_dim // 2 if magnitude else grid.patch_dim
        super().__init__(grid, view_ids, cfg, dim, dim)
        self.mask_ratio, self.magnitude = mask_ratio, magnitude

    def tokens(self, image: torch.Tensor) -> torch.Tensor:
        """(B, S, T, H, W) complex → (B, L, P): P = pt·ph·pw·2 (re, im), or pt·ph·pw with ``magnitude``."""
        x = image.abs()[..., None] if self.magnitude else torch.view_as_real(image)
        return patchify(x, self.grid)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """Class token (B, D) of the full (unmasked) image — for later stages."""
        tok = self.tokens(image)
        keep = torch.ones(tok.shape[:2], dtype=torch.bool, device=tok.device)
        return self.encode(tok, keep)[0][:, 0]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image (B, S, T, H, W) complex → {loss, pred (B, L, P), target (B, L, P), keep (B, L)}."""
        target = self.tokens(image)
        keep = random_keep(target.shape[0], target.shape[1], self.mask_ratio, target.device)
        latent, key_valid = self.encode(target, keep)
        pred = self.decode(latent, key_valid, keep)
        err = ((pred.float() - target) ** 2).mean(dim=-1)
        hidden = (~keep).float()
        loss = (err * hidden).sum() / hidden.sum().clamp_min(1.0)
        return {"loss": loss, "pred": pred, "target": target, "keep": keep}

    def reconstruct(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Complex (B, S, T, H, W) images (real with ``magnitude``): target, input (hidden tokens
        zeroed) and output."""
        vis_input = out["target"] * out["keep"][..., None]

        def to_c(t: torch.Tensor) -> torch.Tensor:
            x = unpatchify(t.float(), self.grid)
            return torch.complex(x[..., 0], torch.zeros_like(x[..., 0])) if self.magnitude \
                else torch.view_as_complex(x.contiguous())

        return {"target": to_c(out["target"]), "input": to_c(vis_input), "output": to_c(out["pred"])}


class KSpaceMAE(MaskedAutoencoder):
    """MAE from undersampled to fully sampled k-space (see module docstring for the loss)."""

    def __init__(
        self,
        grid: TokenGrid,
        view_ids: tuple[int, ...],
        cfg: MAEConfig,
        rel_weight: float = 1.0,
        rel_eps: float = 1.0,
        rel_to: str = "target",
        signed_log_c: float | None = None,
        magnitude_c: float | None = None,
        coils: int | None = None,
    ) -> None:
        if coils is not None and coils < 1:
            raise ValueError(f"coils must be >= 1, not {coils}")
        out_dim = grid.patch_dim * (coils or 1)  # 2·C channels (coil, re/im) per sample
        in_dim = out_dim * 3 // 2 if magnitude_c else out_dim
        super().__init__(grid, view_ids, cfg, in_dim, out_dim)
        self.magnitude_c = magnitude_c
        self.coils = coils
        if rel_to not in ("target", "prediction"):
            raise ValueError(f"rel_to must be 'target' or 'prediction', not {rel_to!r}")
        self.rel_weight, self.rel_eps, self.rel_to = rel_weight, rel_eps, rel_to
        self.signed_log_c = signed_log_c

    def _check_coils(self, k: torch.Tensor) -> None:
        """``coils`` None: single-coil (B, S, T, H, W) input; C: coil k-space (B, C, S, T, H, W)."""
        c = k.shape[1] if k.ndim == 6 else None
        if c != self.coils:
            what = "single-coil k-space" if self.coils is None else f"{self.coils}-coil k-space"
            raise ValueError(f"this k-space MAE reads {what}; got shape {tuple(k.shape)}")

    def to_model_domain(self, k: torch.Tensor) -> torch.Tensor:
        """(B, S, T, H, W) complex → (B, S, T, H, W, 2) real, or coil k-space (B, C, S, T, H, W) →
        (B, S, T, H, W, 2C), signed-log mapped if configured."""
        x = complex_channels(k)
        return signed_log(x, self.signed_log_c) if self.signed_log_c else x

    def from_model_domain(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_model_domain` ((B, C, S, T, H, W) for a coil model)."""
        x = x.float()
        x = signed_log_inverse(x, self.signed_log_c) if self.signed_log_c else x
        return channels_complex(x, self.coils)

    def encoder_inputs(self, kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Undersample and tokenise: → tokens (B, L, P) of ``kspace · mask`` and keep (B, L).

        P = pt·ph·pw·2C (C = 1 for single-coil (B, S, T, H, W) input). With ``magnitude_c`` each
        sample gets C more channels ``log1p(|k_c| / c)`` (0 where not sampled): P = pt·ph·pw·3C.
        """
        self._check_coils(kspace)
        under = undersample(kspace, mask)
        x = self.to_model_domain(under)
        if self.magnitude_c:
            mag = under.abs()[..., None] if under.ndim == 5 else under.abs().movedim(1, -1)
            x = torch.cat([x, torch.log1p(mag / self.magnitude_c).to(x.dtype)], dim=-1)
        return patchify(x, self.grid), kspace_token_keep(mask, self.grid)

    def encode_kspace(self, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Class token (B, D) of undersampled k-space — for later stages."""
        tokens, keep = self.encoder_inputs(kspace, mask)
        return self.encode(tokens, keep)[0][:, 0]

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """pred, target (B, L, P) → (total, mse, rel) scalar losses."""
        pred = pred.float()
        diff = pred - target
        mse = (diff**2).mean()
        d2 = (diff**2).unflatten(-1, (-1, 2)).sum(-1)  # |k̂ − k|² per complex sample
        ref = target if self.rel_to == "target" else pred
        mag = ref.unflatten(-1, (-1, 2)).pow(2).sum(-1).sqrt()
        if self.rel_to == "target":
            mag = mag.detach()
        rel = (d2 / (mag + self.rel_eps) ** 2).mean()
        return mse + self.rel_weight * rel, mse, rel

    def forward(self, kspace: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """kspace (B, S, T, H, W) complex fully sampled (normalised), mask (B, S, T, W) bool
        → {loss, mse, rel, pred (B, L, P), target (B, L, P), keep (B, L)}."""
        tokens, keep = self.encoder_inputs(kspace, mask)
        target = patchify(self.to_model_domain(kspace), self.grid)
        latent, key_valid = self.encode(tokens, keep)
        pred = self.decode(latent, key_valid, keep)
        loss, mse, rel = self.loss(pred, target)
        return {"loss": loss, "mse": mse, "rel": rel, "pred": pred, "target": target, "keep": keep, "input": tokens}

    def reconstruct(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Complex (B, S, T, H, W) k-space ((B, C, S, T, H, W) for coils): target (full), input
        (undersampled) and output."""
        to_k = lambda t: self.from_model_domain(unpatchify(t, self.grid))  # noqa: E731
        inputs = out["input"]
        if self.magnitude_c:  # drop the log-magnitude channels: (pt·ph·pw·3C) → (pt·ph·pw·2C)
            c = self.coils or 1
            inputs = inputs.unflatten(-1, (-1, 3 * c))[..., : 2 * c].flatten(-2)
        return {"target": to_k(out["target"]), "input": to_k(inputs), "output": to_k(out["pred"])}
