"""Full-catalogue HR@K / NDCG@K / MRR@K, catalogue coverage and average popularity against brute-force
references (framework metrics: numpy; the toolkit's full-catalogue ranks from scores: torch)."""

import math

import numpy as np
import pytest
import torch

from palr_core.kit.retrievers import mask_history, rank_from_scores
from palr_core.metrics import (
    average_popularity,
    catalogue_coverage,
    item_popularity,
    list_metrics,
    metrics_from_ranks,
    per_user,
    rank_from_lists,
)


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


def brute_force_lists(ranked, targets, ks, train, num_items):
    """Every list metric by loops over plain Python lists: no numpy in the arithmetic."""
    counts = [0] * num_items
    for seq in train:
        for item in seq:
            counts[int(item)] += 1
    most = max(counts)
    out = {}
    for k in ks:
        hr = ndcg = mrr = 0.0
        for items, target in zip(ranked, targets):
            top = [int(i) for i in items[:k]]
            if int(target) in top:
                position = top.index(int(target))
                hr += 1
                ndcg += 1 / math.log2(position + 2)
                mrr += 1 / (position + 1)
        n = len(targets)
        out[f"HR@{k}"], out[f"NDCG@{k}"], out[f"MRR@{k}"] = hr / n, ndcg / n, mrr / n
        out[f"Coverage@{k}"] = len({int(i) for items in ranked for i in items[:k]}) / num_items
        pooled = [counts[int(i)] / most for items in ranked for i in items[:k]]
        out[f"AvgPop@{k}"] = sum(pooled) / len(pooled)
    return out


def random_lists(rng, users=50, items=120, length=30):
    ranked = [rng.choice(items, size=length, replace=False).tolist() for _ in range(users)]
    targets = [int(rng.integers(items)) for _ in range(users)]  # some inside the lists, most not
    targets[:20] = [lst[int(rng.integers(length))] for lst in ranked[:20]]
    train = [rng.choice(items, size=int(rng.integers(1, 15)), replace=False) for _ in range(users)]
    return ranked, targets, train


def test_list_metrics_match_brute_force(rng):
    ranked, targets, train = random_lists(rng)
    ks = (1, 5, 10, 20)
    got = list_metrics(ranked, targets, ks, item_popularity(train, 120))
    want = brute_force_lists(ranked, targets, ks, train, 120)
    assert set(got) == set(want)
    assert got == pytest.approx(want, abs=1e-12)


def test_list_metrics_keep_hr_and_ndcg_first_and_unchanged(rng):
    ranked, targets, train = random_lists(rng)
    got = list_metrics(ranked, targets, (5, 10), item_popularity(train, 120))
    old = metrics_from_ranks(rank_from_lists(ranked, targets), (5, 10))
    assert list(got)[:4] == list(old) and all(got[k] == old[k] for k in old)  # bit for bit
    assert list(got)[4:] == ["MRR@5", "MRR@10", "Coverage@5", "Coverage@10", "AvgPop@5", "AvgPop@10"]


def test_mrr_is_the_reciprocal_rank_inside_k_and_zero_outside():
    ranks = np.array([0, 1, 4, 9, np.inf])
    assert per_user(ranks, "MRR@5").tolist() == [1.0, 0.5, 0.2, 0.0, 0.0]
    assert per_user(ranks, "MRR@10")[3] == pytest.approx(0.1)


def test_coverage_counts_distinct_items_in_any_top_k():
    assert catalogue_coverage([[0, 1, 2], [1, 0, 3]], 2, 10) == pytest.approx(0.2)
    assert catalogue_coverage([[0, 1, 2], [1, 0, 3]], 3, 10) == pytest.approx(0.4)


def test_average_popularity_is_one_for_the_most_popular_item_and_zero_for_unseen():
    popularity = item_popularity([[0, 1], [0], [0, 2]], 4)
    assert popularity.tolist() == [3.0, 1.0, 1.0, 0.0]
    assert average_popularity([[0], [0]], 1, popularity) == 1.0
    assert average_popularity([[3, 0]], 1, popularity) == 0.0
    assert average_popularity([[1, 0]], 2, popularity) == pytest.approx((1 / 3 + 1) / 2)


def test_an_unknown_per_user_metric_is_refused_by_name():
    with pytest.raises(ValueError, match="Coverage@10"):
        per_user(np.zeros(3), "Coverage@10")
