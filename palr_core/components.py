"""The four component kinds a plugin can provide, and what the pipeline hands them.

Interfaces are ``typing.Protocol`` classes: a plugin class conforms by having the methods, no
inheritance needed. Components are built as ``cls(**params)`` from their config dataclass, whose
values the registry has validated once (:func:`palr_core.plugins.validate_params`), and never see
Hydra or OmegaConf objects.

Besides its interface's methods a component may have optional ones, each a runtime-checkable
Protocol here that says when palr uses it and what it may assume: :class:`Checkable`
(``check``), :class:`Tunable` (``tune``), :class:`Summarised` (``fit_summary``),
:class:`Labelled` (``label``), :class:`Persistent` (``is_trained``), :class:`Storable`
(``stage_key``, ``save``, ``restore``) and :class:`PreprocessesItself` (``load_sequences``). palr tests for them with
``isinstance(component, Tunable)``; nothing else of a component is looked up by name.
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
from .data import ItemCatalog, RawDataset, SequenceData

__all__ = [
    "RunContext",
    "TrainingData",
    "RankRequest",
    "Dataset",
    "Retriever",
    "ProfileGenerator",
    "Ranker",
    "Checkable",
    "Tunable",
    "RestoresTuning",
    "Summarised",
    "Labelled",
    "Persistent",
    "Storable",
    "PreprocessesItself",
    "OPTIONAL",
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


@runtime_checkable
class Dataset(Protocol):
    """Produces the raw interaction log and the item catalogue (a log too large to hand over raw:
    see :class:`PreprocessesItself`)."""

    def load(self, context: RunContext) -> RawDataset:
        """Read (or download into ``context.cache_dir``) the data; preprocessing and splitting are
        palr's job, not this one's. ``context.catalog`` is ``None`` while it runs."""
        ...


@runtime_checkable
class Retriever(Protocol):
    """Scores the whole catalogue for a user's history and returns the top candidates."""

    def fit(self, data: TrainingData, context: RunContext) -> None:
        """Train on ``data.train`` (``data.valid`` may drive early stopping).

        Called once per run, before any ``retrieve``; ``context.catalog`` is set. Called again on
        the same run folder when a run resumes and by ``palr.load_run``/``palr recommend``: a
        :class:`Persistent` retriever then loads its finished training from ``context.work_dir``.
        """
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
    """Orders a user's candidates; may be fine-tuned first (optional: :class:`Tunable`,
    :class:`Labelled`, :class:`Summarised`, :class:`Persistent`, :class:`Checkable`)."""

    def fit(self, data: TrainingData, context: RunContext) -> None:
        """Learn from training prefixes (a ranker with nothing to learn does nothing).

        Called once per run, after the retriever's ``fit``, before ``tune`` and ``rank``, with the
        retriever's ``data`` and ``context`` (``context.catalog`` and ``context.profiles`` set).
        ``palr recommend`` and ``palr.load_run`` build the ranker again from the run's config and
        call ``fit`` again with the same data and the same ``context.work_dir``: a ranker that
        trains must then load what it wrote there, not train again (:class:`Persistent`); one
        that keeps nothing there is fitted again with the run's seed.
        """
        ...

    def rank(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[int]]:
        """For each request, candidate ids best first (a subset is allowed: palr appends the
        candidates it left out in retriever order, so every row ranks the same items)."""
        ...


# -- optional methods: palr uses them where a component has them -------------------------------
@runtime_checkable
class Checkable(Protocol):
    """A component (any kind) that checks what it will need before the run does any work."""

    def check(self, context: RunContext) -> None:
        """Raise if a resource this component needs is missing (a model file, an adapter folder,
        a device), saying how to get it.

        palr calls it on all four components right after building them, before the run's first
        stage, so a missing file is found in seconds, not after the retriever trained for an hour.
        ``context.catalog`` is ``None`` then (no data is read yet). Raise ``FileNotFoundError`` or
        ``ValueError``: ``palr-run`` prints the message as ``palr: <message>`` and stops.
        """
        ...


@runtime_checkable
class Tunable(Protocol):
    """A Ranker that chooses its own settings on validation items (``llama_lora``'s
    ``retriever_weight=auto``)."""

    def tune(self, requests: Sequence[RankRequest], targets: np.ndarray, context: RunContext) -> dict | None:
        """Choose settings from how well ``requests`` are ranked against ``targets``.

        palr calls it after ``fit`` and before ``rank`` (and again in ``palr.load_run``, after the
        second ``fit``, unless the ranker is :class:`RestoresTuning`, so a loaded run ranks as the run did), with ``eval.tune_users`` seeded
        users: their training prefixes as histories, the retriever's candidates and profiles for
        them, and their validation items as ``targets`` (one per request; never a test item).
        The dict returned is recorded in ``metrics.json`` under ``validation.ranker``; its
        top-level scalars (the chosen setting) are printed under the results table.
        """
        ...


@runtime_checkable
class RestoresTuning(Protocol):
    """A Tunable ranker that takes back what its ``tune`` chose, so a loaded run ranks as the run
    did without tuning again (``palr.load_run``, ``palr recommend``)."""

    def restore_tuning(self, chosen: dict) -> None:
        """Set the settings ``tune`` chose, from the dict it returned (as ``metrics.json`` keeps it
        under ``validation.ranker``); called after ``fit`` in place of ``tune``."""
        ...


@runtime_checkable
class Summarised(Protocol):
    """A Retriever or Ranker that says what its training did."""

    #: what ``fit`` did, as JSON-able values (epochs, ``stopped_by``, examples, tokens...); read
    #: after the run's last stage and kept in ``metrics.json`` under ``training.retriever`` /
    #: ``training.ranker`` (values JSON cannot hold are written as text). ``palr report`` reads a
    #: retriever's ``stopped_by`` and ``epochs``; a value that is not a dict is ignored.
    fit_summary: dict


@runtime_checkable
class Labelled(Protocol):
    """A Ranker that names its row in the results table."""

    #: the row's name, e.g. ``"PALR v2 (llama_lora tiny, score)"``; read after ``rank``, so it may
    #: depend on what ``fit`` and ``tune`` chose. Without it, the registered name is used.
    label: str


@runtime_checkable
class Persistent(Protocol):
    """A Retriever or Ranker that keeps its finished training in the run folder.

    ``fit(data, context)`` writes what it trained under ``context.work_dir`` (in a folder of its
    own, e.g. ``retriever_training/`` or ``llama_lora/``) and, called again with the same data and
    the same ``context.work_dir`` (a resumed run, ``palr.load_run``, ``palr recommend``), loads it
    instead of training. ``palr.load_run`` asks :meth:`is_trained` before calling ``fit``, so a run
    folder without the training (deleted, or from an interrupted run) is refused by name instead
    of being trained again in silence. A component that is not Persistent is fitted again with
    the run's seed (right for the cheap and deterministic ones, such as popularity counts).
    """

    def is_trained(self, context: RunContext) -> bool:
        """Whether ``context.work_dir`` holds this component's finished training, so that ``fit``
        will load it; called after the component is built, before ``fit``, and must not train."""
        ...


@runtime_checkable
class Storable(Protocol):
    """A Retriever whose trained state palr may keep in its store of trained stages
    (:mod:`palr_core.store`) and read back in any later run with the same key, instead of training.

    palr's trained retrievers (:class:`palr_core.kit.TrainedRetriever`) are Storable. With the store
    on (``store.enabled``, the default), palr asks :meth:`stage_key` before ``fit``: when the store
    holds that key it calls :meth:`restore` instead of ``fit``; else it calls ``fit`` and then
    :meth:`save` into a new entry. Either way the run's later stages see the same fitted component.
    """

    def stage_key(self, data: TrainingData, context: RunContext) -> dict:
        """Everything ``fit(data, context)``'s result depends on, as JSON values: the model, every
        option that changes the result (not those that cannot, such as a save flag or an
        evaluation batch size), the training data (a digest), ``context.seed`` and
        ``context.trainer.results_settings()`` if it trains with Lightning. palr hashes it; two
        runs with equal keys must be able to share one training."""
        ...

    def save(self, folder: Path) -> object:
        """Write the fitted state into ``folder`` (it exists and is empty), in formats that cannot
        run code when read (tensors for ``torch.load(weights_only=True)``, JSON, ``.npy``)."""
        ...

    def restore(self, folder: Path, context: RunContext) -> None:
        """Become the fitted component :meth:`save` wrote into ``folder`` (read-only: copy what
        the run folder should hold, as ``fit`` would have written it, into ``context.work_dir``)."""
        ...


@runtime_checkable
class PreprocessesItself(Protocol):
    """A Dataset whose logs may be too large for palr's in-memory preprocessing (about 100 bytes
    per event at its peak), so it preprocesses them itself, e.g. out of core.

    palr calls :meth:`load_sequences` instead of ``load`` and :func:`~palr_core.preprocess`, and
    calls those when it returns ``None``.
    """

    def load_sequences(self, k_core: int, context: RunContext) -> SequenceData | None:
        """Exactly what ``preprocess(self.load(context), k_core)`` would return (the same users in
        sorted id order, items numbered by first appearance, each user's items in time order with
        ties in file order), or ``None`` to leave the work to palr. Caching it under
        ``context.cache_dir`` is the dataset's job."""
        ...


#: the optional Protocols, each with the component kinds palr uses it for
OPTIONAL: dict[type, tuple[str, ...]] = {
    Checkable: ("dataset", "retriever", "profile", "ranker"),
    Tunable: ("ranker",),
    RestoresTuning: ("ranker",),
    Summarised: ("retriever", "ranker"),
    Labelled: ("ranker",),
    Persistent: ("retriever", "ranker"),
    PreprocessesItself: ("dataset",),
}
# Storable is not in OPTIONAL: registration checks each optional method a class defines by its
# signature, and a retriever with a ``save`` of its own kind but no ``stage_key`` is not Storable


#: component kind (also its config group) -> (interface, registration hook)
KINDS: dict[str, tuple[type, str]] = {
    "dataset": (Dataset, "register_datasets"),
    "retriever": (Retriever, "register_retrievers"),
    "profile": (ProfileGenerator, "register_profile_generators"),
    "ranker": (Ranker, "register_rankers"),
}
