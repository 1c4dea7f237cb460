"""The popularity retriever's chunked top-k equals the per-user reading of the global order."""

import numpy as np
import pytest
from palr.plugins.popularity.retriever import PopularityRetriever


def _one_user_at_a_time(retriever, histories, k):
    k = min(k, len(retriever.order))
    ids, scores = np.empty((len(histories), k), dtype=np.int64), np.empty((len(histories), k))
    for row, history in enumerate(histories):
        head = retriever.order[:k + len(history)]
        seen = np.isin(head, history)
        ids[row] = np.concatenate([head[~seen], head[seen]])[:k]
        scores[row] = np.where(np.isin(ids[row], history), -np.inf, retriever.scores[ids[row]])
    return ids, scores


@pytest.mark.parametrize(("items", "users", "k", "longest"), [(30, 50, 10, 40), (1000, 3000, 50, 300),
                                                                 (8, 20, 20, 8), (500, 10, 5, 0)])
def test_chunked_retrieval_is_the_per_user_reading(items, users, k, longest):
    """Including catalogues too small for k unseen items (seen ones follow at -inf) and users
    without history; chunks of a few users each, so that chunk boundaries are crossed."""
    rng = np.random.default_rng(items)
    retriever = PopularityRetriever()
    retriever.scores = rng.integers(0, 20, items) - np.arange(items) / (items + 1)
    retriever.order = np.argsort(-retriever.scores, kind="stable")
    histories = [rng.choice(items, size=min(items, int(rng.integers(0, longest + 1))), replace=False)
                 for _ in range(users)]
    expected = _one_user_at_a_time(retriever, histories, k)
    import palr.plugins.popularity.retriever as module

    for cells in (module.CHUNK_CELLS, 4 * (k + longest)):
        module.CHUNK_CELLS, before = cells, module.CHUNK_CELLS
        try:
            ids, scores = retriever.retrieve(histories, k)
        finally:
            module.CHUNK_CELLS = before
        np.testing.assert_array_equal(ids, expected[0])
        np.testing.assert_array_equal(scores, expected[1])
