"""Most-interacted items first, the user's history excluded: the baseline every model must beat."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from palr_core import RunContext, TrainingData, mask_history


@dataclass
class PopularityConfig:
    """The popularity retriever has no parameters."""


class PopularityRetriever:
    """Scores each item by its number of training interactions; ties go to the lower item index."""

    def __init__(self) -> None:
        self.scores: np.ndarray | None = None

    def fit(self, data: TrainingData, context: RunContext) -> None:
        counts = np.bincount(np.concatenate(data.train), minlength=data.num_items).astype(np.float64)
        # a deterministic tie-break that never reorders different counts
        self.scores = counts - np.arange(data.num_items) / (data.num_items + 1)

    def retrieve(self, histories: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.scores is None:
            raise RuntimeError("PopularityRetriever.retrieve called before fit")
        scores = torch.as_tensor(self.scores).repeat(len(histories), 1)
        top = mask_history(scores, histories).topk(min(k, scores.shape[1]), dim=1)
        return top.indices.numpy(), top.values.numpy()

    def save(self, path: Path) -> None:
        np.save(Path(path) / "popularity.npy", self.scores)

    @classmethod
    def load(cls, path: Path) -> PopularityRetriever:
        obj = cls()
        obj.scores = np.load(Path(path) / "popularity.npy")
        return obj
