"""Seeded, stratified, order-independent train / validation / test splits.

Each subject gets a uniform key from ``derive_seed(seed, subject_id, "split")``; within each stratum
subjects are ranked by that key, so the split depends only on the seed and the set of (id, stratum)
pairs, never on row order. The fixed-size test set (the paper holds out 1,000 subjects) and the
validation set are shared out between strata by the largest-remainder method.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kspace_sim.seeding import derive_seed
from kspace_sim.store.layout import SPLIT_CODES

__all__ = ["TRAIN", "VALIDATION", "TEST", "stratified_split", "disease_strata", "store_strata", "default_test_size"]

TRAIN, VALIDATION, TEST = 0, 1, 2
PAPER_TEST_SIZE = 1000


def default_test_size(n: int) -> int:
    """The paper's 1,000 held-out subjects when the store has at least 10,000, else 10 % of ``n``."""
    return PAPER_TEST_SIZE if n >= 10 * PAPER_TEST_SIZE else max(int(round(0.1 * n)), 1 if n >= 3 else 0)


def _as_count(size: float, n: int, what: str) -> int:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        count = int(size)
    elif 0 <= float(size) < 1:
        count = int(round(float(size) * n))
    else:
        raise ValueError(f"{what} must be a count or a fraction in [0, 1), got {size!r}")
    if count < 0 or count > n:
        raise ValueError(f"{what} = {count} subjects, but there are only {n}")
    return count


def _allocate(total: int, sizes: dict[Hashable, int]) -> dict[Hashable, int]:
    """Share ``total`` between strata in proportion to ``sizes`` (largest remainder, ties by key)."""
    n = sum(sizes.values())
    if n == 0 or total == 0:
        return {k: 0 for k in sizes}
    exact = {k: total * v / n for k, v in sizes.items()}
    out = {k: int(np.floor(x)) for k, x in exact.items()}
    rest = total - sum(out.values())
    order = sorted(sizes, key=lambda k: (-(exact[k] - out[k]), -sizes[k], str(k)))
    for k in order[:rest]:
        out[k] += 1
    return out


def stratified_split(
    subject_ids: Sequence[str],
    seed: int,
    test_size: float = PAPER_TEST_SIZE,
    val_fraction: float = 0.1,
    strata: Sequence[Hashable] | None = None,
) -> np.ndarray:
    """Split codes (0 train, 1 validation, 2 test), aligned with ``subject_ids``.

    Args:
        subject_ids: distinct subject ids (any order: the result follows it, the assignment does not).
        seed: the split seed.
        test_size: held-out test subjects: a count (e.g. 1000) or a fraction in [0, 1).
        val_fraction: validation subjects as a fraction of all subjects.
        strata: one label per subject (e.g. from :func:`disease_strata`); test and validation are
            shared out between strata in proportion to their sizes. ``None``: one stratum.

    Returns:
        ``(N,)`` int8 codes.

    Raises:
        ValueError: duplicate ids, a misaligned ``strata``, or sizes that do not fit.
    """
    ids = [str(s) for s in subject_ids]
    n = len(ids)
    if len(set(ids)) != n:
        raise ValueError("subject ids must be distinct")
    labels: list[Hashable] = ["all"] * n if strata is None else list(strata)
    if len(labels) != n:
        raise ValueError(f"strata has {len(labels)} entries for {n} subjects")
    n_test = _as_count(test_size, n, "test_size")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * n))
    if n_test + n_val > n:
        raise ValueError(f"test ({n_test}) + validation ({n_val}) subjects exceed the {n} subjects")
    groups: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    sizes = {k: len(v) for k, v in groups.items()}
    test_alloc = _allocate(n_test, sizes)
    val_alloc = _allocate(n_val, {k: sizes[k] - test_alloc[k] for k in sizes})
    codes = np.full(n, TRAIN, dtype=np.int8)
    for lab, rows in groups.items():
        ranked = sorted(rows, key=lambda i: (derive_seed(seed, ids[i], "split"), ids[i]))
        k_test, k_val = test_alloc[lab], val_alloc[lab]
        codes[ranked[:k_test]] = TEST
        codes[ranked[k_test : k_test + k_val]] = VALIDATION
    return codes


def disease_strata(diseases: np.ndarray, columns: Sequence[str] | None = None) -> list[str]:
    """One stratum label per subject from ``labels/diseases`` ((N, D) int8: 1, 0, −1 unknown).

    A subject's stratum is its rarest positive disease (rarity over the cohort), ``"none"`` when every
    known flag is 0, and ``"unknown"`` when every flag is −1, so that rare diseases are spread over
    the splits in proportion even when subjects carry several labels.
    """
    d = np.asarray(diseases)
    if d.ndim != 2:
        raise ValueError(f"diseases must be (N, D), got shape {d.shape}")
    names = list(columns) if columns is not None else [f"d{j}" for j in range(d.shape[1])]
    positives = (d == 1).sum(axis=0)
    rarity = sorted(range(d.shape[1]), key=lambda j: (positives[j], j))
    out: list[str] = []
    for row in d:
        pos = [j for j in rarity if row[j] == 1]
        if pos:
            out.append(names[pos[0]])
        elif (row == -1).all() and row.size:
            out.append("unknown")
        else:
            out.append("none")
    return out


def store_strata(group: Any) -> list[str] | None:
    """Disease strata of an opened store, or ``None`` when it has no ``labels/diseases``."""
    if "labels" not in group or "diseases" not in group["labels"]:
        return None
    arr = group["labels/diseases"]
    return disease_strata(np.asarray(arr[:]), arr.attrs.get("columns"))


SPLIT_NAMES = {code: name for name, code in SPLIT_CODES.items()}


@dataclass
class SplitOptions:
    """How :func:`assign_splits` splits a store (see :func:`stratified_split`)."""

    seed: int = 0
    test_size: float | None = None  # None: the paper's 1000 for stores >= 10,000 subjects, else 10 %
    val_fraction: float = 0.1
    stratify: bool = True


def assign_splits(group: Any, opts: SplitOptions) -> dict[str, int]:
    """Write ``subjects/split`` of an open store group with :func:`stratified_split` (stratified by
    disease when the store has ``labels/diseases``) and record the method in the ``split`` attribute.

    Returns:
        Subjects per split name.
    """
    ids = [str(x) for x in group["subjects/id"][:]]
    strata = store_strata(group) if opts.stratify else None
    test_size = default_test_size(len(ids)) if opts.test_size is None else opts.test_size
    codes = stratified_split(ids, opts.seed, test_size, opts.val_fraction, strata)
    group["subjects/split"][...] = codes
    group.attrs["split"] = {
        "method": "stratified_split",
        "seed": opts.seed,
        "test_size": test_size,
        "val_fraction": opts.val_fraction,
        "stratified_by": "labels/diseases (rarest positive disease)" if strata is not None else None,
    }
    return {name: int((codes == code).sum()) for code, name in SPLIT_NAMES.items()}
