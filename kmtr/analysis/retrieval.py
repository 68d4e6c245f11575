"""Cross-modal retrieval accuracy of paired embeddings (stage II's validation metric)."""

from __future__ import annotations

import numpy as np

__all__ = ["retrieval_accuracy"]


def retrieval_accuracy(z_a: np.ndarray, z_b: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of finding subject m's ``z_b`` from its ``z_a`` (and back) by cosine similarity.

    Args:
        z_a, z_b: (N, E) embeddings of the same N subjects (row m of each is one subject).
        ks: the k's to report (capped at N).

    Returns:
        ``{"a2b_top1": …, "b2a_top1": …, …}`` fractions in [0, 1]; chance level is k / N.
    """
    a = z_a / np.maximum(np.linalg.norm(z_a, axis=1, keepdims=True), 1e-12)
    b = z_b / np.maximum(np.linalg.norm(z_b, axis=1, keepdims=True), 1e-12)
    sim = a @ b.T
    n = sim.shape[0]
    out: dict[str, float] = {}
    for name, s in (("a2b", sim), ("b2a", sim.T)):
        # rank of the true partner: how many candidates score strictly higher
        rank = (s > np.diag(s)[:, None]).sum(axis=1)
        for k in ks:
            out[f"{name}_top{k}"] = float(np.mean(rank < min(k, n)))
    return out
