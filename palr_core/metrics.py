"""Full-catalogue metrics for one held-out item per user (plain numpy).

Per user (averaged over users): ``HR@K`` (the target in the top K), ``NDCG@K`` (``1/log2(rank+2)``
inside the top K) and ``MRR@K`` (``1/(rank+1)`` inside the top K, else 0). Over the set of ranked
lists (not per user): ``Coverage@K``, the share of the catalogue that appears in at least one
user's top K, and ``AvgPop@K``, the mean popularity of the top-K items, where an item's popularity
is its training-interaction count divided by the most interacted item's count (1.0: every list is
the single most popular item; a list of never-trained-on items scores 0).

A rank is the 0-based position of the target in a user's ranking of the whole catalogue (history
excluded); a target that a ranking does not contain has rank ``inf``. :func:`rank_from_lists` gets
ranks from ordered item lists; models that score the whole catalogue use
:func:`palr_core.kit.retrievers.rank_from_scores` (torch), which counts ties against the target.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DEFAULT_KS", "PER_USER", "rank_from_lists", "per_user", "metrics_from_ranks", "list_metrics",
           "catalogue_coverage", "average_popularity", "item_popularity", "complete_ranking"]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)
#: the metrics :func:`per_user` computes: each user has a value, so two rows compare user by user
PER_USER: tuple[str, ...] = ("HR", "NDCG", "MRR")


def rank_from_lists(ranked: Sequence[Sequence[int]], targets: Sequence[int]) -> np.ndarray:
    """0-based position of each target in its ordered list; ``inf`` when the list lacks it."""
    ranks = np.full(len(targets), np.inf)
    for row, (items, target) in enumerate(zip(ranked, targets)):
        hits = np.flatnonzero(np.asarray(items) == int(target))
        if len(hits):
            ranks[row] = hits[0]
    return ranks


def per_user(ranks, metric: str) -> np.ndarray:
    """Each user's ``HR@K`` (0/1), ``NDCG@K`` or ``MRR@K`` (``metric``, e.g. ``"NDCG@10"``) from 0-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    kind, k = metric.split("@")
    if kind not in PER_USER:
        raise ValueError(f"per-user metric must be one of {', '.join(PER_USER)} with @K, got {metric!r}")
    hit = ranks < int(k)
    if kind == "HR":
        return hit.astype(np.float64)
    gain = np.zeros_like(ranks)
    gain[hit] = 1.0 / (np.log2(ranks[hit] + 2.0) if kind == "NDCG" else ranks[hit] + 1.0)
    return gain


def metrics_from_ranks(ranks, ks: Sequence[int] = DEFAULT_KS,
                       kinds: Sequence[str] = ("HR", "NDCG")) -> dict[str, float]:
    """Mean per-user metrics (:func:`per_user` averaged), keyed ``"HR@10"``, ``"NDCG@10"``...: for
    each K of ``ks`` each kind of ``kinds`` (``HR``, ``NDCG``, ``MRR``).

    :param ranks: one rank per user (a numpy array, a list, or a CPU tensor).
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    return {f"{kind}@{k}": float(per_user(ranks, f"{kind}@{k}").mean()) for k in ks for kind in kinds}


def item_popularity(train: Sequence[Sequence[int]], num_items: int) -> np.ndarray:
    """Each item's training-interaction count (how many training sequences' entries it is)."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in train]) if len(train) else np.zeros(0, np.int64)
    return np.bincount(flat, minlength=num_items).astype(np.float64)


def catalogue_coverage(ranked: Sequence[Sequence[int]], k: int, num_items: int) -> float:
    """The share of the ``num_items`` items that appear in at least one list's top ``k``."""
    seen = {int(i) for items in ranked for i in list(items)[:k]}
    return len(seen) / num_items if num_items else 0.0


def average_popularity(ranked: Sequence[Sequence[int]], k: int, counts: np.ndarray) -> float:
    """Mean popularity of the items in every list's top ``k`` (all lists' items pooled), an item's
    popularity being its count in ``counts`` over the largest count (so in ``[0, 1]``)."""
    top = np.concatenate([np.asarray(list(items)[:k], dtype=np.int64) for items in ranked]) if len(ranked) else []
    most = float(np.max(counts)) if len(counts) else 0.0
    if len(top) == 0 or most == 0.0:
        return 0.0
    return float(np.mean(np.asarray(counts, dtype=np.float64)[top]) / most)


def list_metrics(ranked: Sequence[Sequence[int]], targets: Sequence[int], ks: Sequence[int],
                 counts: np.ndarray) -> dict[str, float]:
    """A results row's metrics for ordered lists: ``HR@K`` and ``NDCG@K`` (in
    :func:`metrics_from_ranks`' order), then ``MRR@K``, ``Coverage@K`` and ``AvgPop@K`` for each K.

    :param counts: each item's training-interaction count (:func:`item_popularity`); its length
        is the catalogue size that coverage is a share of.
    """
    ranks = rank_from_lists(ranked, targets)
    return {**metrics_from_ranks(ranks, ks), **metrics_from_ranks(ranks, ks, ("MRR",)),
            **{f"Coverage@{k}": catalogue_coverage(ranked, k, len(counts)) for k in ks},
            **{f"AvgPop@{k}": average_popularity(ranked, k, counts) for k in ks}}


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
