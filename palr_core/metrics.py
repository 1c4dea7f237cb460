"""Full-catalogue HR@K and NDCG@K for one held-out item per user (plain numpy).

A rank is the 0-based position of the target in a user's ranking of the whole catalogue (history
excluded); a target that a ranking does not contain has rank ``inf``. :func:`rank_from_lists` gets
ranks from ordered item lists; models that score the whole catalogue use
:func:`palr_core.kit.retrievers.rank_from_scores` (torch), which counts ties against the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_KS", "rank_from_lists", "per_user", "metrics_from_ranks", "complete_ranking"]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)


def rank_from_lists(ranked: Sequence[Sequence[int]], targets: Sequence[int]) -> np.ndarray:
    """0-based position of each target in its ordered list; ``inf`` when the list lacks it."""
    ranks = np.full(len(targets), np.inf)
    for row, (items, target) in enumerate(zip(ranked, targets)):
        hits = np.flatnonzero(np.asarray(items) == int(target))
        if len(hits):
            ranks[row] = hits[0]
    return ranks


def per_user(ranks, metric: str) -> np.ndarray:
    """Each user's ``HR@K`` (0/1) or ``NDCG@K`` (``metric``, e.g. ``"NDCG@10"``) from 0-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    kind, k = metric.split("@")
    hit = ranks < int(k)
    if kind == "HR":
        return hit.astype(np.float64)
    gain = np.zeros_like(ranks)
    gain[hit] = 1.0 / np.log2(ranks[hit] + 2.0)
    return gain


def metrics_from_ranks(ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@K and NDCG@K over users (:func:`per_user` averaged), keyed ``"HR@10"``, ``"NDCG@10"``...

    :param ranks: one rank per user (a numpy array, a list, or a CPU tensor).
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    return {f"{kind}@{k}": float(per_user(ranks, f"{kind}@{k}").mean()) for k in ks for kind in ("HR", "NDCG")}


def complete_ranking(ranked: Sequence[int], candidates: Sequence[int]) -> list[int]:
    """The ranker's order, restricted to candidates without repeats, then the rest in retriever order."""
    allowed = set(int(c) for c in candidates)
    seen: set[int] = set()
    out = []
    for item in list(ranked) + list(candidates):
        item = int(item)
        if item in allowed and item not in seen:
            seen.add(item)
            out.append(item)
    return out
