"""The four component kinds a plugin can provide, and what the pipeline hands them.

Interfaces are ``typing.Protocol`` classes: a plugin class conforms by having the methods, no
inheritance needed. Components are built as ``cls(**params)`` from their validated config and
never see Hydra or OmegaConf objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .data import ItemCatalog, RawDataset
from .training import TrainerConfig

__all__ = [
    "RunContext",
    "TrainingData",
    "RankRequest",
    "Dataset",
    "Retriever",
    "ProfileGenerator",
    "Ranker",
    "KINDS",
]


@dataclass
class RunContext:
    """Run-wide settings every component may use.

    :param seed: the one seed for sampling, initialisation and decoding.
    :param work_dir: this run's output directory (checkpoints, caches that belong to the run).
    :param cache_dir: a directory shared across runs (parsed data, converted models, profiles).
    :param trainer: the ``trainer`` config group as a :class:`palr_core.training.TrainerConfig`.
    :param catalog: the preprocessed item catalogue (indices match the sequences).
    :param profiles: the run's ProfileGenerator, if one is configured (a ranker may profile its
        training users with it so that fine-tuning prompts look like ranking prompts).
    """

    seed: int
    work_dir: Path
    cache_dir: Path
    trainer: TrainerConfig
    catalog: ItemCatalog
    profiles: ProfileGenerator | None = None

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A numpy generator derived from the run seed (``salt`` separates independent streams)."""
        return np.random.default_rng([self.seed, salt])


@dataclass(frozen=True)
class TrainingData:
    """What a model may learn from: training prefixes and validation targets, never test items.

    ``train[u]`` is user ``u``'s chronological training prefix; ``valid[u]`` the held-out
    validation item (for early stopping on ``train[u]`` as history).
    """

    train: list[np.ndarray]
    valid: np.ndarray
    catalog: ItemCatalog

    @property
    def num_items(self) -> int:
        return len(self.catalog)


@dataclass(frozen=True)
class RankRequest:
    """One user to rank for: history, the retriever's candidates (best first), optional profile."""

    user: int
    history: np.ndarray
    candidates: np.ndarray
    candidate_scores: np.ndarray | None = None
    profile: str | None = None
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Dataset(Protocol):
    """Produces the raw interaction log and the item catalogue."""

    def load(self) -> RawDataset:
        """Read (or download) the data; preprocessing and splitting are palr's job, not this one's."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """Scores the whole catalogue for a user's history and returns the top candidates."""

    def fit(self, data: TrainingData, context: RunContext) -> None:
        """Train on ``data.train`` (``data.valid`` may drive early stopping)."""
        ...

    def retrieve(self, histories: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item ids and scores per history, best first, never an item of the history.

        :returns: ``(ids, scores)``, both shaped ``(len(histories), k)``.
        """
        ...


@runtime_checkable
class ProfileGenerator(Protocol):
    """Summarises a history as natural-language profile text (paper, Figure 2)."""

    def generate(
        self, users: Sequence[int], histories: Sequence[np.ndarray], context: RunContext
    ) -> list[str]:
        """One profile string per user; ``""`` means no profile."""
        ...


@runtime_checkable
class Ranker(Protocol):
    """Orders a user's candidates; may be fine-tuned first.

    Optional: a ``label`` attribute (str) names the ranker's row in the results table, e.g.
    ``"PALR v2 (llama_lora tiny, score)"``; the registered name is used otherwise.
    """

    def fit(self, data: TrainingData, context: RunContext) -> None:
        """Learn from training prefixes (a ranker with nothing to learn does nothing)."""
        ...

    def rank(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[int]]:
        """For each request, candidate ids best first (a subset is allowed: palr appends the
        candidates it left out in retriever order, so every row ranks the same items)."""
        ...


#: component kind -> (config group, interface, registration hook)
KINDS: dict[str, tuple[str, type, str]] = {
    "dataset": ("dataset", Dataset, "register_datasets"),
    "retriever": ("retriever", Retriever, "register_retrievers"),
    "profile": ("profile", ProfileGenerator, "register_profile_generators"),
    "ranker": ("ranker", Ranker, "register_rankers"),
}
