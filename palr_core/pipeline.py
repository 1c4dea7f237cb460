"""One experiment, top to bottom: load → preprocess → split → retrieve → profile → rank → evaluate.

:func:`run_pipeline` takes plain, already validated settings (:class:`PipelineSettings`) and a
:class:`~palr_core.plugins.Registry`; the Hydra entry point in :mod:`palr_core.cli` only
composes the config and calls it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .components import RankRequest, RunContext, TrainingData
from .data import SequenceData, fingerprint, leave_one_out_split, preprocess, save_stats
from .metrics import DEFAULT_KS, complete_ranking, metrics_from_ranks, rank_from_lists
from .plugins import Registry
from .training import TrainerConfig

log = logging.getLogger("palr")

__all__ = ["ComponentSpec", "PipelineSettings", "RunResult", "run_pipeline", "complete_ranking"]


@dataclass
class ComponentSpec:
    """A component chosen by registered name, with its params (validated by its config dataclass)."""

    name: str
    params: dict = field(default_factory=dict)

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> ComponentSpec:
        params = dict(node)
        return cls(name=params.pop("name"), params=params)


@dataclass
class PipelineSettings:
    dataset: ComponentSpec
    retriever: ComponentSpec
    profile: ComponentSpec
    ranker: ComponentSpec
    trainer: TrainerConfig
    work_dir: Path
    cache_dir: Path
    seed: int = 42
    k_core: int = 5
    ks: Sequence[int] = DEFAULT_KS
    candidates: int = 50
    max_users: int | None = None


@dataclass
class RunResult:
    rows: list[dict]
    stats: dict
    timings: dict[str, float]

    def table(self) -> str:
        """The results as a markdown table, one row per model (the shape of the paper's Table 2)."""
        metric_keys = [k for k in self.rows[0] if k.startswith(("HR@", "NDCG@"))]
        lines = ["| model | " + " | ".join(metric_keys) + " |",
                 "|---|" + "---:|" * len(metric_keys)]
        for row in self.rows:
            lines.append(f"| {row['model']} | " + " | ".join(f"{row[k]:.4f}" for k in metric_keys) + " |")
        return "\n".join(lines)


@contextmanager
def _timed(stage: str, timings: dict[str, float]):
    """Log the stage's start and record its wall-clock seconds in ``timings``."""
    log.info("%s ...", stage)
    t0 = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - t0, 3)


def _seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_pipeline(settings: PipelineSettings, registry: Registry) -> RunResult:
    """Run one experiment and write ``metrics.json``, ``results.md`` and dataset statistics."""
    _seed_everything(settings.seed)
    work_dir = Path(settings.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    dataset = registry.build("dataset", settings.dataset.name, settings.dataset.params)
    retriever = registry.build("retriever", settings.retriever.name, settings.retriever.params)
    profiler = registry.build("profile", settings.profile.name, settings.profile.params)
    ranker = registry.build("ranker", settings.ranker.name, settings.ranker.params)

    with _timed("load", timings):
        raw = dataset.load()
    with _timed("preprocess", timings):
        data = cached_preprocess(raw, settings.k_core, settings.cache_dir)
        split = leave_one_out_split(data)
    stats = data.stats
    print(stats.table(f"Dataset {data.name!r} after {settings.k_core}-core:"))
    save_stats(stats, work_dir / "dataset_stats", f"Dataset {data.name!r} after {settings.k_core}-core")

    context = RunContext(seed=settings.seed, work_dir=work_dir, cache_dir=Path(settings.cache_dir),
                         trainer=settings.trainer, catalog=data.catalog, profiles=profiler)
    training = TrainingData(train=split.train, valid=split.valid, catalog=data.catalog)

    with _timed("fit_retriever", timings):
        retriever.fit(training, context)

    users = _evaluation_users(len(split.test), settings.max_users, context)
    histories = split.histories("test")
    eval_histories = [histories[u] for u in users]
    targets = split.test[users]
    n_cand = max(settings.candidates, max(settings.ks))
    with _timed("retrieve", timings):
        cand_ids, cand_scores = retriever.retrieve(eval_histories, n_cand)
    rows = [_row(f"retriever: {settings.retriever.name} (its own order)",
                 cand_ids, targets, settings.ks)]

    with _timed("profiles", timings):
        profiles = profiler.generate(users.tolist(), eval_histories, context)
    with _timed("fit_ranker", timings):
        ranker.fit(training, context)
    requests = [
        RankRequest(user=int(u), history=h, candidates=np.asarray(c), candidate_scores=np.asarray(s),
                    profile=p or None)
        for u, h, c, s, p in zip(users, eval_histories, cand_ids, cand_scores, profiles)
    ]
    with _timed("rank", timings):
        ranked = ranker.rank(requests, context)
    final = [complete_ranking(r, req.candidates) for r, req in zip(ranked, requests)]
    # a ranker may name its row (e.g. "PALR v2 (llama_lora tiny, score)"), as in the paper's Table 2
    label = getattr(ranker, "label", settings.ranker.name)
    rows.append(_row(f"ranker: {label} over {settings.retriever.name} top-{n_cand}"
                     + (f" + profile: {settings.profile.name}" if settings.profile.name != "none" else ""),
                     final, targets, settings.ks))

    result = RunResult(rows=rows, stats=stats.as_dict(), timings=timings)
    (work_dir / "results.md").write_text(result.table() + "\n")
    (work_dir / "metrics.json").write_text(json.dumps(
        {"dataset": data.name, "stats": result.stats, "users_evaluated": len(users),
         "rows": rows, "timings_s": result.timings, "seed": settings.seed}, indent=2))
    print(f"Evaluated {len(users)} of {len(split.test)} test users (eval.max_users={settings.max_users}).")
    print(result.table())
    return result


def cached_preprocess(raw, k_core: int, cache_dir: Path) -> SequenceData:
    """:func:`~palr_core.data.preprocess`, reused from ``<cache_dir>/parsed`` when the raw data is unchanged."""
    from .datafiles import cached

    def build() -> dict:
        # one flat array, not one pickled array per user: unpickling 22k small arrays took 0.5 s
        data = preprocess(raw, k_core=k_core)
        return {"items": np.concatenate(data.sequences), "lengths": np.array([len(s) for s in data.sequences]),
                "user_ids": data.user_ids, "catalog": data.catalog, "name": data.name}

    settings = {"stage": "preprocess", "k_core": k_core, "raw": fingerprint(raw)}
    packed = cached(Path(cache_dir).expanduser(), f"{raw.name}-{k_core}core", [], settings, build)
    return SequenceData(sequences=np.split(packed["items"], np.cumsum(packed["lengths"])[:-1]),
                        user_ids=packed["user_ids"], catalog=packed["catalog"], name=packed["name"])


def _evaluation_users(n_users: int, max_users: int | None, context: RunContext) -> np.ndarray:
    if max_users is None or max_users >= n_users:
        return np.arange(n_users)
    return np.sort(context.rng(salt=1).choice(n_users, size=max_users, replace=False))


def _row(model: str, ranked: Sequence[Sequence[int]], targets: np.ndarray, ks: Sequence[int]) -> dict:
    return {"model": model, **metrics_from_ranks(rank_from_lists(ranked, targets), ks)}
