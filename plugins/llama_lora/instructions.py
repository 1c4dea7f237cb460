"""PALR's instruction data: Recommend ("v1") and Recommend_Retrieval ("v2") fine-tuning examples.

Built from :class:`~palr_core.components.TrainingData` only (paper, section 2.2): for a seeded
fraction of users (20% by default) a cut point inside the *training* prefix splits it into a
history (at most 20 items) and the target items that follow it. Short target lists are topped
up with the user's 3-hop affinity (user→item→user→item on the training interaction graph);
with some probability an item is swapped between history and targets; Recommend_Retrieval adds
negatives similar to the targets (sharing an attribute label, or co-interacted by many users).
Validation items are never used, as targets, history, negatives or enrichment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from palr_core import TrainingData, option
from palr_core.config import check_options

__all__ = ["InstructionConfig", "InstructionExample", "InteractionGraph", "build_instructions",
           "build_choice_instructions", "select_users", "VERSIONS"]

#: PALR version -> the instruction tasks it is fine-tuned on
VERSIONS = {"v1": ("recommend",), "v2": ("recommend", "retrieval")}


@dataclass
class InstructionConfig:
    """How examples are cut from training sequences (defaults: the paper's values where it gives one).

    :param max_history: history items in an instruction (paper: 20).
    :param max_targets: target items after the cut point (the paper asks for 10).
    :param min_history: fewest history items before a cut point.
    :param num_negatives: similar negatives added to a Recommend_Retrieval candidate list.
    :param user_fraction: share of users fine-tuned on (paper: 20%), chosen with the run seed.
    :param examples_per_user: cut points drawn per selected user.
    :param enrich_below: target lists shorter than this are topped up from the 3-hop affinity.
    :param swap_prob: chance that one history item and one target swap places.
    """

    max_history: int = option(20, min=1)
    max_targets: int = option(10, min=1)
    min_history: int = option(3, min=1)
    num_negatives: int = option(10, min=0)
    user_fraction: float = option(0.2, above=0, max=1)
    examples_per_user: int = option(1, min=1)
    enrich_below: int = option(3, min=0)
    swap_prob: float = option(0.1, min=0, max=1)

    def __post_init__(self) -> None:
        if self.max_history < self.min_history:
            raise ValueError(f"instructions.max_history ({self.max_history}) must be >= instructions.min_history "
                             f"({self.min_history})")


@dataclass(frozen=True)
class InstructionExample:
    """One fine-tuning example: the prompt's items and the label's items (catalogue indices)."""

    user: int
    task: str  #: "recommend", "retrieval" or "choice"
    history: np.ndarray
    targets: np.ndarray
    candidates: np.ndarray | None = None  #: targets + negatives, shuffled (retrieval and choice)


class InteractionGraph:
    """The user×item graph of training prefixes, for co-interaction counts and 3-hop affinity."""

    def __init__(self, train: Sequence[np.ndarray], num_items: int) -> None:
        import scipy.sparse as sp

        rows = np.repeat(np.arange(len(train)), [len(s) for s in train])
        cols = np.concatenate([np.asarray(s, dtype=np.int64) for s in train]) if len(train) else []
        self.matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                                    shape=(len(train), num_items))
        self.matrix.data[:] = 1.0  # duplicates count once
        self._co = None

    @property
    def co_interactions(self):
        """item×item counts of users who interacted with both (diagonal zeroed)."""
        if self._co is None:
            co = (self.matrix.T @ self.matrix).tocsr()
            co.setdiag(0)
            co.eliminate_zeros()
            self._co = co
        return self._co

    def three_hop(self, user: int) -> np.ndarray:
        """Affinity of ``user`` to every item along user→item→user→item paths."""
        row = self.matrix[user]
        return np.asarray(((row @ self.matrix.T) @ self.matrix).todense()).ravel()


def select_users(num_users: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A sorted, seeded sample of ``round(fraction * num_users)`` users (at least one)."""
    size = max(1, int(round(fraction * num_users)))
    return np.sort(rng.choice(num_users, size=min(size, num_users), replace=False))


def build_instructions(
    data: TrainingData, version: str = "v2", config: InstructionConfig | None = None,
    rng: np.random.Generator | int = 0,
) -> list[InstructionExample]:
    """Fine-tuning examples for PALR ``version`` ("v1": Recommend; "v2": Recommend + Recommend_Retrieval).

    :param rng: the generator that draws users, cut points, swaps and negatives (a ranker passes
        ``context.rng("instructions")``), or a seed for one.
    """
    if version not in VERSIONS:
        raise ValueError(f"unknown PALR version {version!r}; expected one of {sorted(VERSIONS)}")
    config = config or InstructionConfig()
    check_options(config, "instructions")
    rng = np.random.default_rng(rng)
    graph = InteractionGraph(data.train, data.num_items)
    similar = _SimilarItems(data, graph)
    examples = []
    for user, exclude, history, targets in _cut_points(data, config, rng):
        if len(targets) < config.enrich_below:
            targets = _enrich(targets, graph.three_hop(user), exclude, config.enrich_below)
        for task in VERSIONS[version]:
            candidates = None
            if task == "retrieval":
                negatives = similar.negatives(targets, exclude, config.num_negatives, rng)
                candidates = rng.permutation(np.concatenate([targets, negatives]))
            examples.append(InstructionExample(user, task, history, targets, candidates))
    return examples


def _cut_points(data: TrainingData, config: InstructionConfig, rng: np.random.Generator):
    """``(user, items never to use as negatives, history, targets)`` per example: the seeded users,
    a cut point in each one's training prefix, and the optional swap. Drawn lazily, so a caller's
    own draws for one example (negatives) come before the next example's."""
    for user in select_users(len(data.train), config.user_fraction, rng).tolist():
        sequence = np.asarray(data.train[user], dtype=np.int64)
        if len(sequence) <= config.min_history:
            continue
        exclude = np.append(sequence, data.valid[user])
        for _ in range(config.examples_per_user):
            yield (user, exclude, *_maybe_swap(*_cut(sequence, config, rng), config.swap_prob, rng))


def build_choice_instructions(
    data: TrainingData, num_choices: int, config: InstructionConfig | None = None,
    rng: np.random.Generator | int = 0,
) -> list[InstructionExample]:
    """Examples for a verbalizer ranker (task ``"choice"``): the history before a cut point, and
    ``num_choices`` shuffled candidates, the item right after the cut (the one target) and
    ``num_choices - 1`` negatives similar to it. Later items of the user are never negatives.

    Users, cut points and swaps are drawn as in :func:`build_instructions`; validation items are
    never used. ``config.num_negatives`` and enrichment do not apply (one target, fixed list size).
    """
    config = config or InstructionConfig()
    check_options(config, "instructions")
    if num_choices < 2:
        raise ValueError(f"num_choices must be >= 2 (the target and at least one negative), got {num_choices}")
    rng = np.random.default_rng(rng)
    graph = InteractionGraph(data.train, data.num_items)
    similar = _SimilarItems(data, graph)
    examples = []
    for user, exclude, history, targets in _cut_points(data, config, rng):
        target = targets[:1]
        negatives = similar.negatives(target, exclude, num_choices - 1, rng)
        examples.append(InstructionExample(user, "choice", history, target,
                                           rng.permutation(np.concatenate([target, negatives]))))
    return examples


def _cut(sequence: np.ndarray, config: InstructionConfig, rng) -> tuple[np.ndarray, np.ndarray]:
    cut = int(rng.integers(config.min_history, len(sequence)))  # at least one target after it
    history = sequence[max(0, cut - config.max_history):cut]
    return history.copy(), sequence[cut:cut + config.max_targets].copy()


def _enrich(targets: np.ndarray, affinity: np.ndarray, exclude: np.ndarray, size: int) -> np.ndarray:
    affinity = affinity.astype(np.float64).copy()
    affinity[np.concatenate([exclude, targets])] = -np.inf
    ranked = np.argsort(-affinity, kind="stable")
    extra = [i for i in ranked[: size - len(targets)] if np.isfinite(affinity[i]) and affinity[i] > 0]
    return np.concatenate([targets, np.asarray(extra, dtype=np.int64)])


def _maybe_swap(history: np.ndarray, targets: np.ndarray, prob: float, rng):
    if len(history) and len(targets) and rng.random() < prob:
        h, t = int(rng.integers(len(history))), int(rng.integers(len(targets)))
        history[h], targets[t] = targets[t], history[h]
    return history, targets


class _SimilarItems:
    """Negatives like the targets: sharing an attribute label, or co-interacted with one."""

    def __init__(self, data: TrainingData, graph: InteractionGraph, top_co: int = 20) -> None:
        self.num_items = data.num_items
        self.graph = graph
        self.top_co = top_co
        self.by_label: dict[str, list[int]] = {}
        for item in range(data.num_items):
            for label in data.catalog.labels(item):
                self.by_label.setdefault(label, []).append(item)
        self.labels = [data.catalog.labels(i) for i in range(data.num_items)]

    def pool(self, targets: np.ndarray) -> np.ndarray:
        """Items sharing a label with a target, plus each target's most co-interacted items."""
        found: set[int] = set()
        for t in targets.tolist():
            for label in self.labels[t]:
                found.update(self.by_label[label])
            row = self.graph.co_interactions[t]
            found.update(row.indices[np.argsort(-row.data, kind="stable")[: self.top_co]].tolist())
        return np.array(sorted(found), dtype=np.int64)

    def negatives(self, targets: np.ndarray, exclude: np.ndarray, count: int, rng) -> np.ndarray:
        banned = np.concatenate([exclude, targets])
        pool = np.setdiff1d(self.pool(targets), banned)
        if len(pool) >= count:
            return rng.choice(pool, size=count, replace=False)
        rest = np.setdiff1d(np.arange(self.num_items), np.concatenate([banned, pool]))
        fill = rng.choice(rest, size=min(count - len(pool), len(rest)), replace=False)
        return np.concatenate([pool, fill]).astype(np.int64)
