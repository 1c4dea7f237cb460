"""One experiment, top to bottom: load → preprocess → split → retrieve → profile → rank → evaluate.

:func:`run_pipeline` takes the typed run config (:class:`~palr_core.config.PalrConfig`) and a
:class:`~palr_core.plugins.Registry`; the Hydra entry point in :mod:`palr_core.cli` only composes
the config and calls it. :func:`build_components` and :func:`prepare_data` are its first steps,
public for scripts and notebooks that run part of a pipeline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import random
import sys
import time
import zlib
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cache import cached
from .components import RankRequest, RunContext, TrainingData
from .config import PalrConfig, TrainerConfig, check_options, default_cache_dir
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
from .tracking import RunTracker, check_tracking

log = logging.getLogger("palr")

__all__ = ["Components", "RunResult", "RunFolder", "RunFolderError", "build_components", "check_resources",
           "prepare_data", "run_pipeline", "seed_stage", "write_rankings", "RANKINGS"]


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
    """A finished run: its results table, dataset statistics, stage times and folder.

    :param rows: one dict per model: ``model`` (the row's name) and ``HR@K``/``NDCG@K``.
    :param stats: the dataset after preprocessing (users, items, interactions).
    :param timings: wall-clock seconds per stage.
    :param peak_memory_gb: the process's peak resident memory (GiB) at the end of each stage: a
        high-water mark, so a stage's value covers every stage before it too.
    :param training: what each component's training did, by role (``retriever``, ``ranker``): its
        ``fit_summary`` dict where it has one (epochs, what stopped it, examples, tokens, ...).
    :param users: how many test users were evaluated.
    :param run_dir: the run folder (``metrics.json``, ``rankings.parquet``, checkpoints).
    :param validation: the retriever's metrics on the same users' validation items (history: the
        training prefix), the number to choose settings by (``objective=validation/NDCG@10``).
    """

    rows: list[dict]
    stats: dict
    timings: dict[str, float]
    dataset: str = ""
    users: int = 0
    run_dir: Path | None = None
    validation: dict[str, float] = field(default_factory=dict)
    tuning: dict = field(default_factory=dict)
    peak_memory_gb: dict[str, float] = field(default_factory=dict)
    training: dict[str, dict] = field(default_factory=dict)

    def metrics(self, role: str = "ranker") -> dict[str, float]:
        """The ``retriever`` or ``ranker`` row's metrics, e.g. ``result.metrics()["NDCG@10"]``."""
        for row in self.rows:
            if row["model"].split(":", 1)[0] == role:
                return {k: v for k, v in row.items() if k != "model"}
        raise KeyError(f"no {role!r} row in this result (rows: {[r['model'] for r in self.rows]})")

    def table(self) -> str:
        """The results as a markdown table, one row per model (the shape of the paper's Table 2)."""
        metric_keys = [k for k in self.rows[0] if k.startswith(("HR@", "NDCG@"))]
        lines = ["| model | " + " | ".join(metric_keys) + " |",
                 "|---|" + "---:|" * len(metric_keys)]
        for row in self.rows:
            lines.append(f"| {row['model']} | " + " | ".join(f"{row[k]:.4f}" for k in metric_keys) + " |")
        chosen = {k: v for k, v in self.tuning.items() if not isinstance(v, (dict, list))}
        if chosen:  # what the ranker chose on validation items (its tune()): why its row reads as it does
            lines.append("\nThe ranker's choice on validation items: "
                         + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items()))
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
    yield
    timings[name] = round(time.perf_counter() - t0, 3)
    peaks[name] = peak_memory_gb()


def prepare_data(dataset, context: RunContext, k_core: int = 5, api: int = 2) -> tuple[SequenceData, Split]:
    """Load a Dataset component, preprocess it (cached under ``context.cache_dir``) and split it.

    :param api: the plugin API the dataset was written for (API 1 datasets take no context).
    """
    raw = dataset.load(context) if api >= 2 else dataset.load()
    data = cached_preprocess(raw, k_core, context.cache_dir)
    return data, leave_one_out_split(data)


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
    use_threads(config.trainer)
    with RunFolder(work_dir, config) as folder:
        if folder.finished():
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
    return result


def _run_stages(config: PalrConfig, parts: Components, context: RunContext, folder: RunFolder) -> RunResult:
    work_dir, timings, peaks = context.work_dir, {}, {}
    k_core, ks = config.preprocess.k_core, tuple(config.eval.ks)

    with _stage("load", timings, config.seed, peaks):
        data, split = prepare_data(parts.dataset, context, k_core, parts.apis["dataset"])
    folder.check_data(data)
    context.catalog = data.catalog
    stats, title = data.stats, f"Dataset {data.name!r} after {k_core}-core"
    print(stats.table(title + ":"))
    save_stats(stats, work_dir / "dataset_stats", title)
    training = TrainingData(train=split.train, valid=split.valid, catalog=data.catalog)

    with _stage("fit_retriever", timings, config.seed, peaks):
        parts.retriever.fit(training, context)
    users = _evaluation_users(len(split.test), config.eval.max_users, context)
    histories = split.histories("test")
    eval_histories = [histories[u] for u in users]
    targets = split.test[users]
    n_cand = max(config.eval.candidates, max(ks))
    with _stage("retrieve", timings, config.seed, peaks):
        cand_ids, cand_scores = parts.retriever.retrieve(eval_histories, n_cand)
    retriever_name = parts.names["retriever"]
    rows = [_row(f"retriever: {retriever_name} (its own order)", cand_ids, targets, ks)]
    with _stage("validate", timings, config.seed, peaks):  # never the test item: the prefix predicts the validation item
        valid_ids, _ = parts.retriever.retrieve([split.train[u] for u in users], max(ks))
        validation = metrics_from_ranks(rank_from_lists(valid_ids, split.valid[users]), ks)
    log.info("retriever on the validation items: %s", ", ".join(f"{k} {v:.4f}" for k, v in validation.items()))

    with _stage("profiles", timings, config.seed, peaks):
        profiles = parts.profile.generate(users.tolist(), eval_histories, context)
    with _stage("fit_ranker", timings, config.seed, peaks):
        parts.ranker.fit(training, context)
    tuning = {}
    if callable(getattr(parts.ranker, "tune", None)):
        with _stage("tune_ranker", timings, config.seed, peaks):
            tuning = _tune_ranker(parts, split, config, context, n_cand)
    requests = [
        RankRequest(user=int(u), history=h, candidates=np.asarray(c), candidate_scores=np.asarray(s),
                    profile=p or None)
        for u, h, c, s, p in zip(users, eval_histories, cand_ids, cand_scores, profiles)
    ]
    with _stage("rank", timings, config.seed, peaks):
        ranked = parts.ranker.rank(requests, context)
    final = [complete_ranking(r, req.candidates) for r, req in zip(ranked, requests)]
    write_rankings(work_dir / RANKINGS, data, users, targets, cand_ids, cand_scores, final)
    # a ranker may name its row (e.g. "PALR v2 (llama_lora tiny, score)"), as in the paper's Table 2
    label = getattr(parts.ranker, "label", parts.names["ranker"])
    profile_name = parts.names["profile"]
    rows.append(_row(f"ranker: {label} over {retriever_name} top-{n_cand}"
                     + (f" + profile: {profile_name}" if profile_name != "none" else ""), final, targets, ks))
    training = {role: summary for role, summary in (("retriever", fit_summary(parts.retriever)),
                                                    ("ranker", fit_summary(parts.ranker))) if summary}
    return RunResult(rows=rows, stats=stats.as_dict(), timings=timings, dataset=data.name, users=len(users),
                     validation=validation, tuning=tuning, peak_memory_gb=peaks, training=training)


def fit_summary(component) -> dict:
    """A component's optional ``fit_summary`` (a dict saying what its training did), as plain JSON
    values; ``{}`` when it has none."""
    summary = getattr(component, "fit_summary", None)
    if not isinstance(summary, dict):
        return {}
    return json.loads(json.dumps(summary, default=str))


def _tune_ranker(parts: Components, split: Split, config: PalrConfig, context: RunContext, n_cand: int) -> dict:
    """Let the ranker choose its own settings (``tune(requests, targets, context)``) on validation items:
    a seeded sample of ``eval.tune_users`` users, their training prefix as history, the retriever's
    candidates for it, and their validation item as the target. The test item is never shown."""
    users = _evaluation_users(len(split.valid), config.eval.tune_users, context, salt="tune users")
    histories = [split.train[u] for u in users]
    ids, scores = parts.retriever.retrieve(histories, n_cand)
    profiles = parts.profile.generate(users.tolist(), histories, context)
    requests = [RankRequest(user=int(u), history=h, candidates=np.asarray(c), candidate_scores=np.asarray(s),
                            profile=p or None) for u, h, c, s, p in zip(users, histories, ids, scores, profiles)]
    return parts.ranker.tune(requests, split.valid[users], context) or {}


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
        check = getattr(getattr(parts, kind), "check", None)
        if callable(check):
            check(context)


class RunFolderError(RuntimeError):
    """A run folder that holds another run, or that another palr process is using."""


class RunFolder:
    """A run's folder: locked while the run works in it, and marked with what the run is.

    ``run.json`` records the run's settings (progress bars, worker counts and the cache folder
    left out) and its data's fingerprint. A run started again in its own folder resumes what was
    interrupted, or reads back a finished run's ``metrics.json``; a folder of another run (another
    seed, option or dataset) is refused with what differs, so checkpoints never mix. A second
    process on the same folder is refused while the first holds its lock (released on any exit).
    """

    VOLATILE = {"cache_dir", "progress", "objective", *TrainerConfig.OBSERVATION}

    def __init__(self, path: str | os.PathLike, config: PalrConfig) -> None:
        self.path = Path(path)
        self.config = dataclasses.asdict(config)
        # as the settings read back from run.json (tuples become lists), so that equal means equal
        self.settings = json.loads(json.dumps(self._settings(self.config), default=str))
        self._lock = None

    def _settings(self, node):
        if isinstance(node, dict):
            return {k: self._settings(v) for k, v in node.items() if k not in self.VOLATILE}
        return node

    def __enter__(self) -> RunFolder:
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".palr.lock", "a+")  # noqa: SIM115 (held for the run's lifetime)
        try:
            import fcntl

            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no advisory locks on this platform
            pass
        except BlockingIOError:
            self._lock.close()
            raise RunFolderError(f"{self.path} is in use by another palr run right now; give this run its "
                                 "own folder (hydra.run.dir=...)") from None
        record = self._record()
        differs = [] if record is None else _differences(record.get("settings"), self.settings, defaults=self._defaults())
        if record is None:
            self._write({"settings": self.settings})
        elif differs:
            raise RunFolderError(f"{self.path} holds another run (it differs in {', '.join(differs)}); continuing "
                                 "there would mix two runs: use another folder (hydra.run.dir=...) or delete it")
        from omegaconf import OmegaConf

        (self.path / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(self.config)))
        return self

    def _defaults(self) -> dict:
        """palr's own settings at their defaults: a folder written before an option existed holds
        no value for it, which matches the default."""
        blank = PalrConfig(**{kind: {} for kind in ("dataset", "retriever", "profile", "ranker")})
        return self._settings(json.loads(json.dumps(dataclasses.asdict(blank), default=str)))

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the lock

    def _record(self) -> dict | None:
        file = self.path / "run.json"
        return json.loads(file.read_text()) if file.is_file() else None

    def record(self) -> dict:
        """What ``run.json`` holds: ``settings``, ``data`` (fingerprint), ``finished``, tracker ids."""
        return self._record() or {}

    def remember(self, entries: dict) -> None:
        """Add ``entries`` to ``run.json`` (e.g. the run's MLflow id, so a resumed run continues it)."""
        if entries:
            self._write({**self.record(), **entries})

    def _write(self, record: dict) -> None:
        tmp = self.path / "run.json.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        tmp.replace(self.path / "run.json")

    @staticmethod
    def data_fingerprint(data: SequenceData) -> str:
        """What identifies a run's data: its sequences and item ids."""
        digest = hashlib.sha256()
        for sequence in data.sequences:
            digest.update(np.ascontiguousarray(sequence, dtype=np.int64).tobytes() + b"|")
        digest.update(json.dumps([str(i) for i in data.catalog.ids]).encode())
        return digest.hexdigest()

    def check_data(self, data: SequenceData) -> None:
        """Record the data's fingerprint, or refuse when the folder's run used other data."""
        fingerprint = self.data_fingerprint(data)
        record = self._record() or {}
        if record.get("data") not in (None, fingerprint):
            raise RunFolderError(f"{self.path} holds a run on other data (the same settings, but the dataset's "
                                 "files changed since); use another folder or delete it")
        self._write({**record, "data": fingerprint})

    def finished(self) -> bool:
        return bool((self._record() or {}).get("finished")) and (self.path / "metrics.json").is_file()

    def result(self) -> RunResult:
        saved = json.loads((self.path / "metrics.json").read_text())
        return RunResult(rows=saved["rows"], stats=saved["stats"], timings=saved["timings_s"],
                         dataset=saved["dataset"], users=saved["users_evaluated"], run_dir=self.path,
                         validation=saved.get("validation", {}).get("retriever", {}),
                         tuning=saved.get("validation", {}).get("ranker", {}),
                         peak_memory_gb=saved.get("peak_memory_gb", {}), training=saved.get("training", {}))

    def finish(self, result: RunResult, seed: int) -> None:
        """Write the results, then mark the run finished (a crash in between leaves it resumable)."""
        (self.path / "results.md").write_text(result.table() + "\n")
        metrics = {"dataset": result.dataset, "stats": result.stats, "users_evaluated": result.users,
                   "rows": result.rows, "validation": {"retriever": result.validation,
                                                            **({"ranker": result.tuning} if result.tuning else {})},
                   "training": result.training, "timings_s": result.timings, "peak_memory_gb": result.peak_memory_gb,
                   "seed": seed}
        (self.path / "metrics.json").write_text(json.dumps(_finite(metrics), indent=2, allow_nan=False))
        self._write({**(self._record() or {}), "finished": True})


_ABSENT = object()


def _differences(old, new, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """Dotted paths whose values differ, e.g. ``seed (1 -> 2)``. With ``defaults``, a key missing
    from ``old`` whose new value is its default is no difference (an option added since)."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            below = defaults.get(key, {}) if isinstance(defaults, dict) else None
            if key not in old and isinstance(defaults, dict) and defaults.get(key, _ABSENT) == new.get(key):
                continue
            found += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else key,
                                  below if defaults is not None else None)
        return found
    return [] if old == new else [f"{prefix} ({old!r} -> {new!r})"]


def _finite(value):
    """NaN and infinities as ``null``, so ``metrics.json`` is always valid JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def cached_preprocess(raw, k_core: int, cache_dir: str | os.PathLike) -> SequenceData:
    """:func:`~palr_core.data.preprocess`, reused from ``<cache_dir>/preprocessed`` when the raw data
    (its content fingerprint) and ``k_core`` are unchanged."""
    key = {"stage": "preprocess", "k_core": k_core, "raw": fingerprint(raw)}
    return cached(cache_dir, "preprocessed", f"{raw.name}-{k_core}core", key,
                  lambda: preprocess(raw, k_core=k_core), save_sequences, load_sequences)


#: every evaluated user's ranked candidates, written by each run (``palr export`` converts it)
RANKINGS = "rankings.parquet"


def write_rankings(path: Path, data: SequenceData, users: np.ndarray, targets: np.ndarray, candidates: np.ndarray,
                   scores: np.ndarray, final: Sequence[Sequence[int]]) -> None:
    """One row per evaluated user and candidate, in the ranker's order: ``user`` and ``item`` (the
    dataset's own ids), ``rank`` (the ranker's, from 1), ``title``, ``retriever_rank``,
    ``retriever_score`` and ``held_out`` (the user's test item)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, list] = {k: [] for k in ("user", "rank", "item", "title", "retriever_rank",
                                                 "retriever_score", "held_out")}
    catalog = data.catalog
    for user, target, cands, cand_scores, order in zip(users, targets, candidates, scores, final):
        position = {int(item): i for i, item in enumerate(cands)}
        for rank, item in enumerate(order, start=1):
            columns["user"].append(data.user_ids[int(user)])
            columns["rank"].append(rank)
            columns["item"].append(catalog.ids[item])
            columns["title"].append(catalog.titles[item])
            columns["retriever_rank"].append(position[item] + 1)
            columns["retriever_score"].append(float(cand_scores[position[item]]))
            columns["held_out"].append(item == int(target))
    table = pa.table({"user": _id_column(columns["user"]), "rank": pa.array(columns["rank"], pa.int32()),
                      "item": _id_column(columns["item"]), "title": pa.array(columns["title"], pa.string()),
                      "retriever_rank": pa.array(columns["retriever_rank"], pa.int32()),
                      "retriever_score": pa.array(columns["retriever_score"], pa.float32()),
                      "held_out": pa.array(columns["held_out"], pa.bool_())})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _id_column(ids: list):
    """Dataset ids as one Arrow type: integers stay integers, anything else becomes text."""
    import pyarrow as pa

    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        return pa.array([int(i) for i in ids], pa.int64())
    return pa.array([str(i) for i in ids], pa.string())


def _evaluation_users(n_users: int, max_users: int | None, context: RunContext, salt: int | str = 1) -> np.ndarray:
    """All users, or a sorted seeded sample of ``max_users`` of them (salt 1: the test users since palr 0.1)."""
    if max_users is None or max_users >= n_users:
        return np.arange(n_users)
    return np.sort(context.rng(salt).choice(n_users, size=max_users, replace=False))


def _row(model: str, ranked: Sequence[Sequence[int]], targets: np.ndarray, ks: Sequence[int]) -> dict:
    return {"model": model, **metrics_from_ranks(rank_from_lists(ranked, targets), ks)}
