"""The four component kinds a plugin can provide, and what the pipeline hands them.

Interfaces are ``typing.Protocol`` classes: a plugin class conforms by having the methods, no
inheritance needed. Components are built as ``cls(**params)`` from their validated config and
never see Hydra or OmegaConf objects.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .config import TrainerConfig
from .data import ItemCatalog, RawDataset

__all__ = [
    "RunContext",
    "TrainingData",
    "RankRequest",
    "Dataset",
    "Retriever",
    "ProfileGenerator",
    "Ranker",
    "LanguageModel",
    "ModelNotInstalled",
    "KINDS",
]


class ModelNotInstalled(FileNotFoundError):
    """A named model's files are not on this machine; the message says how to get them."""


@dataclass(frozen=True)
class LanguageModel:
    """A registered model name (hook ``register_language_models``): ``locate()`` gives its local
    Hugging Face folder or ``.gguf`` file, or raises :class:`ModelNotInstalled`."""

    name: str
    locate: Callable[[], str | os.PathLike]
    description: str = ""
    plugin: str = ""
    distribution: str = ""
    version: str = ""


@dataclass
class RunContext:
    """Run-wide settings every component may use.

    :param seed: the run's seed. palr seeds Python, numpy and torch from it at the start of every
        pipeline stage, so components never seed anything; for a stream of their own they draw
        from :meth:`rng`.
    :param work_dir: this run's output directory (checkpoints, caches that belong to the run).
    :param cache_dir: a directory shared across runs (downloads, parsed data, converted models, profiles).
    :param trainer: the ``trainer`` config group (:class:`palr_core.TrainerConfig`).
    :param catalog: the preprocessed item catalogue (indices match the sequences); ``None`` only
        while the dataset is being loaded.
    :param profiles: the run's ProfileGenerator, if one is configured (a ranker may profile its
        training users with it so that fine-tuning prompts look like ranking prompts).
    :param language_models: the registered model names (``ranker.model=<name>``), by name.
    """

    seed: int
    work_dir: Path
    cache_dir: Path
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    catalog: ItemCatalog | None = None
    profiles: ProfileGenerator | None = None
    language_models: Mapping[str, LanguageModel] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        if self.catalog is None:
            raise RuntimeError("RunContext.catalog is not known yet: the dataset is still being loaded")
        return len(self.catalog)

    def rng(self, salt: int | str = 0) -> np.random.Generator:
        """A numpy generator derived from the run seed; ``salt`` (a number or a name such as
        ``"negatives"``) separates independent streams, so adding one never shifts another."""
        if isinstance(salt, str):
            salt = zlib.crc32(salt.encode())
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


#: Every component may also have ``check(context) -> None``: palr calls it for all four before the
#: run's first stage, so that a resource the component will need (a model file, an adapter, a
#: device) is found missing in seconds, not after the retriever trained for an hour.
#: A Ranker may also have ``tune(requests, targets, context) -> dict``: palr calls it after ``fit``
#: with ``eval.tune_users`` users' training prefixes as histories, the retriever's candidates for
#: them and their validation items as ``targets`` (never a test item), so the ranker can choose its
#: own settings (``llama_lora``'s ``retriever_weight=auto``); the dict returned is recorded in
#: ``metrics.json`` under ``validation.ranker``, and its top-level scalars are printed under the
#: results table.


@runtime_checkable
class Dataset(Protocol):
    """Produces the raw interaction log and the item catalogue."""

    def load(self, context: RunContext) -> RawDataset:
        """Read (or download into ``context.cache_dir``) the data; preprocessing and splitting are
        palr's job, not this one's. (Plugin API 1: ``load()`` without the context.)"""
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


#: component kind (also its config group) -> (interface, registration hook)
KINDS: dict[str, tuple[type, str]] = {
    "dataset": (Dataset, "register_datasets"),
    "retriever": (Retriever, "register_retrievers"),
    "profile": (ProfileGenerator, "register_profile_generators"),
    "ranker": (Ranker, "register_rankers"),
}
