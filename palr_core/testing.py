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

__all__ = ["TinyData", "tiny_data", "tiny_context", "check_retriever", "preset_problems"]


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
