"""Full-catalogue HR@K / NDCG@K against a brute-force reference (framework metrics: numpy; the toolkit's
full-catalogue ranks from scores: torch)."""

import math

import numpy as np
import pytest
import torch

from palr_core.kit.retrievers import mask_history, rank_from_scores
from palr_core.metrics import metrics_from_ranks, rank_from_lists


def brute_force(scores: np.ndarray, histories, targets, ks):
    out = {f"{m}@{k}": 0.0 for k in ks for m in ("HR", "NDCG")}
    for row, hist, target in zip(scores, histories, targets):
        order = [i for i in np.argsort(-row, kind="stable") if i not in set(hist)]
        rank = order.index(target)
        for k in ks:
            if rank < k:
                out[f"HR@{k}"] += 1 / len(targets)
                out[f"NDCG@{k}"] += 1 / math.log2(rank + 2) / len(targets)
    return out


def test_full_catalogue_metrics_match_brute_force(rng):
    users, items, ks = 64, 300, (1, 5, 10, 20)
    scores = rng.normal(size=(users, items))
    histories = [rng.choice(items, size=rng.integers(1, 40), replace=False) for _ in range(users)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(items), h)) for h in histories])
    masked = mask_history(torch.tensor(scores), histories)
    got = metrics_from_ranks(rank_from_scores(masked, torch.tensor(targets)), ks)
    want = brute_force(scores, histories, targets, ks)
    assert got == pytest.approx(want, abs=1e-9)


def test_masked_history_items_rank_below_every_other_item():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0]])
    masked = mask_history(scores.clone(), [[0, 1]])
    assert rank_from_scores(masked, torch.tensor([2])).item() == 0


def test_ties_count_against_the_target_so_constant_scores_score_zero():
    ranks = rank_from_scores(torch.zeros(3, 50), torch.tensor([0, 10, 49]))
    assert (ranks == 49).all()
    assert metrics_from_ranks(ranks, (10,))["HR@10"] == 0.0


def test_rank_from_lists_positions_and_misses():
    ranks = rank_from_lists([[3, 1, 2], [4, 5], [7]], [2, 9, 7])
    assert ranks.tolist() == [2.0, float("inf"), 0.0]
    m = metrics_from_ranks(ranks, (1, 3))
    assert m["HR@1"] == pytest.approx(1 / 3)
    assert m["HR@3"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1 / math.log2(4) + 1) / 3)


def test_list_and_score_ranks_agree_on_distinct_scores(rng):
    scores = torch.tensor(rng.normal(size=(20, 100)))
    targets = torch.tensor(rng.integers(0, 100, size=20))
    lists = scores.argsort(dim=1, descending=True).tolist()
    assert rank_from_lists(lists, targets.tolist()).tolist() == rank_from_scores(scores, targets).tolist()
