"""Stage II/III objectives against direct implementations of their formulas, and retrieval."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kmtr.analysis.retrieval import retrieval_accuracy
from kmtr.losses import contrastive_loss, masked_bce, masked_mse


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm() * b.norm()))


def _direct(zi: torch.Tensor, zk: torch.Tensor, tau: float, lam: float) -> float:
    """L = λ ℓ_ik + (1 − λ) ℓ_ki with ℓ_ik = −Σ_m log(exp(cos(zi_m, zk_m)/τ) / Σ_{n≠m} exp(cos(zi_m, zk_n)/τ))."""
    m_count = zi.shape[0]

    def ell(a: torch.Tensor, b: torch.Tensor) -> float:
        total = 0.0
        for m in range(m_count):
            num = math.exp(_cos(a[m], b[m]) / tau)
            den = sum(math.exp(_cos(a[m], b[n]) / tau) for n in range(m_count) if n != m)
            total += -math.log(num / den)
        return total

    return lam * ell(zi, zk) + (1 - lam) * ell(zk, zi)


@pytest.mark.parametrize("tau,lam,m", [(0.1, 0.5, 5), (0.5, 0.3, 2), (0.07, 0.9, 8)])
def test_contrastive_loss_matches_the_formula(tau, lam, m):
    g = torch.Generator().manual_seed(m)
    zi, zk = torch.randn(m, 16, generator=g, dtype=torch.float64), torch.randn(m, 16, generator=g, dtype=torch.float64)
    expected = _direct(zi, zk, tau, lam)
    assert float(contrastive_loss(zi, zk, tau, lam, reduction="sum")) == pytest.approx(expected, rel=1e-5)
    assert float(contrastive_loss(zi, zk, tau, lam)) == pytest.approx(expected / m, rel=1e-5)


def test_contrastive_loss_prefers_aligned_pairs_and_is_asymmetric_in_lambda():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 8, generator=g)
    aligned = contrastive_loss(z, z + 0.01 * torch.randn(6, 8, generator=g))
    shuffled = contrastive_loss(z, z[torch.tensor([1, 2, 3, 4, 5, 0])])
    assert float(aligned) < float(shuffled)
    a, b = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    assert float(contrastive_loss(a, b, lam=1.0)) != pytest.approx(float(contrastive_loss(a, b, lam=0.0)))
    assert float(contrastive_loss(a, b, lam=1.0)) == pytest.approx(float(contrastive_loss(b, a, lam=0.0)), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        contrastive_loss(a[:1], b[:1])


def test_masked_mse_ignores_missing_targets():
    pred = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[2.0, float("nan"), 3.0], [float("nan"), float("nan"), 2.0]])
    loss = masked_mse(pred, target)
    assert float(loss.detach()) == pytest.approx((1.0 + 0.0 + 4.0) / 3)
    loss.backward()
    assert pred.grad[0, 1] == 0 and pred.grad[1, 0] == 0 and pred.grad[1, 2] != 0
    assert float(masked_mse(pred, torch.full((2, 3), float("nan"))).detach()) == 0.0


def test_masked_bce_ignores_unknown_and_weights_positives():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    labels = torch.tensor([[1, -1], [0, 1]])
    per = [math.log(2.0), math.log1p(math.e), math.log1p(math.e)]  # -log σ(0), -log(1-σ(1)), -log σ(-1)
    assert float(masked_bce(logits, labels)) == pytest.approx(sum(per) / 3, rel=1e-6)
    weighted = masked_bce(logits, labels, torch.tensor([3.0, 2.0]))
    assert float(weighted) == pytest.approx((3 * per[0] + per[1] + 2 * per[2]) / 3, rel=1e-6)


def test_retrieval_accuracy_known_answers():
    z = np.eye(6)
    assert retrieval_accuracy(z, z) == {"a2b_top1": 1.0, "a2b_top5": 1.0, "b2a_top1": 1.0, "b2a_top5": 1.0}
    rolled = np.roll(z, 1, axis=0)  # every partner is someone else
    acc = retrieval_accuracy(z, rolled, ks=(1,))
    assert acc["a2b_top1"] == 0.0 and acc["b2a_top1"] == 0.0
