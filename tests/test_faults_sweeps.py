"""A sweep checks every job before the first one starts: a bad value in a later job runs nothing."""

from __future__ import annotations

from pathlib import Path

from tests.test_cli import palr_run


def ran_nothing(sweep: Path) -> None:
    assert not list(sweep.rglob("metrics.json")) and not list(sweep.rglob("run.json"))


def test_a_bad_value_in_a_later_sweep_job_stops_the_sweep_before_the_first(tmp_path):
    proc = palr_run("-m", "eval.candidates=5,0", f"hydra.sweep.dir={tmp_path}/sweep", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "palr: sweep job 1 of jobs 0-1 (eval.candidates=0): eval.candidates must be >= 1, got 0; no job was started"]
    ran_nothing(tmp_path / "sweep")


def test_a_bad_component_option_in_a_later_job_names_the_job_and_value(tmp_path):
    proc = palr_run("-m", "retriever=sasrec", "trainer.max_epochs=1", "eval.max_users=20",
                    "retriever.dropout=0.1,1.5", f"hydra.sweep.dir={tmp_path}/sweep", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "palr: sweep job 1 of jobs 0-1 (retriever.dropout=1.5): retriever 'sasrec': retriever.dropout must be "
        ">= 0 and < 1, got 1.5; no job was started"]
    ran_nothing(tmp_path / "sweep")


def test_a_value_of_the_wrong_type_in_a_sweep_is_one_line(tmp_path):
    proc = palr_run("-m", "seed=1,2", "eval.candidates=5,abc", f"hydra.sweep.dir={tmp_path}/sweep",
                    tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "palr: sweep job 1 of jobs 0-3 (seed=1 eval.candidates=abc): Error merging override eval.candidates=abc: "
        "Value 'abc' of type 'str' could not be converted to Integer; no job was started"]
    ran_nothing(tmp_path / "sweep")

