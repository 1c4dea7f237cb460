"""One experiment, top to bottom: load → preprocess → split → retrieve → profile → rank → evaluate.

:func:`run_pipeline` takes the typed run config (:class:`~palr_core.config.PalrConfig`) and a
:class:`~palr_core.plugins.Registry`; the Hydra entry point in :mod:`palr_core.cli` only composes
the config and calls it. :func:`build_components` and :func:`prepare_data` are its first steps,
public for scripts and notebooks that run part of a pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import zlib
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cached
from .components import RankRequest, RunContext, TrainingData
from .config import PalrConfig, default_cache_dir
from .data import (
    SequenceData,
    Split,
    fingerprint,
    leave_one_out_split,
    load_sequences,
    preprocess,
    save_sequences,
    save_stats,
)
from .metrics import complete_ranking, metrics_from_ranks, rank_from_lists
from .plugins import Registry

log = logging.getLogger("palr")

__all__ = ["Components", "RunResult", "build_components", "prepare_data", "run_pipeline", "seed_stage"]


@dataclass
class Components:
    """The four components of a run, built and validated, with the registered names they came from."""

    dataset: Any
    retriever: Any
    profile: Any
    ranker: Any
    names: dict[str, str]
    apis: dict[str, int]


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


def build_components(config: PalrConfig, registry: Registry) -> Components:
    """Build all four components from their config nodes (``{"name": ..., **params}``), so that a
    wrong name or option fails before any data is read or any model trained."""
    built, names, apis = {}, {}, {}
    for kind in ("dataset", "retriever", "profile", "ranker"):
        node = dict(getattr(config, kind))
        name = node.pop("name")
        built[kind] = registry.build(kind, name, node)
        names[kind], apis[kind] = name, registry.get(kind, name).api
    return Components(**built, names=names, apis=apis)


def seed_stage(seed: int, stage: str) -> None:
    """Seed Python, numpy and torch for one pipeline stage from ``(seed, stage)``.

    Every stage starts from its own seed, so its randomness never depends on what an earlier stage
    consumed (a retriever loaded instead of trained, or resumed, leaves the ranker unchanged).
    This is what ``lightning.seed_everything`` does, without importing Lightning into runs that
    train nothing; the ``PL_*`` variables make Lightning seed DataLoader workers the same way.
    """
    import torch

    value = int(np.random.SeedSequence([seed, zlib.crc32(stage.encode())]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
    os.environ["PL_GLOBAL_SEED"] = str(value)
    os.environ["PL_SEED_WORKERS"] = "1"


@contextmanager
def _stage(name: str, timings: dict[str, float], seed: int):
    """Seed the stage, log its start and record its wall-clock seconds in ``timings``."""
    log.info("%s ...", name)
    seed_stage(seed, name)
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 3)


def prepare_data(dataset, context: RunContext, k_core: int = 5, api: int = 2) -> tuple[SequenceData, Split]:
    """Load a Dataset component, preprocess it (cached under ``context.cache_dir``) and split it.

    :param api: the plugin API the dataset was written for (API 1 datasets take no context).
    """
    raw = dataset.load(context) if api >= 2 else dataset.load()
    data = cached_preprocess(raw, k_core, context.cache_dir)
    return data, leave_one_out_split(data)


def run_pipeline(config: PalrConfig, registry: Registry, work_dir: str | os.PathLike) -> RunResult:
    """Run one experiment and write ``metrics.json``, ``results.md`` and dataset statistics into ``work_dir``."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    parts = build_components(config, registry)
    context = RunContext(seed=config.seed, work_dir=work_dir, cache_dir=default_cache_dir(config.cache_dir),
                         trainer=config.trainer, profiles=parts.profile,
                         language_models=registry.language_models)
    timings: dict[str, float] = {}
    k_core, ks = config.preprocess.k_core, tuple(config.eval.ks)

    with _stage("load", timings, config.seed):
        data, split = prepare_data(parts.dataset, context, k_core, parts.apis["dataset"])
    context.catalog = data.catalog
    stats, title = data.stats, f"Dataset {data.name!r} after {k_core}-core"
    print(stats.table(title + ":"))
    save_stats(stats, work_dir / "dataset_stats", title)
    training = TrainingData(train=split.train, valid=split.valid, catalog=data.catalog)

    with _stage("fit_retriever", timings, config.seed):
        parts.retriever.fit(training, context)
    users = _evaluation_users(len(split.test), config.eval.max_users, context)
    histories = split.histories("test")
    eval_histories = [histories[u] for u in users]
    targets = split.test[users]
    n_cand = max(config.eval.candidates, max(ks))
    with _stage("retrieve", timings, config.seed):
        cand_ids, cand_scores = parts.retriever.retrieve(eval_histories, n_cand)
    retriever_name = parts.names["retriever"]
    rows = [_row(f"retriever: {retriever_name} (its own order)", cand_ids, targets, ks)]

    with _stage("profiles", timings, config.seed):
        profiles = parts.profile.generate(users.tolist(), eval_histories, context)
    with _stage("fit_ranker", timings, config.seed):
        parts.ranker.fit(training, context)
    requests = [
        RankRequest(user=int(u), history=h, candidates=np.asarray(c), candidate_scores=np.asarray(s),
                    profile=p or None)
        for u, h, c, s, p in zip(users, eval_histories, cand_ids, cand_scores, profiles)
    ]
    with _stage("rank", timings, config.seed):
        ranked = parts.ranker.rank(requests, context)
    final = [complete_ranking(r, req.candidates) for r, req in zip(ranked, requests)]
    # a ranker may name its row (e.g. "PALR v2 (llama_lora tiny, score)"), as in the paper's Table 2
    label = getattr(parts.ranker, "label", parts.names["ranker"])
    profile_name = parts.names["profile"]
    rows.append(_row(f"ranker: {label} over {retriever_name} top-{n_cand}"
                     + (f" + profile: {profile_name}" if profile_name != "none" else ""), final, targets, ks))

    result = RunResult(rows=rows, stats=stats.as_dict(), timings=timings)
    (work_dir / "results.md").write_text(result.table() + "\n")
    (work_dir / "metrics.json").write_text(json.dumps(
        {"dataset": data.name, "stats": result.stats, "users_evaluated": len(users),
         "rows": rows, "timings_s": result.timings, "seed": config.seed}, indent=2))
    print(f"Evaluated {len(users)} of {len(split.test)} test users (eval.max_users={config.eval.max_users}).")
    print(result.table())
    return result


def cached_preprocess(raw, k_core: int, cache_dir: str | os.PathLike) -> SequenceData:
    """:func:`~palr_core.data.preprocess`, reused from ``<cache_dir>/preprocessed`` when the raw data
    (its content fingerprint) and ``k_core`` are unchanged."""
    key = {"stage": "preprocess", "k_core": k_core, "raw": fingerprint(raw)}
    return cached(cache_dir, "preprocessed", f"{raw.name}-{k_core}core", key,
                  lambda: preprocess(raw, k_core=k_core), save_sequences, load_sequences)


def _evaluation_users(n_users: int, max_users: int | None, context: RunContext) -> np.ndarray:
    if max_users is None or max_users >= n_users:
        return np.arange(n_users)
    return np.sort(context.rng(1).choice(n_users, size=max_users, replace=False))  # salt 1 since palr 0.1


def _row(model: str, ranked: Sequence[Sequence[int]], targets: np.ndarray, ks: Sequence[int]) -> dict:
    return {"model": model, **metrics_from_ranks(rank_from_lists(ranked, targets), ks)}
