"""Most-interacted items first, the user's history excluded: the baseline every model must beat."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from palr_core import RunContext, TrainingData


@dataclass
class PopularityConfig:
    """The popularity retriever has no parameters."""


class PopularityRetriever:
    """Scores each item by its number of training interactions; ties go to the lower item index.

    Retrieval reads each user's top-``k`` off the one global order, skipping the user's history,
    so it needs no users x items matrix: memory does not grow with the number of users.
    """

    def __init__(self) -> None:
        self.scores: np.ndarray | None = None
        self.order: np.ndarray | None = None

    def fit(self, data: TrainingData, context: RunContext) -> None:
        counts = np.bincount(np.concatenate(data.train), minlength=data.num_items).astype(np.float64)
        # a deterministic tie-break that never reorders different counts
        self.scores = counts - np.arange(data.num_items) / (data.num_items + 1)
        self.order = np.argsort(-self.scores, kind="stable")

    def retrieve(self, histories: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.scores is None or self.order is None:
            raise RuntimeError("PopularityRetriever.retrieve called before fit")
        k = min(k, len(self.order))
        ids = np.empty((len(histories), k), dtype=np.int64)
        scores = np.empty((len(histories), k), dtype=np.float64)
        for row, history in enumerate(histories):
            # the first k + |history| items in global order hold k unseen ones, unless the
            # catalogue is that small: then seen items fill the row at -inf, as in top_k_unseen
            head = self.order[:k + len(history)]
            seen = np.isin(head, history)
            ids[row] = np.concatenate([head[~seen], head[seen]])[:k]
            scores[row] = np.where(np.isin(ids[row], history), -np.inf, self.scores[ids[row]])
        return ids, scores

    def save(self, path: Path) -> None:
        np.save(Path(path) / "popularity.npy", self.scores)

    @classmethod
    def load(cls, path: Path) -> PopularityRetriever:
        obj = cls()
        obj.scores = np.load(Path(path) / "popularity.npy", allow_pickle=False)
        obj.order = np.argsort(-obj.scores, kind="stable")
        return obj
