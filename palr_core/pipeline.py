"""One experiment, top to bottom: load → preprocess → split → retrieve → profile → rank → evaluate.

:func:`run_pipeline` takes the typed run config (:class:`~palr_core.config.PalrConfig`) and a
:class:`~palr_core.plugins.Registry`; the Hydra entry point in :mod:`palr_core.cli` only composes
the config and calls it. :func:`build_components` and :func:`prepare_data` are its first steps,
public for scripts and notebooks that run part of a pipeline.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import sys
import time
import zlib
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cached
from .components import Checkable, Labelled, PreprocessesItself, RunContext, Summarised, TrainingData, Tunable
from .config import PalrConfig, PreprocessConfig, TrainerConfig, check_options, default_cache_dir
from .data import (
    SequenceData,
    Split,
    fingerprint,
    load_sequences,
    preprocess,
    save_sequences,
    save_stats,
    split_data,
)
from .metrics import item_popularity, list_metrics, metrics_from_ranks, rank_from_lists
from .plugins import Registry
from .ranking import candidate_count, candidate_requests, rank_candidates
from .runs import (
    RANKINGS,
    RECOMMENDATIONS,
    RunFolder,
    RunFolderError,
    RunResult,
    write_rankings,
    write_recommendations,
)
from .store import fit_stage, open_store
from .tracking import RunTracker, check_tracking

log = logging.getLogger("palr")

__all__ = ["Components", "RunResult", "RunFolder", "RunFolderError", "build_components", "check_resources",
           "prepare_data", "recommend_top", "run_pipeline", "seed_stage", "write_rankings", "RANKINGS"]


@dataclass
class Components:
    """The four components of a run, built and validated, with the registered names they came from."""

    dataset: Any
    retriever: Any
    profile: Any
    ranker: Any
    names: dict[str, str]


def build_components(config: PalrConfig, registry: Registry) -> Components:
    """Build all four components from their config nodes (``{"name": ..., **params}``), so that a
    wrong name or option fails before any data is read or any model trained."""
    built, names = {}, {}
    for kind in ("dataset", "retriever", "profile", "ranker"):
        node = dict(getattr(config, kind))
        name = node.pop("name")
        built[kind] = registry.build(kind, name, node)
        names[kind] = name
    return Components(**built, names=names)


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


def peak_memory_gb() -> float:
    """This process's peak resident memory so far in GiB (``ru_maxrss``; 0 where there is none)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024**3 if sys.platform == "darwin" else 1024**2), 2)


@contextmanager
def _stage(name: str, timings: dict[str, float], seed: int, peaks: dict[str, float]):
    """Seed the stage, log its start and record its wall-clock seconds in ``timings`` and the
    process's peak memory at its end in ``peaks``."""
    log.info("%s ...", name)
    seed_stage(seed, name)
    t0 = time.perf_counter()
    try:
        yield
    except BaseException as exc:  # an error or a signal: say in which stage the run stopped
        if not hasattr(exc, "palr_stage"):
            exc.palr_stage = name
        raise
    timings[name] = round(time.perf_counter() - t0, 3)
    peaks[name] = peak_memory_gb()


def prepare_data(dataset, context: RunContext, settings: int | PreprocessConfig = 5) -> tuple[SequenceData, Split]:
    """Load a Dataset component, preprocess it (cached under ``context.cache_dir``) and split it.

    :param settings: the ``preprocess`` group, or a k-core threshold alone (leave-one-out).
    """
    settings = settings if isinstance(settings, PreprocessConfig) else PreprocessConfig(k_core=settings)
    data = dataset.load_sequences(settings.k_core, context) if isinstance(dataset, PreprocessesItself) else None
    if data is None:
        data = cached_preprocess(dataset.load(context), settings.k_core, context.cache_dir)
    split = split_data(data, settings.split, settings.valid_fraction, settings.test_fraction)
    if split.cuts is not None:
        log.info("temporal split: validation window from time %s, test window from %s: %d training rows "
                 "(%d with a validation item), %d test users", split.cuts["valid"], split.cuts["test"],
                 len(split.train), len(split.validation_rows()), len(split.test))
    return data, split


def run_pipeline(config: PalrConfig, registry: Registry, work_dir: str | os.PathLike) -> RunResult:
    """Run one experiment and write ``metrics.json``, ``results.md`` and dataset statistics into ``work_dir``.

    Everything that can be checked is checked before the first stage: every option's range, every
    component's options, the devices and the resources components declare (:func:`check_resources`).
    The folder is the run's (:class:`RunFolder`): an interrupted run started again in it resumes, a
    finished one is read back without any work, and another run's folder is refused by name.
    """
    check_options(config, "")
    parts = build_components(config, registry)
    context = RunContext(seed=config.seed, work_dir=Path(work_dir), cache_dir=default_cache_dir(config.cache_dir),
                         trainer=config.trainer, profiles=parts.profile,
                         language_models=registry.language_models)
    check_resources(parts, context)
    if config.eval.rank_processes > 1:
        from .parallel import check_rank_processes

        if context.trainer.accelerator in ("gpu", "cuda", "mps"):
            raise ValueError(f"eval.rank_processes={config.eval.rank_processes} forks CPU processes to rank; "
                             f"with trainer.accelerator={context.trainer.accelerator} set eval.rank_processes=1")
        check_rank_processes(config.eval.rank_processes)
    use_threads(config.trainer)
    with RunFolder(work_dir, config) as folder:
        if folder.finished():
            seed_stage(config.seed, "load")  # the data it finished on must still be the data: else refused
            folder.check_data(prepare_data(parts.dataset, context, config.preprocess)[0])
            result = folder.result()
            print(f"{folder.path} holds this run, finished: its results (nothing was trained or evaluated again)")
            print(result.table())
            return result
        tracker = RunTracker(config, folder.path, folder.record())
        folder.remember(tracker.start())
        try:
            result = _run_stages(config, parts, context, folder)
        except BaseException:
            tracker.fail()
            raise
        result.run_dir = folder.path
        folder.finish(result, config.seed)
        tracker.finish(result)
    logging.getLogger("palr.results").info("results of %s\n%s", folder.path, result.table())
    print(f"Evaluated {result.users} of {result.stats['users']} test users (eval.max_users={config.eval.max_users}).")
    print(result.table())
    curves = training_curves(folder.path)
    if curves:
        print("Per-epoch training curves (loss and validation metric per epoch): "
              + ", ".join(str(c.relative_to(folder.path)) for c in curves))
    return result


def training_curves(run_dir: Path) -> list[Path]:
    """The CSV logs of every training in a run folder (``<training>/logs/version_N/metrics.csv``)."""
    return sorted(Path(run_dir).glob("*/logs/version_*/metrics.csv"))


def _run_stages(config: PalrConfig, parts: Components, context: RunContext, folder: RunFolder) -> RunResult:
    work_dir, timings, peaks = context.work_dir, {}, {}
    k_core, ks = config.preprocess.k_core, tuple(config.eval.ks)

    with _stage("load", timings, config.seed, peaks):
        data, split = prepare_data(parts.dataset, context, config.preprocess)
    folder.check_data(data)
    context.catalog = data.catalog
    stats, title = data.stats, f"Dataset {data.name!r} after {k_core}-core"
    print(stats.table(title + ":"))
    save_stats(stats, work_dir / "dataset_stats", title)
    training = TrainingData(train=split.train, valid=split.valid, catalog=data.catalog)

    store = open_store(config.store, context.cache_dir)
    with _stage("fit_retriever", timings, config.seed, peaks):  # or read from the store of trained stages
        retriever_key = fit_stage(parts.retriever, "retriever", training, context, store)
    rows = _evaluation_users(len(split.test), config.eval.max_users, context)  # test rows (leave-one-out: users)
    users = split.user_of("test", rows)
    histories = split.histories("test")
    eval_histories = [histories[r] for r in rows]
    targets = split.test[rows]
    n_cand = candidate_count(config.eval)
    retriever_name = parts.names["retriever"]
    with _stage("validate", timings, config.seed, peaks):  # never the test item: the prefix predicts the validation item
        valid_rows = rows if split.valid_rows is None else _sample(split.validation_rows(), config.eval.max_users,
                                                                   context, "validation users")
        valid_ids, _ = parts.retriever.retrieve([split.train[r] for r in valid_rows], max(ks))
        validation = metrics_from_ranks(rank_from_lists(valid_ids, split.valid[valid_rows]), ks)
    log.info("retriever on the validation items: %s", ", ".join(f"{k} {v:.4f}" for k, v in validation.items()))
    requests = candidate_requests(users.tolist(), eval_histories, parts.retriever, parts.profile, context, n_cand,
                                  stage=functools.partial(_stage, timings=timings, seed=config.seed, peaks=peaks))
    cand_ids = np.stack([r.candidates for r in requests])
    cand_scores = np.stack([r.candidate_scores for r in requests])
    counts = item_popularity(split.train, data.num_items)  # what AvgPop@K counts: training interactions
    rows = [_row(f"retriever: {retriever_name} (its own order)", cand_ids, targets, ks, counts)]

    with _stage("fit_ranker", timings, config.seed, peaks):  # its key holds the retriever's (or its settings)
        upstream = {"retriever": retriever_key or [parts.names["retriever"], config.retriever]}
        fit_stage(parts.ranker, "ranker", training, context, store, upstream)
    tuning = {}
    if isinstance(parts.ranker, Tunable):
        with _stage("tune_ranker", timings, config.seed, peaks):
            tuning = tune_ranker(parts, split, config, context)
    with _stage("rank", timings, config.seed, peaks):
        final = rank_candidates(parts.ranker, requests, context, parts.names["ranker"], config.eval.rank_processes)
    write_rankings(work_dir / RANKINGS, data, users, targets, cand_ids, cand_scores, final)
    # a ranker may name its row (e.g. "PALR v2 (llama_lora tiny, score)"), as in the paper's Table 2
    label = parts.ranker.label if isinstance(parts.ranker, Labelled) else parts.names["ranker"]
    if config.recommend.precompute:  # palr recommend answers these users from the file, loading no model
        with _stage("recommend", timings, config.seed, peaks):
            k = config.recommend.k
            answers = recommend_top(parts, data, users.tolist(), k, config, context, config.eval.rank_processes)
            write_recommendations(work_dir / RECOMMENDATIONS, data, users.tolist(), answers,
                                  {"ranker": label, "retriever": retriever_name, "k": k,
                                   "candidates": max(n_cand, k), "eval_candidates": n_cand})
    profiled = any(r.profile for r in requests)  # a generator that wrote no profile adds nothing to the prompt
    rows.append(_row(f"ranker: {label} over {retriever_name} top-{n_cand}"
                     + (f" + profile: {parts.names['profile']}" if profiled else ""), final, targets, ks, counts))
    training = {role: summary for role, summary in (("retriever", fit_summary(parts.retriever)),
                                                    ("ranker", fit_summary(parts.ranker))) if summary}
    return RunResult(rows=rows, stats=stats.as_dict(), timings=timings, dataset=data.name, users=len(users),
                     validation=validation, tuning=tuning, peak_memory_gb=peaks, training=training)


def recommend_top(parts: Components, data: SequenceData, users: Sequence[int], k: int, config: PalrConfig,
                  context: RunContext, processes: int = 1) -> list[list[tuple[int, int, float]]]:
    """Each user's top ``k`` after their *whole* history (``users``: indices into ``data``), as
    ``palr recommend`` and :meth:`palr.LoadedRun.recommend` give it: ``(item index, retriever rank
    from 1, retriever score)`` per item, best first.

    The retriever hands the ranker ``max(eval candidates, k)`` items, fewer only where the catalogue
    minus the user's history is smaller, so that a user's answer never depends on who is asked
    with them. Each step is seeded as the pipeline seeds its stage of that name.
    """
    wanted = max(candidate_count(config.eval), k)
    sizes = [min(wanted, max(1, len(data.catalog) - len(data.sequences[u]))) for u in users]
    answers: list = [None] * len(users)
    for size in sorted(set(sizes), reverse=True):  # one group unless some history nearly fills the catalogue
        group = [i for i, s in enumerate(sizes) if s == size]
        requests = candidate_requests([users[i] for i in group], [data.sequences[users[i]] for i in group],
                                      parts.retriever, parts.profile, context, size,
                                      stage=functools.partial(_seeded, config.seed))
        seed_stage(config.seed, "rank")
        ranked = rank_candidates(parts.ranker, requests, context, parts.names["ranker"], processes)
        for i, request, order in zip(group, requests, ranked):
            position = {int(c): p for p, c in enumerate(request.candidates)}
            answers[i] = [(item, position[item] + 1, float(request.candidate_scores[position[item]]))
                          for item in order[:k]]
    return answers


@contextmanager
def _seeded(seed: int, stage: str):
    """Seed a step as the pipeline seeds its stage of that name, so a recommendation repeats the run's."""
    seed_stage(seed, stage)
    yield


def fit_summary(component) -> dict:
    """A component's optional ``fit_summary`` (a dict saying what its training did), as plain JSON
    values; ``{}`` when it has none."""
    summary = component.fit_summary if isinstance(component, Summarised) else None
    if not isinstance(summary, dict):
        return {}
    return json.loads(json.dumps(summary, default=str))


def tune_ranker(parts: Components, split: Split, config: PalrConfig, context: RunContext) -> dict:
    """Let the ranker choose its own settings (``tune(requests, targets, context)``) on validation items:
    a seeded sample of ``eval.tune_users`` users (unset: 200, or ``eval.max_users`` when smaller),
    their training prefix as history, the retriever's candidates for it, and their validation item
    as the target. The test item is never shown."""
    rows = _sample(split.validation_rows(), config.eval.tuning_users(), context, "tune users")
    requests = candidate_requests(split.user_of("valid", rows).tolist(), [split.train[r] for r in rows],
                                  parts.retriever, parts.profile, context, candidate_count(config.eval))
    return parts.ranker.tune(requests, split.valid[rows], context) or {}


def use_threads(trainer: TrainerConfig) -> int:
    """Set torch's CPU threads once for the run (``trainer.threads``) and return the number."""
    import torch

    threads = trainer.cpu_threads()
    torch.set_num_threads(threads)
    log.info("torch uses %d CPU thread(s) (trainer.threads=%s)", threads, trainer.threads)
    return threads


def check_resources(parts: Components, context: RunContext) -> None:
    """What a run needs from the machine, before the first stage: the ``trainer`` group's devices,
    and whatever a component checks in its optional ``check(context)`` (a model file, an adapter)."""
    check_tracking(context.trainer)
    _check_strategy(context.trainer)
    accelerator = context.trainer.accelerator
    if accelerator in ("gpu", "cuda", "mps"):
        import torch

        visible = (torch.cuda.device_count() if accelerator != "mps"
                   else int(torch.backends.mps.is_available()))
        if visible == 0:
            raise ValueError(f"trainer.accelerator={accelerator}, but torch sees no {accelerator.upper()} device "
                             "on this machine: use trainer=cpu (or trainer.accelerator=cpu)")
        devices = context.trainer.devices
        if isinstance(devices, int) and devices > visible:
            raise ValueError(f"trainer.devices={devices}, but torch sees {visible} {accelerator.upper()} device(s)")
    for kind in ("dataset", "retriever", "profile", "ranker"):
        component = getattr(parts, kind)
        if isinstance(component, Checkable):
            component.check(context)


#: Lightning strategies that start their other processes from the command line again (torchrun-style)
_RELAUNCHING = ("ddp", "fsdp", "deepspeed")
_SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")


def _check_strategy(trainer: TrainerConfig) -> None:
    """Refuse a multi-process strategy whose extra processes would run the whole ``palr-run``
    command again (each its own pipeline in the same folder): palr trains data-parallel through
    the strategies that spawn or fork its processes from inside the training call."""
    strategy = str(trainer.strategy)
    if trainer.devices == 1 or not strategy.startswith(_RELAUNCHING) or strategy.startswith(_SPAWNING):
        return
    instead = ("trainer.strategy=ddp_spawn (what trainer=ddp sets)" if strategy.startswith("ddp")
               else "trainer=ddp (ddp_spawn: data parallel, the model replicated on every device)")
    raise ValueError(f"trainer.strategy={strategy} starts its other processes by running the palr-run command "
                     f"again, which would run the whole pipeline once per process; use {instead}")


def cached_preprocess(raw, k_core: int, cache_dir: str | os.PathLike) -> SequenceData:
    """:func:`~palr_core.data.preprocess`, reused from ``<cache_dir>/preprocessed`` when the raw data
    (its content fingerprint) and ``k_core`` are unchanged."""
    # "timestamps": entries written before SequenceData kept each interaction's time are not reused
    key = {"stage": "preprocess", "k_core": k_core, "raw": fingerprint(raw), "timestamps": True}
    return cached(cache_dir, "preprocessed", f"{raw.name}-{k_core}core", key,
                  lambda: preprocess(raw, k_core=k_core), save_sequences, load_sequences)


def _evaluation_users(n_users: int, max_users: int | None, context: RunContext, salt: int | str = 1) -> np.ndarray:
    """All users, or a sorted seeded sample of ``max_users`` of them (salt 1: the test users since palr 0.1)."""
    if max_users is None or max_users >= n_users:
        return np.arange(n_users)
    return np.sort(context.rng(salt).choice(n_users, size=max_users, replace=False))


def _sample(rows: np.ndarray, size: int | None, context: RunContext, salt: str) -> np.ndarray:
    """``rows``, or a sorted seeded sample of ``size`` of them (as :func:`_evaluation_users` draws
    positions, so for ``rows = 0..n-1`` the same users as before)."""
    return rows[_evaluation_users(len(rows), size, context, salt=salt)]


def _row(model: str, ranked: Sequence[Sequence[int]], targets: np.ndarray, ks: Sequence[int],
         counts: np.ndarray) -> dict:
    """A results row: HR@K and NDCG@K first (the keys readers of ``metrics.json`` know), then MRR@K,
    catalogue coverage and average popularity of the top K (:func:`~palr_core.metrics.list_metrics`)."""
    return {"model": model, **list_metrics(ranked, targets, ks, counts)}
