"""Most-interacted items first, the user's history excluded: the baseline every model must beat."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from palr_core import RunContext, TrainingData

#: most cells (users x items of the order's head) of one chunk's mask of seen items (its sort order: 0.5 MB)
CHUNK_CELLS = 1 << 16


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
        position = np.empty(len(self.order), dtype=np.int64)  # each item's place in the global order
        position[self.order] = np.arange(len(self.order))
        # shortest histories first, so that a chunk's mask is as wide as its own users need and the
        # cost is users x k + history items (linear in the log), not users x the longest history
        lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        by_length = np.argsort(lengths, kind="stable")
        start = 0
        while start < len(histories):
            stop = self._chunk_end(lengths[by_length], start, k)
            users = by_length[start:stop]
            chunk_ids = np.empty((len(users), k), dtype=np.int64)
            chunk_scores = np.empty((len(users), k), dtype=np.float64)
            self._retrieve_chunk([histories[u] for u in users.tolist()], lengths[users], k, position, chunk_ids,
                                 chunk_scores)
            ids[users], scores[users] = chunk_ids, chunk_scores
            start = stop
        return ids, scores

    def _chunk_end(self, lengths: np.ndarray, start: int, k: int) -> int:
        """Users from ``start`` (``lengths`` ascending) whose ``users x (k + longest history)`` mask
        stays within :data:`CHUNK_CELLS` (at least one user)."""
        fits = np.arange(1, len(lengths) - start + 1) * (k + lengths[start:]) <= CHUNK_CELLS
        return start + max(1, int(np.argmin(fits)) if not fits.all() else len(fits))

    def _retrieve_chunk(self, histories, lengths: np.ndarray, k: int, position: np.ndarray, ids: np.ndarray,
                        scores: np.ndarray) -> None:
        """Each user's first ``k`` items of the global order that are not in their history (then,
        when the catalogue is too small for ``k`` unseen ones, seen items at -inf): the first
        ``k + longest history`` items of the order hold them, so one mask of that width serves
        every user of the chunk, with no per-user Python loop."""
        width = min(k + int(lengths.max(initial=0)), len(self.order))
        head = self.order[:width]
        items = (np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if lengths.sum()
                 else np.zeros(0, dtype=np.int64))
        rows, columns = np.repeat(np.arange(len(histories)), lengths), position[items]
        seen = np.zeros((len(histories), width), dtype=bool)
        inside = columns < width
        seen[rows[inside], columns[inside]] = True
        picked = np.argsort(seen, axis=1, kind="stable")[:, :k]  # unseen first, each group in global order
        ids[:] = head[picked]
        scores[:] = np.where(np.take_along_axis(seen, picked, 1), -np.inf, self.scores[ids])

    def save(self, path: Path) -> None:
        np.save(Path(path) / "popularity.npy", self.scores)

    @classmethod
    def load(cls, path: Path) -> PopularityRetriever:
        obj = cls()
        obj.scores = np.load(Path(path) / "popularity.npy", allow_pickle=False)
        obj.order = np.argsort(-obj.scores, kind="stable")
        return obj
