"""Experiment tracking: the ``trainer.logger`` setting as Lightning loggers, and each run's final
metrics written to the same trackers, so that the runs of a sweep are comparable side by side.

``trainer.logger`` names one logger or a list: ``csv`` (the default; ``<training folder>/logs/``),
``tensorboard`` (``<training folder>/tensorboard/``, and the run's settings and final metrics in
``<run>/tensorboard/results`` for TensorBoard's HParams view), ``mlflow`` (one MLflow run per palr
run, holding its settings and final metrics, with one nested run per training stage), or ``none``.

Metric names are the results table's, by role: ``retriever/NDCG@10`` and ``ranker/NDCG@10``
(``retriever/NDCG_at_10`` in MLflow, whose names cannot hold ``@``), plus ``time/<stage>_s`` and
``users_evaluated``. Nothing here imports Lightning, TensorBoard or MLflow until a run asks for them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import time
from pathlib import Path
from typing import Any

from .config import OptionError, TrainerConfig

__all__ = ["LOGGERS", "logger_names", "check_tracking", "training_loggers", "RunTracker", "result_metrics"]

#: what ``trainer.logger`` may name, and the package each needs
LOGGERS = {"csv": None, "tensorboard": "tensorboard", "mlflow": "mlflow", "none": None}
_INSTALL = "pip install 'palr[tracking]'"

#: the tracker of the run in progress in this process (set by :class:`RunTracker`), so that the
#: trainers built during the run nest their MLflow runs under the palr run's
_ACTIVE: dict[str, Any] = {}


def logger_names(config: TrainerConfig) -> list[str]:
    """``trainer.logger`` as a list of names (``none`` and an empty list: no logger)."""
    value = config.logger
    names = [value] if isinstance(value, str) else list(value or [])
    return [str(n).strip().lower() for n in names if str(n).strip().lower() != "none"]


def check_tracking(config: TrainerConfig) -> None:
    """Refuse, before any work, a logger palr does not know, a tracker whose package is missing,
    and a ``trainer.extra`` key that ``lightning.Trainer`` does not take."""
    value = config.logger
    for name in [value] if isinstance(value, str) else list(value or []):
        if str(name).strip().lower() not in LOGGERS:
            raise OptionError(f"trainer.logger: unknown logger {name!r}; choose from {', '.join(LOGGERS)} "
                              "(or a list, e.g. trainer.logger=[csv,tensorboard])")
    for name in logger_names(config):
        package = LOGGERS[name]
        if package and importlib.util.find_spec(package) is None:
            raise OptionError(f"trainer.logger={name} needs the {package} package, which is not installed: "
                              f"{_INSTALL}")
    if config.extra:
        import inspect

        import lightning

        accepted = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}
        for key in config.extra:
            if key not in accepted:
                raise OptionError(f"trainer.extra.{key}: lightning.Trainer has no argument {key!r}")
            if key in _MANAGED:
                raise OptionError(f"trainer.extra.{key}: palr sets this Trainer argument itself; use "
                                  f"{_MANAGED[key]}")


#: Trainer arguments palr builds itself, and the setting that controls each
_MANAGED = {"logger": "trainer.logger", "callbacks": "the component's own callbacks",
            "default_root_dir": "the run folder (hydra.run.dir)", "max_epochs": "trainer.max_epochs or the "
            "component's max_epochs", "enable_checkpointing": "nothing (palr's resuming needs checkpoints)"}


def tracking_uri(config: TrainerConfig) -> str:
    """Where MLflow writes: ``trainer.mlflow_tracking_uri``, else ``./mlruns`` in the directory the
    run was started from (one store for every job of a sweep). A local file store is allowed
    explicitly (MLflow 3 asks for that opt-in)."""
    uri = config.mlflow_tracking_uri or (Path.cwd() / "mlruns").as_uri()
    if "://" not in uri and not uri.startswith("file:"):  # a plain folder
        uri = Path(uri).expanduser().resolve().as_uri()
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines ("Creating tables") are not palr's
    return uri


def _mlflow_logger_class():
    from lightning.pytorch.loggers import MLFlowLogger

    class PalrMLFlowLogger(MLFlowLogger):
        """Lightning's MLflow logger with palr's metric names made valid without a warning per step."""

        def log_metrics(self, metrics, step=None):
            super().log_metrics({mlflow_name(k): v for k, v in metrics.items()}, step)

    return PalrMLFlowLogger


def mlflow_name(name: str) -> str:
    """A metric name MLflow accepts: ``val/NDCG@10`` → ``val/NDCG_at_10``."""
    return re.sub(r"[^a-zA-Z0-9_/. -]+", "_", name.replace("@", "_at_"))


def training_loggers(config: TrainerConfig, work_dir: Path) -> list | bool:
    """The Lightning loggers for one training in ``work_dir`` (``False``: none)."""
    loggers: list = []
    for name in logger_names(config):
        if name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(str(work_dir), name="logs"))
        elif name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(str(work_dir), name="tensorboard", default_hp_metric=False))
        elif name == "mlflow":
            parent = _ACTIVE.get("mlflow_run")
            tags = {"palr.stage": work_dir.name, "palr.folder": str(work_dir)}
            if parent:
                tags["mlflow.parentRunId"] = parent
            loggers.append(_mlflow_logger_class()(
                experiment_name=config.experiment_name, tracking_uri=tracking_uri(config),
                run_name=f"{_ACTIVE.get('name', work_dir.parent.name)} {work_dir.name}", tags=tags))
    return loggers or False


def _rank_zero() -> bool:
    """Not a DDP worker that Lightning re-launched (those run the pipeline again; rank 0 tracks)."""
    return all(int(os.environ.get(var, 0) or 0) == 0 for var in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def flat_settings(config: Any, prefix: str = "") -> dict[str, Any]:
    """A run's settings as ``{"retriever.hidden": 64, ...}``, values that trackers accept."""
    node = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def result_metrics(result) -> dict[str, float]:
    """A :class:`~palr_core.pipeline.RunResult` as tracker metrics: ``<role>/<metric>`` per row
    (the role is the row's ``retriever:``/``ranker:`` prefix), stage times and peak memory, users evaluated."""
    metrics: dict[str, float] = {}
    for position, row in enumerate(result.rows):
        role = row["model"].split(":", 1)[0].strip() if ":" in row["model"] else f"row{position}"
        metrics.update({f"{role}/{k}": float(v) for k, v in row.items()
                        if k != "model" and v is not None})
    metrics.update({f"time/{stage}_s": float(s) for stage, s in result.timings.items()})
    metrics.update({f"memory/{stage}_peak_gb": float(g) for stage, g in result.peak_memory_gb.items()})
    metrics["users_evaluated"] = float(result.users)
    return metrics


class RunTracker:
    """One palr run in the chosen trackers: started with its settings, ended with its metrics.

    MLflow: a run named after the run folder, with every setting as a parameter (a resumed palr
    run continues its MLflow run, whose id ``run.json`` keeps); the trainings started meanwhile
    are nested under it. TensorBoard: ``<run>/tensorboard/results`` gets the settings and the
    final metrics (HParams), written when the run ends.
    """

    def __init__(self, config, run_dir: Path, record: dict | None = None) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        self.names = logger_names(config.trainer) if _rank_zero() else []
        self.mlflow_run: str | None = (record or {}).get("mlflow_run")
        self.name = f"{self.run_dir.parent.name}/{self.run_dir.name}"

    def start(self) -> dict:
        """Open the run in MLflow; returns what ``run.json`` should remember (the MLflow run id)."""
        if "mlflow" not in self.names:
            return {}
        from mlflow.tracking import MlflowClient

        trainer = self.config.trainer
        client = MlflowClient(tracking_uri(trainer))
        if self.mlflow_run:
            client.update_run(self.mlflow_run, status="RUNNING")
        else:
            experiment = client.get_experiment_by_name(trainer.experiment_name)
            experiment_id = (experiment.experiment_id if experiment is not None
                             else client.create_experiment(trainer.experiment_name))
            run = client.create_run(experiment_id, run_name=self.name,
                                    tags={"palr.run_dir": str(self.run_dir.resolve())})
            self.mlflow_run = run.info.run_id
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in flat_settings(self.config).items()]
            for start in range(0, len(params), 100):
                client.log_batch(self.mlflow_run, params=params[start:start + 100])
        _ACTIVE.update(mlflow_run=self.mlflow_run, name=self.name)
        return {"mlflow_run": self.mlflow_run}

    def finish(self, result) -> None:
        """The run's final metrics to every tracker; the MLflow run ends as finished."""
        metrics = result_metrics(result)
        if "tensorboard" in self.names:
            from lightning.pytorch.loggers import TensorBoardLogger

            board = TensorBoardLogger(str(self.run_dir), name="tensorboard", version="results",
                                      default_hp_metric=False)
            board.log_hyperparams(flat_settings(self.config), metrics)
            board.experiment.add_text("results", result.table())
            board.finalize("success")
        if self.mlflow_run:
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri(self.config.trainer))
            now = int(time.time() * 1000)
            client.log_batch(self.mlflow_run, metrics=[Metric(mlflow_name(k), v, now, 0)
                                                       for k, v in metrics.items()])
            client.log_text(self.mlflow_run, result.table() + "\n", "results.md")
            client.set_terminated(self.mlflow_run, "FINISHED")
        _ACTIVE.clear()
        for line in self.where():
            print(f"palr: {line}")

    def where(self) -> list[str]:
        """Where this run's trackers wrote, and how to look."""
        lines = []
        if "tensorboard" in self.names:
            lines.append(f"TensorBoard: tensorboard --logdir {self.run_dir}")
        if self.mlflow_run:
            uri = tracking_uri(self.config.trainer)
            lines.append(f"MLflow: run {self.mlflow_run} in experiment {self.config.trainer.experiment_name!r} "
                         f"at {uri}")
        return lines

    def fail(self) -> None:
        """The MLflow run ends as failed (a resumed palr run reopens it)."""
        if self.mlflow_run:
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri(self.config.trainer)).set_terminated(self.mlflow_run, "FAILED")
        _ACTIVE.clear()
