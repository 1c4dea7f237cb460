"""palr from Python: run an experiment as ``palr-run`` would, and use a finished run's models.

``import palr`` gives the same names::

    import palr

    result = palr.run(["retriever=popularity", "ranker=identity", "profile=none"])
    print(result.table())                      # the results table; result.run_dir is the run folder
    run = palr.load_run(result.run_dir)        # the run's retriever, profiles and ranker, loaded once
    for rec in run.recommend(run.users[0], k=5):
        print(rec.rank, rec.item, rec.title)

:func:`run` composes the configuration with Hydra's compose API from the same config files,
plugins and defaults as ``palr-run``, so ``palr.run(overrides)`` and ``palr-run <overrides>`` run
the same experiment (sweeps are a loop, or ``palr-run -m``). :func:`load_run` reuses what a run
trained: components built on palr's kit (every built-in) find their finished training in the run
folder and load it instead of training again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .components import Persistent, RestoresTuning, RunContext, TrainingData, Tunable
from .composition import compose, typed_config
from .config import PalrConfig, default_cache_dir
from .pipeline import build_components, prepare_data, recommend_top, run_pipeline, seed_stage, tune_ranker
from .plugins import Registry, load_registry
from .result_files import check_model_files
from .runs import RunFolder, RunFolderError, RunResult

__all__ = ["run", "compose", "load_run", "LoadedRun", "Recommendation", "RunResult"]

log = logging.getLogger("palr")


def run(overrides: Sequence[str] = (), *, run_dir: str | os.PathLike | None = None,
        config_dir: str | os.PathLike | None = None) -> RunResult:
    """Run one experiment, as ``palr-run <overrides>`` does, and return its results.

    :param overrides: Hydra overrides, e.g. ``["retriever=bert4rec", "eval.max_users=100"]``.
    :param run_dir: the run folder (default: ``hydra.run.dir``, ``outputs/<date>/<time>``). A
        folder of an interrupted run resumes it; a finished one is read back without any work.
    :param config_dir: a directory of your own presets, as ``palr-run --config-dir``.
    :returns: rows, stats, timings, ``.table()`` and ``.run_dir``.
    """
    from omegaconf import open_dict

    registry = load_registry()
    cfg = compose(overrides, registry, config_dir)
    folder = Path(run_dir if run_dir is not None else cfg.hydra.run.dir).expanduser().absolute()
    with open_dict(cfg):
        del cfg["hydra"]
    config = typed_config(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"palr: run folder {folder}", flush=True)
    check_model_files(folder)  # a resumed folder's torn adapter or model: one named line
    with _log_file(folder / "palr.log"):
        return run_pipeline(config, registry, folder)


@contextmanager
def _log_file(path: Path):
    """palr's log lines (stages, results) also in the run's ``palr.log``, as ``palr-run`` writes it."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    loggers = [logging.getLogger("palr")]  # palr.results propagates to it
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(min(lg.level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: the ranker's ``rank`` (from 1), the dataset's item id, its title,
    and where the retriever had put it (``retriever_rank`` from 1, ``retriever_score``)."""

    rank: int
    item: object
    title: str
    retriever_rank: int
    retriever_score: float


class LoadedRun:
    """A finished run's data and components, loaded once, ready to recommend (:func:`load_run`).

    :ivar config: the run's :class:`~palr_core.PalrConfig`.
    :ivar result: its results (:class:`~palr_core.pipeline.RunResult`).
    :ivar data: the preprocessed dataset (sequences, dataset user ids, the item catalogue).
    :ivar retriever: the trained retriever; :ivar profile: the profile generator; :ivar ranker: the ranker.
    """

    def __init__(self, run_dir: Path, config: PalrConfig, result: RunResult, data, components, context) -> None:
        self.run_dir, self.config, self.result, self.data = run_dir, config, result, data
        self.retriever, self.profile, self.ranker = components.retriever, components.profile, components.ranker
        self.names = components.names
        self.context = context
        self._parts = components
        self._index = {_key(u): i for i, u in enumerate(data.user_ids)}

    @property
    def users(self) -> list:
        """The dataset's user ids (after preprocessing), in the dataset's order."""
        return list(self.data.user_ids)

    def user_index(self, user) -> int:
        """palr's index of a dataset user id (``42`` and ``"42"`` both name user 42)."""
        try:
            return self._index[_key(user)]
        except KeyError:
            examples = ", ".join(str(u) for u in self.data.user_ids[:5])
            raise KeyError(f"no user {user!r} in this run's dataset {self.data.name!r} (after "
                           f"{self.config.preprocess.k_core}-core: {len(self.data.user_ids):,} users, e.g. "
                           f"{examples})") from None

    def history(self, user) -> list[tuple[object, str]]:
        """The user's interactions, oldest first, as ``(item id, title)``."""
        catalog = self.data.catalog
        return [(catalog.ids[i], catalog.titles[i]) for i in self.data.sequences[self.user_index(user)]]

    def recommend(self, user, k: int = 10) -> list[Recommendation]:
        """The top ``k`` items for ``user`` (a dataset user id) after everything they interacted
        with: the retriever picks ``eval.candidates`` from the catalogue, the profile generator
        describes the user, and the ranker orders the candidates, exactly as in the run."""
        return self.recommend_many([user], k)[user]

    def recommend_many(self, users: Sequence, k: int = 10) -> dict:
        """:meth:`recommend` for many users in batches: ``{user: [Recommendation, ...]}``."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        answers = recommend_top(self._parts, self.data, [self.user_index(u) for u in users], k, self.config,
                                self.context)
        catalog = self.data.catalog
        return {user: [Recommendation(rank=r, item=catalog.ids[item], title=catalog.titles[item],
                                      retriever_rank=retriever_rank, retriever_score=score)
                       for r, (item, retriever_rank, score) in enumerate(answer, start=1)]
                for user, answer in zip(users, answers)}


def _key(user) -> str:
    return str(user.item() if isinstance(user, np.generic) else user)


def load_run(run_dir: str | os.PathLike, registry: Registry | None = None) -> LoadedRun:
    """A finished run's retriever, profile generator and ranker, loaded from its folder.

    The run's own configuration (``config_resolved.yaml``) rebuilds the components; the dataset
    is read again (from palr's cache) and must be the data the run used. Each component's fit then
    finds its finished training in the folder and loads it: nothing is trained again (a component
    that keeps no record of its training in the run folder trains once more, with the run's seed).
    Trackers are off while loading.
    """
    from omegaconf import OmegaConf

    run_dir = Path(run_dir).expanduser()
    folder_record = run_dir / "run.json"
    if not folder_record.is_file() or not (run_dir / "config_resolved.yaml").is_file():
        raise RunFolderError(f"{run_dir} is not a palr run folder (no run.json and config_resolved.yaml there)")
    config = typed_config(OmegaConf.load(run_dir / "config_resolved.yaml"))
    folder = RunFolder(run_dir, config)
    if not folder.finished():
        raise RunFolderError(f"{run_dir} holds a run that has not finished; finish it first (palr-run with "
                             f"hydra.run.dir={run_dir} and the same overrides resumes it)")
    check_model_files(run_dir)  # a torn or crafted adapter or model: one named line, not the library's traceback
    registry = registry or load_registry()
    parts = build_components(config, registry)
    trainer = dataclasses.replace(config.trainer, logger="none")
    context = RunContext(seed=config.seed, work_dir=run_dir, cache_dir=default_cache_dir(config.cache_dir),
                         trainer=trainer, profiles=parts.profile, language_models=registry.language_models)
    seed_stage(config.seed, "load")
    data, split = prepare_data(parts.dataset, context, config.preprocess)  # the run's split too
    if folder.data_fingerprint(data) != folder.record().get("data"):
        raise RunFolderError(f"{run_dir}: the dataset's files changed since this run; its models were trained "
                             "on other data")
    context.catalog = data.catalog
    training = TrainingData(train=split.train, valid=split.valid, catalog=data.catalog)
    for role in ("retriever", "ranker"):  # a trained component whose training is gone is refused, not retrained
        component = getattr(parts, role)
        if isinstance(component, Persistent) and not component.is_trained(context):
            raise RunFolderError(f"{run_dir}: the {role} {parts.names[role]!r} has no finished training in this "
                                 "run folder (deleted or moved?); nothing is trained again when a run is loaded: "
                                 "run it again with palr-run")
    seed_stage(config.seed, "fit_retriever")
    parts.retriever.fit(training, context)
    seed_stage(config.seed, "fit_ranker")
    parts.ranker.fit(training, context)
    result = folder.result()
    if isinstance(parts.ranker, Tunable):  # the settings the run chose on validation items: read back, or again
        if isinstance(parts.ranker, RestoresTuning) and result.tuning:
            parts.ranker.restore_tuning(result.tuning)
        else:
            seed_stage(config.seed, "tune_ranker")
            tune_ranker(parts, split, config, context)
    return LoadedRun(run_dir, config, result, data, parts, context)

