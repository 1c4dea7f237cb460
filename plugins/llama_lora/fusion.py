"""The model's scores fused with the retriever's rank, and ``retriever_weight=auto``'s choice of weight.

A decoder that scores candidates (``score``, ``verbalizer``) ranks them by ``model score +
weight * -log(1 + retriever rank)``: rank-based, so the two score scales need no calibration.
``auto`` chooses the weight on validation items, keeping the retriever's order unless a weight
beats it by a paired test (:func:`choose_retriever_weight`). No torch here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from palr_core import RankRequest, complete_ranking, rank_from_lists

__all__ = ["fuse_with_retriever", "order_by_scores", "fused_order", "choose_retriever_weight"]

log = logging.getLogger("palr")


def fuse_with_retriever(scores: Sequence[float], weight: float) -> list[float]:
    """Add ``weight * -log(1 + rank)`` of each candidate's retriever rank (candidates arrive best first).

    ``weight=0`` ranks by the model alone; a large weight keeps the retriever's order and lets the
    model break near-ties. Rank-based, so it needs no calibration between the two score scales.
    """
    return [s - weight * math.log1p(rank) for rank, s in enumerate(scores)]


def order_by_scores(candidates: Sequence[int], scores: Sequence[float], retriever_weight: float = 0.0) -> list[int]:
    """``candidates`` (best first by the retriever) ordered by their model ``scores`` fused with
    their retriever rank (:func:`fuse_with_retriever`)."""
    fused = fuse_with_retriever(scores, retriever_weight)
    return [int(candidates[k]) for k in sorted(range(len(candidates)), key=lambda k: -fused[k])]


def fused_order(request: RankRequest, scores: Sequence[float], weight: float) -> list[int]:
    """The request's first ``len(scores)`` candidates (those the model scored) by fused score, then
    the rest in the retriever's order."""
    scored = request.candidates[:len(scores)]
    return order_by_scores(scored, scores, weight) + [int(c) for c in request.candidates[len(scores):]]


def choose_retriever_weight(requests: Sequence[RankRequest], targets: np.ndarray, scores: list[list[float]],
                            grid: Sequence[float], alpha: float) -> tuple[float, dict]:
    """The fusion weight ``auto`` ranks with, and the report of how it was chosen.

    Keeps the retriever's order (``inf``) unless a weight of ``grid`` beats it on ``requests``
    (whose true next items are ``targets``; the model's ``scores`` of them) by a one-sided paired
    t-test on per-user NDCG@10 at ``alpha`` divided by the grid's size (Bonferroni); the best mean
    among such weights wins. ``alpha >= 1``: no test, the best mean that beats the retriever's
    order. The report holds what was chosen and every weight's mean NDCG@10 and p-value.
    """
    from scipy import stats

    from palr_core.metrics import per_user

    def ndcg(ranked: list[list[int]]) -> np.ndarray:
        return per_user(rank_from_lists(ranked, targets), "NDCG@10")

    retriever = ndcg([complete_ranking(list(r.candidates), r.candidates) for r in requests])
    by_weight = {float(w): ndcg([complete_ranking(fused_order(r, s, float(w)), r.candidates)
                                 for r, s in zip(requests, scores)]) for w in sorted(set(grid))}
    level = alpha / len(by_weight)
    p_values = {}
    for weight, values in by_weight.items():
        gain = values - retriever
        if gain.mean() <= 0:
            p_values[weight] = 1.0
        elif np.ptp(gain) == 0:  # the same gain for every user: t is undefined, the gain certain
            p_values[weight] = 0.0
        else:
            p_values[weight] = float(stats.ttest_rel(values, retriever, alternative="greater").pvalue)
    winners = [w for w in by_weight if by_weight[w].mean() > retriever.mean() and (alpha >= 1 or p_values[w] < level)]
    best = max(winners, key=lambda w: (by_weight[w].mean(), w), default=None)  # a tie goes to the retriever's side
    if best is None:
        log.info("llama_lora: retriever_weight=auto kept the retriever's order (validation NDCG@10 %.4f on %d "
                 "users; no weight beat it at p < %.3g): ranking returns it without running the model",
                 retriever.mean(), len(requests), level)
    else:
        log.info("llama_lora: retriever_weight=auto chose %g (validation NDCG@10 %.4f against the retriever's "
                 "%.4f on %d users, one-sided paired t p = %.3g < %.3g)", best, by_weight[best].mean(),
                 retriever.mean(), len(requests), p_values[best], level)
    report = {"retriever_weight": "retriever order" if best is None else best, "users": len(requests),
              "retriever order NDCG@10": round(float(retriever.mean()), 6),
              "NDCG@10 by retriever_weight": {f"{w:g}": round(float(v.mean()), 6) for w, v in by_weight.items()},
              "p (one-sided paired t) by retriever_weight": {f"{w:g}": float(f"{p:.4g}") for w, p in p_values.items()},
              "significance level": level}
    return (math.inf if best is None else best), report
