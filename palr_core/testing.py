"""Helpers for a plugin's own tests: tiny data, a ready run context, and a contract check per kind.

Plain functions (no pytest needed), so a third-party plugin tests itself against palr the way
palr's built-ins do::

    from palr_core.testing import check_ranker, check_retriever

    def test_my_retriever_fits_and_retrieves(tmp_path):
        report = check_retriever(MyRetriever(hidden=16, max_epochs=2), tmp_path)
        assert report["NDCG@10"] > report["popularity NDCG@10"]

    def test_my_ranker_beats_the_candidate_order(tmp_path):
        report = check_ranker(MyRanker(), tmp_path)
        assert report["NDCG@10"] > report["candidates NDCG@10"]

:func:`check_retriever`, :func:`check_ranker`, :func:`check_dataset` and
:func:`check_profile_generator` each run a component as a run would and raise ``AssertionError``
naming the component's class and what it got wrong (raised explicitly: ``python -O`` does not
skip them). :func:`tiny_data` is palr's built-in ``synthetic`` dataset at a small size (150 users,
about 100 items, one minute of CPU for a whole test module at most), preprocessed and split as a
run does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .components import KINDS, RankRequest, RunContext, TrainingData
from .config import TrainerConfig
from .data import DataError, RawDataset, SequenceData, Split, fingerprint, leave_one_out_split, preprocess
from .metrics import complete_ranking, metrics_from_ranks, rank_from_lists

__all__ = ["TinyData", "tiny_data", "tiny_context", "check_retriever", "check_ranker", "check_dataset",
           "check_profile_generator", "rank_requests", "preset_problems"]


@dataclass(frozen=True)
class TinyData:
    """Preprocessed tiny data: the sequences, their split, and what ``fit`` receives."""

    data: SequenceData
    split: Split

    @property
    def training(self) -> TrainingData:
        return TrainingData(train=self.split.train, valid=self.split.valid, catalog=self.data.catalog)

    @property
    def catalog(self):
        return self.data.catalog


@lru_cache(maxsize=8)
def tiny_data(users: int = 150, franchises: int = 50, seed: int = 7, k_core: int = 5) -> TinyData:
    """palr's ``synthetic`` movie log at a small size (users follow franchises "The X" → "The X II",
    so a sequential model has something to learn), 5-core filtered and split leave-one-out."""
    from .plugins import load_registry

    dataset = load_registry().build("dataset", "synthetic", {"users": users, "franchises": franchises,
                                                             "seed": seed})
    data = preprocess(dataset.load(None), k_core=k_core)
    return TinyData(data=data, split=leave_one_out_split(data))


def tiny_context(directory: str | os.PathLike, *, catalog=None, seed: int = 0, **trainer: Any) -> RunContext:
    """A run context whose work and cache folders are under ``directory``, training on the CPU
    without progress bars (``trainer`` overrides :class:`~palr_core.TrainerConfig` fields, e.g.
    ``max_epochs=2``)."""
    directory = Path(directory)
    settings = replace(TrainerConfig(enable_progress_bar=False), **trainer)
    return RunContext(seed=seed, work_dir=directory / "run", cache_dir=directory / "cache", trainer=settings,
                      catalog=catalog)


def _require(condition: bool, message: str) -> None:
    """``assert`` that ``python -O`` keeps: a contract check must not vanish with optimisation."""
    if not condition:
        raise AssertionError(message)


def _has_interface(component, kind: str) -> str:
    """The component's class name, after checking it has its kind's methods (``KINDS``)."""
    interface = KINDS[kind][0]
    who = type(component).__name__
    lacking = [name for name in dir(interface) if not name.startswith("_") and callable(getattr(interface, name))
               and not callable(getattr(component, name, None))]
    _require(not lacking, f"{who} is not a {interface.__name__}: it has no {', '.join(lacking)} method")
    return who


def _staged(context: RunContext, stage: str, call):
    """``call()`` after seeding its pipeline stage as a run does (torch is imported only here)."""
    from .pipeline import seed_stage

    seed_stage(context.seed, stage)
    return call()


def check_retriever(retriever, directory: str | os.PathLike, data: TinyData | None = None,
                    k: int = 10) -> dict[str, float]:
    """Fit ``retriever`` on tiny data and check the Retriever contract on the test histories.

    Checks: ``retrieve`` returns ``(ids, scores)`` shaped ``(users, k)``, ids are catalogue indices
    without repeats and never an item of the history, and scores are best first. Returns the
    retriever's HR@10/NDCG@10 on the test items, with popularity's beside them for comparison.
    """
    who = _has_interface(retriever, "retriever")
    data = data or tiny_data()
    context = tiny_context(directory, catalog=data.catalog)
    _staged(context, "fit_retriever", lambda: retriever.fit(data.training, context))
    histories = data.split.histories("test")
    ids, scores = (np.asarray(x) for x in retriever.retrieve(histories, k))
    _require(ids.shape == (len(histories), k),
             f"{who}.retrieve returned ids shaped {ids.shape}, expected {(len(histories), k)}")
    _require(scores.shape == ids.shape, f"{who}.retrieve returned scores shaped {scores.shape}, expected {ids.shape}")
    _require(bool(((ids >= 0) & (ids < len(data.catalog))).all()), f"{who}.retrieve returned ids outside the catalogue")
    for user, (row, history) in enumerate(zip(ids, histories)):
        _require(len(set(row.tolist())) == k, f"{who}.retrieve repeated an item for user {user}: {row.tolist()}")
        _require(not set(row.tolist()) & set(np.asarray(history).tolist()),
                 f"{who}.retrieve returned a history item for user {user}")
    _require(bool((np.diff(scores, axis=1) <= 1e-6).all()), f"{who}.retrieve's scores are not best first")
    report = metrics_from_ranks(rank_from_lists(ids, data.split.test), [10])
    counts = np.bincount(np.concatenate(data.split.train), minlength=len(data.catalog))
    order = np.argsort(-counts, kind="stable")
    popular = [[i for i in order if i not in set(np.asarray(h).tolist())][:k] for h in histories]
    baseline = metrics_from_ranks(rank_from_lists(popular, data.split.test), [10])
    return {**report, **{f"popularity {key}": value for key, value in baseline.items()}}


def rank_requests(data: TinyData, candidates: int, context: RunContext) -> list[RankRequest]:
    """One request per test user, as a popularity retriever would hand it to a ranker: the test
    history, and ``candidates`` items the user has not seen (the test item and others drawn at
    random from ``context.rng("candidates")``) in training-popularity order, the counts as
    ``candidate_scores``. Every list holds its target, so the metrics measure the order alone."""
    if candidates < 1:
        raise ValueError(f"candidates must be at least 1, got {candidates}")
    rng = context.rng("candidates")
    counts = np.bincount(np.concatenate(data.split.train), minlength=len(data.catalog))
    requests = []
    for user, (history, target) in enumerate(zip(data.split.histories("test"), data.split.test)):
        unseen = np.setdiff1d(np.arange(len(data.catalog)), np.append(history, target))
        drawn = rng.choice(unseen, min(candidates - 1, len(unseen)), replace=False)
        items = np.append(drawn, target)
        items = items[np.lexsort((items, -counts[items]))]  # most popular first, ties by index
        requests.append(RankRequest(user=user, history=history, candidates=items,
                                    candidate_scores=counts[items].astype(np.float64)))
    return requests


def check_ranker(ranker, directory: str | os.PathLike, data: TinyData | None = None, candidates: int = 20,
                 profiles=None) -> dict[str, float]:
    """Fit ``ranker`` on tiny data, rank every test user's candidates and check the Ranker contract.

    The requests are :func:`rank_requests`' (with ``profiles.generate``'s text when a
    ProfileGenerator is given). Checks: ``rank`` returns one list per request, each holding only
    that request's candidates and none twice (a subset is allowed: palr appends the candidates it
    left out, in the retriever's order), leaves the requests as they were, and ranks the same
    again from the same seed. Returns HR/NDCG@5 and @10 of the completed lists, with the
    candidates' own order's beside them (``"candidates NDCG@10"``).
    """
    who = _has_interface(ranker, "ranker")
    data = data or tiny_data()
    context = tiny_context(directory, catalog=data.catalog)
    requests = rank_requests(data, candidates, context)
    if profiles is not None:
        texts = profiles.generate([r.user for r in requests], [r.history for r in requests], context)
        requests = [replace(r, profile=text or None) for r, text in zip(requests, texts)]
    given = [(r.history.copy(), r.candidates.copy()) for r in requests]
    _staged(context, "fit_ranker", lambda: ranker.fit(data.training, context))
    ranked = _ranked_lists(who, _staged(context, "rank", lambda: ranker.rank(requests, context)), requests)
    for user, (request, (history, items)) in enumerate(zip(requests, given)):
        _require(np.array_equal(request.history, history) and np.array_equal(request.candidates, items),
                 f"{who}.rank changed the history or candidates of request {user}; a ranker only reads them")
    again = _ranked_lists(who, _staged(context, "rank", lambda: ranker.rank(requests, context)), requests)
    _require(again == ranked, f"{who}.rank ranked differently on a second call from the same seed; "
                              "draw randomness from context.rng(salt) or the seeded torch/numpy generators")
    final = [complete_ranking(r, q.candidates) for r, q in zip(ranked, requests)]
    report = metrics_from_ranks(rank_from_lists(final, data.split.test), [5, 10])
    baseline = metrics_from_ranks(rank_from_lists([q.candidates for q in requests], data.split.test), [5, 10])
    return {**report, **{f"candidates {key}": value for key, value in baseline.items()}}


def _ranked_lists(who: str, ranked, requests: Sequence[RankRequest]) -> list[list[int]]:
    """``rank``'s answer as lists of ints, after checking it against the Ranker contract."""
    _require(isinstance(ranked, (Sequence, np.ndarray)) and not isinstance(ranked, str),
             f"{who}.rank returned {type(ranked).__name__}, expected a list with one list per request")
    _require(len(ranked) == len(requests),
             f"{who}.rank returned {len(ranked)} lists for {len(requests)} requests; it returns one per request")
    lists = []
    for user, (row, request) in enumerate(zip(ranked, requests)):
        row = list(np.asarray(row).reshape(-1).tolist()) if not isinstance(row, list) else row
        _require(all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in row),
                 f"{who}.rank's list for request {user} holds something other than item ids: {row[:10]}")
        allowed = set(request.candidates.tolist())
        outside = [int(x) for x in row if int(x) not in allowed]
        _require(not outside, f"{who}.rank's list for request {user} holds items that are not its candidates: "
                              f"{outside[:10]}")
        _require(len(set(map(int, row))) == len(row), f"{who}.rank's list for request {user} repeats an item: {row}")
        lists.append([int(x) for x in row])
    return lists


def check_dataset(dataset, directory: str | os.PathLike, k_core: int = 5) -> TinyData:
    """Load ``dataset`` as a run does and check that palr can use what it returns.

    Checks: ``load(context)`` returns a :class:`~palr_core.RawDataset` whose every item has a
    non-empty title, palr's ``preprocess`` (``k_core``) and leave-one-out split accept it, and a
    second load from the same seed gives the same data. Returns the preprocessed data and split.
    """
    who = _has_interface(dataset, "dataset")
    context = tiny_context(directory)
    raw = _staged(context, "load", lambda: dataset.load(context))
    _require(isinstance(raw, RawDataset), f"{who}.load returned {type(raw).__name__}, expected a palr_core.RawDataset")
    untitled = [item for item, title in zip(raw.catalog.ids, raw.catalog.titles) if not isinstance(title, str)
                or not title.strip()]
    _require(not untitled, f"{who}.load's catalogue has items without a title (give them their id), e.g. {untitled[:5]}")
    try:
        data = preprocess(raw, k_core=k_core)
        split = leave_one_out_split(data)
    except DataError as exc:
        raise AssertionError(f"{who}.load's data is refused by palr's preprocessing: {exc}") from None
    _require(fingerprint(_staged(context, "load", lambda: dataset.load(context))) == fingerprint(raw),
             f"{who}.load gave different data on a second load from the same seed; draw randomness from "
             "context.rng(salt)")
    return TinyData(data=data, split=split)


def check_profile_generator(generator, directory: str | os.PathLike, data: TinyData | None = None,
                            users: int = 20) -> list[str]:
    """Write profiles for the first ``users`` test users of tiny data and check the contract.

    Checks: ``generate(users, histories, context)`` returns one string per user (``""``: no
    profile) and the same strings again from the same seed. Returns the profiles.
    """
    who = _has_interface(generator, "profile")
    data = data or tiny_data()
    context = tiny_context(directory, catalog=data.catalog)
    chosen = list(range(min(users, len(data.split.test))))
    histories = [data.split.histories("test")[u] for u in chosen]
    profiles = _staged(context, "profiles", lambda: generator.generate(chosen, histories, context))
    _require(isinstance(profiles, (Sequence, np.ndarray)) and not isinstance(profiles, str),
             f"{who}.generate returned {type(profiles).__name__}, expected a list with one string per user")
    _require(len(profiles) == len(chosen),
             f"{who}.generate returned {len(profiles)} profiles for {len(chosen)} users; it returns one per user")
    wrong = [(u, type(p).__name__) for u, p in zip(chosen, profiles) if not isinstance(p, str)]
    _require(not wrong, f"{who}.generate returned a profile that is not a string (user, type): {wrong[:5]}")
    again = _staged(context, "profiles", lambda: generator.generate(chosen, histories, context))
    _require(list(again) == list(profiles), f"{who}.generate wrote different profiles on a second call from the "
                                            "same seed")
    return list(profiles)


def preset_problems(config_dir: str, registry=None) -> list[str]:
    """What is wrong with the presets in a config directory (``"pkg://palr_x.conf"``; ``[]``: nothing).

    A preset (``<group>/<name>.yaml``) must extend a registered option with
    ``defaults: [<option>, _self_]`` and set only options of that component's config dataclass, each
    to a value other than its default; it may not take a registered component's name (it would
    replace that component's dataclass defaults). Other folders (``hydra/``...) are not checked.
    """
    import dataclasses
    import importlib.resources

    from omegaconf import OmegaConf

    from .components import KINDS
    from .plugins import field_default, load_registry

    registry = registry or load_registry()
    root = (importlib.resources.files(config_dir[len("pkg://"):]) if config_dir.startswith("pkg://")
            else Path(config_dir.removeprefix("file://")))
    problems = []
    for group_dir in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        if group_dir.name not in (*KINDS, "trainer"):
            continue
        group = group_dir.name
        known = registry.names(group) if group in KINDS else ["cpu"]
        for path in sorted((p for p in group_dir.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name):
            where = f"{config_dir}/{group}/{path.name}"
            node = OmegaConf.to_container(OmegaConf.create(path.read_text())) or {}
            defaults = node.pop("defaults", None)
            if not (isinstance(defaults, list) and len(defaults) == 2 and defaults[1] == "_self_"
                    and defaults[0] in known):
                problems.append(f"{where}: a preset starts with defaults: [<a registered {group}>, _self_] "
                                f"(registered: {', '.join(known)})")
                continue
            if path.name[:-5] in known:
                problems.append(f"{where}: a preset may not take the name of a registered {group}")
            config = TrainerConfig if group == "trainer" else registry.get(group, defaults[0]).config_class()
            fields = {f.name: f for f in dataclasses.fields(config)}
            for key, value in node.items():
                if key not in fields:
                    problems.append(f"{where}: {key!r} is not an option of {defaults[0]} ({config.__name__})")
                elif value == field_default(fields[key]):
                    problems.append(f"{where}: {key}: {value!r} restates {config.__name__}'s default")
    return problems
