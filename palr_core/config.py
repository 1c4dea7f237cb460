"""The typed run configuration: the one place where palr's own settings and their defaults live.

``conf/config.yaml`` only chooses a component per group; every value comes from these dataclasses
(run-wide settings) or from each component's config dataclass (its own settings). Hydra checks the
top-level keys against :class:`PalrConfig`, and :func:`palr_core.pipeline.run_pipeline` receives
the composed config as a :class:`PalrConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

__all__ = ["TrainerConfig", "PreprocessConfig", "EvalConfig", "StoreConfig", "RecommendConfig", "PalrConfig", "default_cache_dir",
           "store_schema", "option", "OptionError", "check_options"]


class OptionError(ValueError):
    """An option's value is outside its range or choices (the message names the option).

    Raised for palr's own settings; a component's options are checked by the registry, which
    raises :class:`palr_core.ComponentConfigError` (also a ``ValueError``) naming the component."""


def option(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
           above: float | None = None, below: float | None = None, choices: Sequence | None = None,
           pattern: str | None = None, hint: str | None = None, each_min: float | None = None,
           nonempty: bool = False, **kwargs):
    """A config dataclass field with the values it accepts, checked before any work starts.

    ``min``/``max`` are inclusive bounds, ``above``/``below`` exclusive ones, ``choices`` the
    allowed values, ``pattern`` a regular expression a string must match (``hint`` says it in
    words, for the message), ``each_min`` a bound on
    every element of a list and ``nonempty`` refuses an empty list. ``None`` is always accepted
    when the field's type allows it. The rules are checked once, when palr validates the params
    (:func:`check_options`), not when the dataclass is built: a ``__post_init__`` holds only what
    one field's rule cannot say. A list or dict default is copied for each instance::

        blocks: int = option(2, min=1)
        dropout: float = option(0.2, min=0, below=1)
        loss: str = option("ce", choices=("ce", "bce"))
    """
    rules = {k: v for k, v in dict(min=min, max=max, above=above, below=below, choices=tuple(choices) if choices
                                   else None, pattern=pattern, hint=hint, each_min=each_min,
                                   nonempty=nonempty or None).items() if v is not None}
    metadata = {**kwargs.pop("metadata", {}), "palr": rules}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def check_options(obj: Any, prefix: str) -> None:
    """Raise :class:`OptionError` for the first field of a config dataclass instance (or of a nested
    one) whose value breaks its :func:`option` rules, naming it as ``<prefix>.<field>``."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            check_options(value, name)
            continue
        problem = _rule_problem(value, f.metadata.get("palr", {}))
        if problem:
            raise OptionError(f"{name} {problem}, got {value!r}")


def _rule_problem(value: Any, rules: dict) -> str | None:
    if value is None or not rules:
        return None
    if "choices" in rules and value not in rules["choices"]:
        return f"must be one of {', '.join(map(str, rules['choices']))}"
    if "pattern" in rules and not (isinstance(value, str) and re.fullmatch(rules["pattern"], value)):
        return f"must be {rules['hint']}" if "hint" in rules else f"must match {rules['pattern']}"
    if rules.get("nonempty") and isinstance(value, (list, tuple)) and not value:
        return "must not be empty"
    if "each_min" in rules and isinstance(value, (list, tuple)):
        if any(not isinstance(v, (int, float)) or v < rules["each_min"] for v in value):
            return f"must hold numbers >= {rules['each_min']}"
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        holds = {"min": value >= rules.get("min", value), "max": value <= rules.get("max", value),
                 "above": "above" not in rules or value > rules["above"],
                 "below": "below" not in rules or value < rules["below"]}
        if not all(holds.values()):
            bounds = [f"{sign} {rules[key]}" for key, sign in (("min", ">="), ("above", ">"), ("max", "<="),
                                                               ("below", "<")) if key in rules]
            return "must be " + " and ".join(bounds)
    return None


@dataclass
class TrainerConfig:
    """Lightning Trainer settings shared by every trained component (``palr-run trainer=gpu``).

    How long a component trains (its epochs and early-stopping patience) is the component's own
    setting (e.g. ``retriever.max_epochs``); this group says where and how it trains.

    :param accelerator: ``cpu``, ``gpu`` or ``auto``.
    :param devices: number of devices or ``auto``.
    :param strategy: ``auto``, ``ddp_spawn``, ``ddp_fork``... (Lightning strategy names; ``palr-run``
        refuses those that start their processes by running the command again: ``ddp``, ``fsdp``, ``deepspeed``).
    :param precision: ``32-true``, ``bf16-mixed``, ``16-mixed``...
    :param max_epochs: an upper bound on every component's epochs (``null``: each component's own);
        ``trainer.max_epochs=1`` makes a quick smoke run of any pipeline.
    :param max_time: wall-clock cap on each training, ``"DD:HH:MM:SS"`` (``null``: none). Training
        stops at the end of the step that crosses it and the best checkpoint so far is kept, so a
        time-boxed run (a sweep on a budget) still ends with a model and its metrics.
    :param check_val_every_n_epoch: validate every N epochs.
    :param gradient_clip_val: clip gradients to this norm (``null``: no clipping).
    :param accumulate_grad_batches: gradient accumulation steps.
    :param enable_progress_bar: show progress bars (Lightning's, and palr's own long loops).
    :param num_workers: DataLoader worker processes.
    :param deterministic: ask torch for deterministic kernels.
    :param logger: experiment trackers, one name or a list: ``csv``, ``tensorboard``, ``mlflow``,
        ``none`` (:mod:`palr_core.tracking`; ``tensorboard`` and ``mlflow`` need
        ``pip install 'palr[tracking]'``).
    :param experiment_name: the MLflow experiment a run is filed under.
    :param mlflow_tracking_uri: where MLflow writes (``null``: ``./mlruns`` in the directory the run
        was started from, shared by all jobs of a sweep; a folder, ``file:``, ``sqlite:`` or
        ``http(s):`` URI).
    :param log_every_n_steps: log training metrics every N steps (``null``: every 50 steps, or once
        per epoch when an epoch is shorter).
    :param fast_dev_run: ``true`` or N: run N (1) batches of training and validation, to find bugs
        (no checkpoints, no loggers; the model is barely trained).
    :param limit_train_batches: train on this fraction (a float ``<= 1``) or number of batches per
        epoch (``null``: all).
    :param limit_val_batches: the same for validation.
    :param threads: torch's CPU threads for the whole run, set once when it starts: a number, or
        ``auto`` (``OMP_NUM_THREADS`` when set, as joblib sweeps set it; else the CPUs this process
        may use). ``auto`` reads only facts that stay put between two runs of one command, never
        the machine's load: float sums depend on how many threads split them, so a count that
        followed the load would change the result's bytes. On a machine shared with other work,
        set a number (``trainer.threads=1`` or ``OMP_NUM_THREADS=1``) so the run does not
        oversubscribe the cores.
    :param profiler: ``simple``, ``advanced`` or ``pytorch``: Lightning's profiler, whose report is
        written to ``<training folder>/fit-profile.txt`` (``null``: none).
    :param extra: any other ``lightning.Trainer`` argument, e.g. ``+trainer.extra.detect_anomaly=true``
        (checked against the Trainer's signature before the run starts).
    """

    #: settings that change how a run is watched, not what it computes: a run folder may be resumed
    #: or read back with other values (progress bars, workers, trackers, profiling)
    OBSERVATION = ("enable_progress_bar", "num_workers", "logger", "experiment_name", "mlflow_tracking_uri",
                   "log_every_n_steps", "profiler", "threads")

    accelerator: str = option("cpu", choices=("cpu", "gpu", "cuda", "mps", "tpu", "auto"))
    devices: Any = 1
    strategy: str = "auto"
    precision: str = option("32-true", choices=("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true",
                                                "64-true", "64", "transformer-engine"))
    max_epochs: int | None = option(None, min=1)
    max_time: str | None = option(None, pattern=r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", hint="DD:HH:MM:SS, e.g. 00:02:00:00")
    check_val_every_n_epoch: int = option(1, min=1)
    gradient_clip_val: float | None = option(None, above=0)
    accumulate_grad_batches: int = option(1, min=1)
    enable_progress_bar: bool = True
    num_workers: int = option(0, min=0)
    deterministic: bool = False
    logger: Any = "csv"
    experiment_name: str = "palr"
    mlflow_tracking_uri: str | None = None
    log_every_n_steps: int | None = option(None, min=1)
    fast_dev_run: Any = option(False, min=0)
    limit_train_batches: Any = option(None, above=0)
    limit_val_batches: Any = option(None, min=0)
    profiler: str | None = option(None, choices=("simple", "advanced", "pytorch"))
    threads: Any = option("auto", min=1, hint="a number of threads, or auto")
    extra: dict = option({})

    def cpu_threads(self) -> int:
        """The number :attr:`threads` stands for on this machine now."""
        if self.threads != "auto":
            if isinstance(self.threads, bool) or not str(self.threads).isdigit() or int(self.threads) < 1:
                raise OptionError(f"trainer.threads must be a number of threads >= 1 or auto, got {self.threads!r}")
            return int(self.threads)
        if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
            return int(os.environ["OMP_NUM_THREADS"])  # set by the user or a launcher (joblib does)
        # the CPUs this process may use, not minus the load: same command, same bytes
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def results_settings(self) -> dict:
        """The settings that can change what a training computes (:attr:`OBSERVATION` left out):
        what a training folder's checkpoints depend on."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.OBSERVATION}


@dataclass
class PreprocessConfig:
    """How the log becomes sequences and how they are split into training, validation and test.

    :param k_core: iterative k-core threshold for users and items (the paper: 5).
    :param split: ``leave_one_out`` (each user's last item is the test item, the one before it the
        validation item) or ``temporal`` (one time cut for all users: the latest interactions form
        the validation and test windows; :func:`palr_core.data.temporal_split`).
    :param valid_fraction: ``temporal``: the share of all interactions, by time, in the validation window.
    :param test_fraction: ``temporal``: the share of all interactions, the latest, in the test window.
    """

    k_core: int = option(5, min=1)
    split: str = option("leave_one_out", choices=("leave_one_out", "temporal"))
    valid_fraction: float = option(0.1, above=0, below=1)
    test_fraction: float = option(0.1, above=0, below=1)

    def __post_init__(self) -> None:
        both = (self.valid_fraction, self.test_fraction)
        if all(isinstance(f, (int, float)) and 0 < f < 1 for f in both) and sum(both) >= 1:
            raise OptionError(f"preprocess.valid_fraction + preprocess.test_fraction must be below 1 (the rest is "
                              f"training), got {self.valid_fraction} + {self.test_fraction}")


@dataclass
class EvalConfig:
    """How the rows of the results table are evaluated.

    :param ks: cut-offs K of every metric of a results row (HR, NDCG, MRR, Coverage, AvgPop @K).
    :param candidates: the retriever's top-K handed to the ranker (the paper: 50).
    :param max_users: evaluate a seeded sample of this many test users (``null``: all).
    :param tune_users: users whose validation item (history: their training prefix, candidates: the
        retriever's) a ranker with a ``tune`` method chooses its own settings on, e.g.
        ``ranker.retriever_weight=auto`` (a seeded sample; never a test item). ``null``: 200, or
        ``max_users`` when that is smaller, so that a smoke run (``eval.max_users=50``) also tunes
        on few users; a number set here is used as it is.
    :param rank_processes: rank the test users in this many forked CPU processes, a contiguous
        share of the users each, torch's threads split between them (the same rankings as one
        process; on a GPU keep 1).
    """

    #: how many users ``tune_users=null`` tunes on when ``max_users`` allows it
    TUNE_USERS = 200

    ks: list[int] = option([5, 10, 20], each_min=1, nonempty=True)
    candidates: int = option(50, min=1)
    max_users: int | None = option(None, min=1)
    tune_users: int | None = option(None, min=1)
    rank_processes: int = option(1, min=1)

    def tuning_users(self) -> int:
        """The number of users :attr:`tune_users` stands for (its ``null`` resolved)."""
        if self.tune_users is not None:
            return self.tune_users
        return min(self.TUNE_USERS, self.max_users or self.TUNE_USERS)


@dataclass
class StoreConfig:
    """The store of trained stages (:mod:`palr_core.store`): a run whose retriever was trained before
    with the same data, settings, seed and trainer reads it instead of training it again.

    :param enabled: ``false``: always train, read and write nothing in the store.
    :param dir: the store's folder, shared by every run that points at it (a cluster sweep: a
        folder on the shared filesystem); ``null``: ``<cache_dir>/stages``.
    """

    enabled: bool = True
    dir: str | None = None


@dataclass
class RecommendConfig:
    """What a run leaves ready for ``palr recommend``, which then answers without loading a model.

    :param precompute: after the evaluation, rank every evaluated user once more after their
        *whole* history (the test item included, as ``palr recommend`` does) and write the top
        :attr:`k` to ``recommendations.parquet``. The command answers those users from the file;
        any other user, or a larger ``-k``, loads the run's models. ``false``: no file (a run
        whose ranking is costly, e.g. a large LLM over many users, skips the second pass).
    :param k: how many items per user the file keeps.
    """

    precompute: bool = True
    k: int = option(20, min=1)


@dataclass
class PalrConfig:
    """One experiment. The four component groups hold ``{"name": <registered name>, **params}``.

    :param seed: the one seed of the run (data sampling, initialisation, training order, decoding).
    :param cache_dir: a directory shared across runs (downloads, parsed data, converted models,
        profiles); ``null``: ``$PALR_CACHE_DIR``, else ``~/.cache/palr``.
    :param objective: the number ``palr-run`` returns to a sweeper (Optuna maximises it with
        ``hydra.sweeper.direction=maximize``): ``<retriever|ranker>/<HR|NDCG>@K`` of the results
        table (test items), or ``validation/<HR|NDCG>@K``, the retriever on the validation items,
        the one to choose settings by; K one of ``eval.ks``. See docs/sweeps.md.
    :param store: the store of trained stages (:class:`StoreConfig`).
    :param recommend: what the run precomputes for ``palr recommend`` (:class:`RecommendConfig`).
    """

    #: run settings that cannot change a trained stage (which users are evaluated and how, where
    #: files go, what a sweeper reads): never part of a stage's key in the store (palr_core.store).
    #: The trainer's are :attr:`TrainerConfig.OBSERVATION`; a component's, its ``stage_key``'s.
    OUTSIDE_STAGE_KEYS = ("eval", "objective", "cache_dir", "store", "recommend")

    dataset: Any = MISSING
    retriever: Any = MISSING
    profile: Any = MISSING
    ranker: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = option(42, min=0)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cache_dir: str | None = None
    store: StoreConfig = field(default_factory=StoreConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    objective: str = option("ranker/NDCG@10", pattern=r"(retriever|ranker|validation)/(HR|NDCG)@\d+",
                            hint="<retriever|ranker|validation>/<HR|NDCG>@K, e.g. validation/NDCG@10")

    def check_objective(self) -> None:
        """Refuse an :attr:`objective` the results table will not have (its K not in ``eval.ks``):
        checked before the first job of a sweep, where the objective is what a sweeper optimises."""
        cutoff = int(self.objective.rsplit("@", 1)[1])
        if cutoff not in self.eval.ks:
            raise OptionError(f"objective={self.objective} needs {cutoff} in eval.ks, which is {list(self.eval.ks)}; "
                              f"choose another objective or add {cutoff} to eval.ks")

    def objective_value(self, result) -> float:
        """The :attr:`objective` read from a run's result (NaN when the table lacks it)."""
        role, metric = self.objective.split("/")
        values = result.validation if role == "validation" else result.metrics(role)
        return float(values.get(metric, math.nan))


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$PALR_CACHE_DIR``, else ``~/.cache/palr`` (``~`` expanded),
    created if absent.

    Raises a one-line :class:`ValueError` naming the setting it came from (``cache_dir=...`` or
    ``PALR_CACHE_DIR=...``) when the folder is a file, lies below a file, or cannot be written:
    found before any work starts, not as a traceback in the first stage that caches something.
    """
    if cache_dir is not None:
        chosen, setting = cache_dir, f"cache_dir={cache_dir}"
    elif os.environ.get("PALR_CACHE_DIR"):
        chosen = os.environ["PALR_CACHE_DIR"]
        setting = f"PALR_CACHE_DIR={chosen} (cache_dir unset)"
    else:
        chosen, setting = "~/.cache/palr", "the default cache_dir=~/.cache/palr"
    return writable_folder(Path(chosen).expanduser(), setting,
                           "expected a folder palr can write (or create) for downloads and cached data")


def writable_folder(path: Path, setting: str, expected: str, *, name_itself: bool = False) -> Path:
    """``path``, created if missing, after checking that it is not a file, lies below no file and
    can be written; else one :class:`ValueError` line: ``setting``, what is wrong, ``expected``.
    ``name_itself``: a ``path`` that is a file is named (``<path> is a file``), not ``it is a file``."""
    import tempfile

    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        what = "it" if blocker == path and not name_itself else str(blocker)
        raise ValueError(f"{setting}: {what} is a file; {expected}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise ValueError(f"{setting}: cannot write there ({exc.strerror or exc}); {expected}") from None
    return path


def store_schema() -> None:
    """Make the schema available to ``config.yaml``'s defaults list as ``palr_schema``, and offer
    ``trainer=cpu``: :class:`TrainerConfig`'s own defaults, which the other trainer presets extend."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="palr_schema", node=PalrConfig)
    store.store(group="trainer", name="cpu", node={}, provider="palr")
