"""Helpers for a plugin's own tests: tiny data, a ready run context, and a contract check.

Plain functions (no pytest needed), so a third-party plugin tests itself against palr the way
palr's built-ins do::

    from palr_core.testing import check_retriever, tiny_context, tiny_data

    def test_my_retriever_fits_and_retrieves(tmp_path):
        report = check_retriever(MyRetriever(hidden=16, max_epochs=2), tmp_path)
        assert report["NDCG@10"] > report["popularity NDCG@10"]

:func:`tiny_data` is palr's built-in ``synthetic`` dataset at a small size (150 users, about 100
items, one minute of CPU for a whole test module at most), preprocessed and split as a run does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .components import RunContext, TrainingData
from .config import TrainerConfig
from .data import SequenceData, Split, leave_one_out_split, preprocess
from .metrics import metrics_from_ranks, rank_from_lists

__all__ = ["TinyData", "tiny_data", "tiny_context", "check_retriever"]


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


def check_retriever(retriever, directory: str | os.PathLike, data: TinyData | None = None,
                    k: int = 10) -> dict[str, float]:
    """Fit ``retriever`` on tiny data and check the Retriever contract on the test histories.

    Checks: ``retrieve`` returns ``(ids, scores)`` shaped ``(users, k)``, ids are catalogue indices
    without repeats and never an item of the history, and scores are best first. Returns the
    retriever's HR@10/NDCG@10 on the test items, with popularity's beside them for comparison.
    """
    from .pipeline import seed_stage

    data = data or tiny_data()
    context = tiny_context(directory, catalog=data.catalog)
    seed_stage(context.seed, "fit_retriever")
    retriever.fit(data.training, context)
    histories = data.split.histories("test")
    ids, scores = (np.asarray(x) for x in retriever.retrieve(histories, k))
    assert ids.shape == (len(histories), k), f"retrieve returned ids shaped {ids.shape}, expected {(len(histories), k)}"
    assert scores.shape == ids.shape, f"retrieve returned scores shaped {scores.shape}, expected {ids.shape}"
    assert ((ids >= 0) & (ids < len(data.catalog))).all(), "retrieve returned ids outside the catalogue"
    for row, history in zip(ids, histories):
        assert len(set(row.tolist())) == k, f"retrieve repeated an item: {row.tolist()}"
        assert not set(row.tolist()) & set(np.asarray(history).tolist()), "retrieve returned a history item"
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "retrieve's scores are not best first"
    report = metrics_from_ranks(rank_from_lists(ids, data.split.test), [10])
    counts = np.bincount(np.concatenate(data.split.train), minlength=len(data.catalog))
    order = np.argsort(-counts, kind="stable")
    popular = [[i for i in order if i not in set(np.asarray(h).tolist())][:k] for h in histories]
    baseline = metrics_from_ranks(rank_from_lists(popular, data.split.test), [10])
    return {**report, **{f"popularity {key}": value for key, value in baseline.items()}}
