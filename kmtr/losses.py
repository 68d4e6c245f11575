"""Training objectives of stages II and III (pure functions of tensors).

* :func:`contrastive_loss` — the paper's symmetric image ↔ k-space loss (REFERENCES.md)::

      L = λ · ℓ_{i,k} + (1 − λ) · ℓ_{k,i}
      ℓ_{i,k} = −Σ_m log( exp(cos(z_i^m, z_k^m)/τ) / Σ_{n≠m} exp(cos(z_i^m, z_k^n)/τ) )

  Note the denominator runs over the *other* subjects of the batch only (n ≠ m), as written in
  the paper; ℓ_{k,i} swaps the roles of the two embeddings. ``reduction="mean"`` (default) divides
  the sums over m by the batch size M so that the loss scale does not depend on M.
* :func:`masked_mse` — regression on standardised targets with missing values left out.
* :func:`masked_bce` — one logit per label, unknown labels (−1) left out, positive-class weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_matrix", "contrastive_loss", "masked_mse", "masked_bce"]


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(M, E), (M, E) → (M, M) with entry [m, n] = cos(a_m, b_n)."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def _one_direction(sim: torch.Tensor, tau: float) -> torch.Tensor:
    """−log(exp(s_mm/τ) / Σ_{n≠m} exp(s_mn/τ)) per row m → (M,)."""
    logits = sim / tau
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    others = torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)
    return others - logits.diagonal()


def contrastive_loss(
    z_image: torch.Tensor, z_kspace: torch.Tensor, tau: float = 0.1, lam: float = 0.5, reduction: str = "mean"
) -> torch.Tensor:
    """The symmetric contrastive loss above.

    Args:
        z_image, z_kspace: (M, E) projected embeddings of the same M subjects (M ≥ 2).
        tau: temperature. lam: weight λ of the image → k-space term.
        reduction: 'mean' (sums over m divided by M) or 'sum' (the formula as written).

    Raises:
        ValueError: fewer than two subjects (the denominator would be empty).
    """
    if z_image.shape != z_kspace.shape or z_image.ndim != 2:
        raise ValueError(f"expected two (M, E) tensors of one shape, got {tuple(z_image.shape)}, {tuple(z_kspace.shape)}")
    if z_image.shape[0] < 2:
        raise ValueError("the contrastive loss needs at least 2 subjects per batch")
    sim = cosine_matrix(z_image, z_kspace)
    l_ik = _one_direction(sim, tau)
    l_ki = _one_direction(sim.T, tau)
    total = lam * l_ik + (1.0 - lam) * l_ki
    if reduction == "sum":
        return total.sum()
    if reduction == "mean":
        return total.mean()
    raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of ``(pred − target)²`` over the entries where ``target`` is finite ((B, P) each).

    Entries with a NaN target contribute nothing (and no gradient); a batch with no finite
    target returns 0 (with a gradient path, so every rank still calls backward).
    """
    valid = torch.isfinite(target)
    diff = torch.where(valid, pred.float() - torch.nan_to_num(target.float()), torch.zeros_like(pred, dtype=torch.float32))
    return (diff**2).sum() / valid.sum().clamp_min(1)


def masked_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits over known labels.

    Args:
        logits: (B, D). labels: (B, D) int, 1 / 0 / −1 (unknown, left out).
        pos_weight: (D,) weight of positive cases (e.g. n_negative / n_positive of the training split).
    """
    valid = labels >= 0
    target = labels.clamp_min(0).to(torch.float32)
    per = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight, reduction="none")
    return (per * valid).sum() / valid.sum().clamp_min(1)
