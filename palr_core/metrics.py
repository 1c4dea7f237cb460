"""Full-catalogue HR@K and NDCG@K for one held-out item per user.

Two entry points share one definition of rank (0-based position of the target):
:func:`rank_from_scores` for a score over the whole catalogue (history masked, ties counted
against the target so a constant model scores zero), and :func:`rank_from_lists` for an ordered
list of item ids (a target absent from the list has rank ``inf``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "DEFAULT_KS",
    "mask_history",
    "rank_from_scores",
    "rank_from_lists",
    "metrics_from_ranks",
    "complete_ranking",
]

DEFAULT_KS: tuple[int, ...] = (5, 10, 20)


def mask_history(scores: torch.Tensor, histories: Sequence[Iterable[int]]) -> torch.Tensor:
    """Set the scores of items a user has already seen to ``-inf`` (in place; returns ``scores``)."""
    rows = [torch.full((len(h),), r, dtype=torch.long) for r, h in enumerate(histories)]
    cols = [torch.as_tensor(np.asarray(h, dtype=np.int64)) for h in histories]
    if rows:
        scores[torch.cat(rows), torch.cat(cols).to(scores.device)] = float("-inf")
    return scores


def rank_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items: items scoring higher, plus ties other than itself."""
    targets = targets.to(scores.device).long()
    target_scores = scores.gather(1, targets[:, None])
    higher = (scores > target_scores).sum(1)
    ties = (scores == target_scores).sum(1) - 1
    return (higher + ties).float()


def rank_from_lists(ranked: Sequence[Sequence[int]], targets: Sequence[int]) -> torch.Tensor:
    """0-based position of each target in its ordered list; ``inf`` when the list lacks it."""
    ranks = []
    for items, target in zip(ranked, targets):
        hits = np.flatnonzero(np.asarray(items) == int(target))
        ranks.append(float(hits[0]) if len(hits) else float("inf"))
    return torch.tensor(ranks, dtype=torch.float64)


def metrics_from_ranks(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@K and NDCG@K over users, keyed ``"HR@10"``, ``"NDCG@10"``..."""
    ranks = ranks.double()
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        out[f"HR@{k}"] = hit.double().mean().item()
        gain = torch.where(hit, 1.0 / torch.log2(ranks.clamp(max=k) + 2.0), torch.zeros_like(ranks))
        out[f"NDCG@{k}"] = gain.mean().item()
    return out


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
