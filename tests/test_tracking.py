"""trainer.logger: CSV, TensorBoard and MLflow files appear, final metrics reach the trackers, and
the Trainer flags users reach for pass through."""

import json
from pathlib import Path

import pytest

from palr_core import TrainerConfig
from palr_core.config import OptionError
from palr_core.tracking import check_tracking, logger_names, mlflow_name, result_metrics
from tests.test_cli import palr_run
from tests.test_faults import PIPELINE

#: SASRec trained for two short epochs, no LLM: a trained component in seconds
SMALL = ("dataset.users=120", "dataset.franchises=40", "retriever=sasrec", "retriever.maxlen=20",
         "retriever.hidden=16", "retriever.max_epochs=2", "retriever.patience=0", "eval.max_users=30")


def test_logger_names_and_what_is_refused():
    assert logger_names(TrainerConfig()) == ["csv"]
    assert logger_names(TrainerConfig(logger=["CSV", "tensorboard"])) == ["csv", "tensorboard"]
    assert logger_names(TrainerConfig(logger="none")) == [] and logger_names(TrainerConfig(logger=[])) == []
    with pytest.raises(OptionError, match=r"trainer.logger: unknown logger 'wandb'; choose from csv, tensorboard"):
        check_tracking(TrainerConfig(logger=["csv", "wandb"]))
    with pytest.raises(OptionError, match=r"trainer.extra.detect_anomalies: lightning.Trainer has no argument"):
        check_tracking(TrainerConfig(extra={"detect_anomalies": True}))
    with pytest.raises(OptionError, match=r"trainer.extra.logger: palr sets this Trainer argument itself; use "
                                          r"trainer.logger"):
        check_tracking(TrainerConfig(extra={"logger": False}))
    assert mlflow_name("val/NDCG@10") == "val/NDCG_at_10"


def test_a_missing_tracker_package_is_named_with_how_to_install_it(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(OptionError, match=r"trainer.logger=mlflow needs the mlflow package, which is not "
                                          r"installed: pip install 'palr\[tracking\]'"):
        check_tracking(TrainerConfig(logger="mlflow"))


def test_result_metrics_are_named_by_role():
    from palr_core.pipeline import RunResult

    result = RunResult(rows=[{"model": "retriever: sasrec (its own order)", "HR@10": 0.5, "NDCG@10": 0.25},
                             {"model": "ranker: PALR v2 over sasrec top-50", "HR@10": 0.75, "NDCG@10": 0.5}],
                       stats={}, timings={"rank": 1.5}, users=30, peak_memory_gb={"rank": 2.25})
    assert result_metrics(result) == {"retriever/HR@10": 0.5, "retriever/NDCG@10": 0.25, "ranker/HR@10": 0.75,
                                      "ranker/NDCG@10": 0.5, "time/rank_s": 1.5, "memory/rank_peak_gb": 2.25,
                                      "users_evaluated": 30.0}


def _scalars(folder: Path) -> dict[str, float]:
    """The last value of every scalar in a TensorBoard event folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: events.Scalars(tag)[-1].value for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_tensorboard_and_csv_get_training_curves_and_the_final_metrics(tmp_path):
    run = tmp_path / "run"
    palr_run(*SMALL, "trainer.logger=[csv,tensorboard]", f"hydra.run.dir={run}", tmp_path=tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "retriever_training" / "logs" / "version_0" / "metrics.csv").is_file()
    curves = _scalars(next((run / "retriever_training" / "tensorboard").glob("version_*")))
    assert "val/NDCG@10" in curves and "train/loss" in curves
    final = _scalars(run / "tensorboard" / "results")
    assert final["ranker/NDCG@10"] == pytest.approx(metrics["rows"][1]["NDCG@10"])
    assert final["retriever/HR@10"] == pytest.approx(metrics["rows"][0]["HR@10"])
    # the settings are there as hparams for TensorBoard's HParams view
    assert "retriever.hidden" in (run / "tensorboard" / "results" / "hparams.yaml").read_text()


@pytest.mark.slow
def test_mlflow_files_a_sweep_as_comparable_runs_with_their_trainings_nested(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what reading a file store takes in MLflow 3

    store = tmp_path / "mlruns"
    palr_run("-m", *PIPELINE, "eval.max_users=20", "retriever.max_epochs=2", "ranker.epochs=1",
             "ranker.instructions.user_fraction=0.1", "seed=1,2", "trainer.logger=mlflow",
             f"trainer.mlflow_tracking_uri={store}", f"hydra.sweep.dir={tmp_path}/sweep", tmp_path=tmp_path,
             fast=False)
    client = MlflowClient(store.as_uri())
    experiment = client.get_experiment_by_name("palr")
    runs = client.search_runs([experiment.experiment_id])
    palr_runs = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags),
                       key=lambda r: r.data.params["seed"])
    assert [r.data.params["seed"] for r in palr_runs] == ["1", "2"]
    for job, parent in zip(("0", "1"), palr_runs):
        saved = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert parent.info.status == "FINISHED" and parent.data.params["retriever.name"] == "sasrec"
        assert parent.data.metrics["ranker/NDCG_at_10"] == pytest.approx(saved["rows"][1]["NDCG@10"])
        assert parent.data.tags["palr.run_dir"] == str((tmp_path / "sweep" / job).resolve())
        children = {r.data.tags["palr.stage"]: r for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert set(children) == {"retriever_training", "llama_lora"}
        assert "val/NDCG_at_10" in children["retriever_training"].data.metrics
        assert "train/loss_step" in children["llama_lora"].data.metrics
        run_json = json.loads((tmp_path / "sweep" / job / "run.json").read_text())
        assert run_json["mlflow_run"] == parent.info.run_id


@pytest.mark.slow
def test_trainer_flags_pass_through(tmp_path):
    run = tmp_path / "run"
    palr_run(*SMALL, "trainer.limit_train_batches=1", "trainer.log_every_n_steps=1", "trainer.profiler=simple",
             "+trainer.extra.detect_anomaly=true", f"hydra.run.dir={run}", tmp_path=tmp_path)
    training = run / "retriever_training"
    rows = (training / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    epochs = {row.split(",")[header.index("epoch")] for row in rows[1:]}
    assert epochs == {"0", "1"}  # two epochs of one batch each: one step apiece
    assert max(int(row.split(",")[header.index("step")]) for row in rows[1:]) <= 2
    assert "Action" in (training / "fit-profile.txt").read_text()
    smoke = tmp_path / "smoke"
    palr_run(*SMALL, "trainer.fast_dev_run=true", f"hydra.run.dir={smoke}", tmp_path=tmp_path)
    assert json.loads((smoke / "metrics.json").read_text())["users_evaluated"] == 30


def test_tracking_settings_do_not_make_a_finished_run_another_run(tmp_path):
    palr_run(f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path)
    again = palr_run(f"hydra.run.dir={tmp_path}/run", "trainer.logger=none", "trainer.log_every_n_steps=5",
                     tmp_path=tmp_path)
    assert "holds this run, finished" in again.stdout


@pytest.mark.slow
def test_mlflow_with_a_sqlite_store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    palr_run(f"hydra.run.dir={tmp_path}/run", "trainer.logger=mlflow", f"trainer.mlflow_tracking_uri={uri}",
             "trainer.experiment_name=baselines", tmp_path=tmp_path)
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("baselines").experiment_id])
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run.data.metrics["retriever/HR_at_10"] == pytest.approx(saved["rows"][0]["HR@10"])
