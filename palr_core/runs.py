"""A run's folder and what a finished run leaves in it: the results (:class:`RunResult`,
``metrics.json``, ``results.md``), the ranked lists (``rankings.parquet``), the answers ``palr
recommend`` reads (``recommendations.parquet``) and the folder's record
(``run.json``: settings, data fingerprint, finished), with the lock that keeps two processes out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import write_atomic, write_with
from .config import PalrConfig, TrainerConfig
from .data import SequenceData
from .result_files import FINISHED_RUN_KEYS, RANKING_TYPES, RECOMMENDATION_TYPES, markdown_cell, read_metrics

__all__ = ["RunResult", "RunFolder", "RunFolderError", "RANKINGS", "RANKING_COLUMNS", "RECOMMENDATIONS", "RUN_FILES",
           "write_rankings", "write_recommendations"]


@dataclass
class RunResult:
    """A finished run: its results table, dataset statistics, stage times and folder.

    :param rows: one dict per model: ``model`` (the row's name), ``HR@K``/``NDCG@K``, then
        ``MRR@K``, ``Coverage@K`` and ``AvgPop@K`` (:mod:`palr_core.metrics`).
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
        metric_keys = [k for k in self.rows[0] if k != "model"]  # HR, NDCG, MRR, Coverage, AvgPop @K
        lines = ["| model | " + " | ".join(map(markdown_cell, metric_keys)) + " |",
                 "|---|" + "---:|" * len(metric_keys)]
        for row in self.rows:
            lines.append(f"| {markdown_cell(row['model'])} | " + " | ".join(f"{row[k]:.4f}" for k in metric_keys) + " |")
        chosen = {k: v for k, v in self.tuning.items() if not isinstance(v, (dict, list))}
        if chosen:  # what the ranker chose on validation items (its tune()): why its row reads as it does
            lines.append("\nThe ranker's choice on validation items: "
                         + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in chosen.items()))
        return "\n".join(lines)


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

    VOLATILE = {"cache_dir", "store", "progress", "objective", "rank_processes", *TrainerConfig.OBSERVATION}

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
        # held for the run's lifetime; O_NOFOLLOW: a link planted as the lock is refused, not opened
        try:
            self._lock = os.fdopen(os.open(self.path / ".palr.lock", os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644), "r+")
        except OSError as exc:
            raise RunFolderError(f"{self.path / '.palr.lock'}: cannot open the run folder's lock ({exc.strerror}); "
                                 "is it a symbolic link? remove it") from None
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

        write_atomic(self.path / "config_resolved.yaml", OmegaConf.to_yaml(OmegaConf.create(self.config)), self.path)
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
        write_atomic(self.path / "run.json", json.dumps(record, indent=1, default=str), self.path)

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
        saved = read_metrics(self.path / "metrics.json", FINISHED_RUN_KEYS)  # a file edited since: one named line
        return RunResult(rows=saved["rows"], stats=saved["stats"], timings=saved["timings_s"],
                         dataset=saved["dataset"], users=saved["users_evaluated"], run_dir=self.path,
                         validation=saved.get("validation", {}).get("retriever", {}),
                         tuning=saved.get("validation", {}).get("ranker", {}),
                         peak_memory_gb=saved.get("peak_memory_gb", {}), training=saved.get("training", {}))

    def finish(self, result: RunResult, seed: int) -> None:
        """Write the results, then mark the run finished (a crash in between leaves it resumable)."""
        write_atomic(self.path / "results.md", result.table() + "\n", self.path)
        metrics = {"dataset": result.dataset, "stats": result.stats, "users_evaluated": result.users,
                   "rows": result.rows, "validation": {"retriever": result.validation,
                                                            **({"ranker": result.tuning} if result.tuning else {})},
                   "training": result.training, "timings_s": result.timings, "peak_memory_gb": result.peak_memory_gb,
                   "seed": seed}
        write_atomic(self.path / "metrics.json", json.dumps(_finite(metrics), indent=2, allow_nan=False), self.path)
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


#: the columns of ``rankings.parquet``, in order
RANKING_COLUMNS = list(RANKING_TYPES)
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
    write_with(path, lambda tmp: pq.write_table(table, tmp), path.parent)


#: each precomputed user's top K after their whole history (``recommend.precompute``), read by ``palr recommend``
RECOMMENDATIONS = "recommendations.parquet"

#: what a run writes at the top of its folder (its models, checkpoints and logs are in subfolders):
#: files that ``palr export`` and other writers given a path must never replace
RUN_FILES = ("run.json", "config_resolved.yaml", "metrics.json", "results.md", RANKINGS, RECOMMENDATIONS,
             "dataset_stats.json", "dataset_stats.md", "palr.log", ".palr.lock")


def write_recommendations(path: Path, data: SequenceData, users: Sequence[int], answers: Sequence[Sequence[tuple]],
                          about: dict) -> None:
    """One row per user and recommended item (``users``: indices into ``data``; ``answers``: each
    user's ``(item index, retriever rank, retriever score)``, best first), with the user's history
    length and last title; ``about`` (:data:`~palr_core.result_files.RECOMMENDATION_META`) goes
    into the schema's metadata. Rows are in the data's user order, in row groups of at most
    65,536 rows, so that reading a few users skips most of a large file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    catalog, columns = data.catalog, {k: [] for k in RECOMMENDATION_TYPES}
    order = np.argsort(np.asarray(users, dtype=np.int64), kind="stable")
    for position in order:
        user = int(users[position])
        history = data.sequences[user]
        for rank, (item, retriever_rank, score) in enumerate(answers[position], start=1):
            columns["user"].append(data.user_ids[user])
            columns["rank"].append(rank)
            columns["item"].append(catalog.ids[item])
            columns["title"].append(catalog.titles[item])
            columns["retriever_rank"].append(retriever_rank)
            columns["retriever_score"].append(score)
            columns["history_length"].append(len(history))
            columns["last_title"].append(catalog.titles[int(history[-1])] if len(history) else "")
    table = pa.table({"user": _id_column(columns["user"]), "rank": pa.array(columns["rank"], pa.int32()),
                      "item": _id_column(columns["item"]), "title": pa.array(columns["title"], pa.string()),
                      "retriever_rank": pa.array(columns["retriever_rank"], pa.int32()),
                      "retriever_score": pa.array(columns["retriever_score"], pa.float64()),
                      "history_length": pa.array(columns["history_length"], pa.int32()),
                      "last_title": pa.array(columns["last_title"], pa.string())})
    table = table.replace_schema_metadata({"palr": json.dumps(about)})
    write_with(path, lambda tmp: pq.write_table(table, tmp, row_group_size=65536), path.parent)


def _id_column(ids: list):
    """Dataset ids as one Arrow type: integers stay integers, anything else becomes text."""
    import pyarrow as pa

    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        return pa.array([int(i) for i in ids], pa.int64())
    return pa.array([str(i) for i in ids], pa.string())
