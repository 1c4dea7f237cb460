"""Writes stay in their folder and are whole; a finished run on changed data is not passed off as done."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from palr_core.atomic import OutsideFolderError, write_atomic, write_with
from tests.test_cli import palr_command, palr_process, palr_run


def write_log(path: Path, users: int = 40, seed: int = 0) -> Path:
    """A small interaction log as CSV with a header (user_id, item_id, timestamp)."""
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,timestamp"]
    for user in range(users):
        for step, item in enumerate(rng.choice(30, size=12, replace=False)):
            lines.append(f"u{user},i{item},{1000 * user + step}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_atomic_write_replaces_a_link_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").symlink_to(outside)
    write_atomic(run / "metrics.json", "{}", run)
    assert outside.read_text() == "precious"
    assert not (run / "metrics.json").is_symlink() and (run / "metrics.json").read_text() == "{}"


def test_a_write_whose_folder_leads_outside_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutsideFolderError, match="outside .*run; palr writes only inside it"):
        write_atomic(run / "sub" / "x.txt", "x", run)
    assert not (tmp_path / "elsewhere" / "x.txt").exists()


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path):
    target = tmp_path / "rankings.csv"
    target.write_text("the complete old file")

    def half(tmp: Path) -> None:
        tmp.write_text("half a")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_with(target, half)
    assert target.read_text() == "the complete old file"
    assert [p.name for p in tmp_path.iterdir()] == ["rankings.csv"]


def test_a_resumed_run_does_not_write_through_links_planted_in_its_folder(tmp_path):
    run = tmp_path / "run"
    palr_run(f"hydra.run.dir={run}", "eval.max_users=20", tmp_path=tmp_path)
    outside = {name: tmp_path / f"outside-{name}" for name in ("metrics.json", "results.md", "dataset_stats.md")}
    for name, target in outside.items():
        target.write_text("precious")
        (run / name).unlink()
        (run / name).symlink_to(target)
    (run / "run.json").write_text((run / "run.json").read_text().replace('"finished": true', '"finished": false'))
    palr_run(f"hydra.run.dir={run}", "eval.max_users=20", tmp_path=tmp_path)
    assert all(target.read_text() == "precious" for target in outside.values())
    assert (run / "metrics.json").is_file() and not (run / "metrics.json").is_symlink()


def export(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return palr_command("export", *args, cwd=cwd)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    palr_run(f"hydra.run.dir={tmp / 'run'}", "eval.max_users=20", tmp_path=tmp)
    return tmp / "run"


@pytest.mark.parametrize(("args", "says"), [
    (["-k", "0"], "palr: -k must be 1 or more (each user's top K), got 0"),
    (["-k", "-1"], "palr: -k must be 1 or more (each user's top K), got -1"),
    (["-f", "csv", "-o", "{run}/metrics.json"], "metrics.json is one of the run's own files; give another --output"),
    (["-o", "{run}/recommendations.parquet"], "recommendations.parquet is one of the run's own files; give"),
    (["-f", "csv", "-o", "{run}/.hydra/config.yaml"], "config.yaml is one of the run's own files"),  # in a subfolder
])
def test_export_refuses_what_would_lose_data(finished_run, tmp_path, args, says):
    before = {p: p.read_bytes() for p in finished_run.rglob("*") if p.is_file()}
    proc = export(str(finished_run), *(a.format(run=finished_run) for a in args), cwd=tmp_path)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert all(p.read_bytes() == content for p, content in before.items())


def test_export_replaces_an_earlier_export_and_writes_new_files_in_the_run(finished_run, tmp_path):
    for target in (finished_run / "top5.csv", finished_run / "top5.csv", finished_run / "exports" / "top5.csv"):
        proc = export(str(finished_run), "-k", "5", "-o", str(target), cwd=tmp_path)
        assert proc.returncode == 0 and target.is_file(), proc.stderr


def test_export_of_a_damaged_rankings_file_is_one_named_line(finished_run, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "rankings.parquet").write_bytes((finished_run / "rankings.parquet").read_bytes()[:100])
    proc = export(str(copy), cwd=tmp_path)
    assert proc.returncode == 2 and "rankings.parquet is not a rankings file palr wrote" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_finished_run_whose_data_changed_is_refused_not_reported(tmp_path):
    log = write_log(tmp_path / "log.csv")
    args = (f"hydra.run.dir={tmp_path / 'run'}", "dataset=table", f"dataset.interactions={log}",
            "eval.max_users=20")
    palr_run(*args, tmp_path=tmp_path)
    write_log(log, seed=1)  # the same file name, other interactions
    proc = palr_run(*args, tmp_path=tmp_path, check=False)
    assert proc.returncode == 1
    assert "holds a run on other data" in proc.stderr and "Traceback" not in proc.stderr
    assert os.path.getsize(tmp_path / "run" / "metrics.json") > 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_run_with_one_line_and_the_same_command_resumes_it(tmp_path, sig):
    import signal
    import time

    args = [f"hydra.run.dir={tmp_path / 'run'}", "retriever=sasrec", "ranker=identity", "profile=none",
            "eval.max_users=20", "trainer.max_epochs=5"]
    proc = palr_process(args, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # the retriever is training once its stage is announced
        if "fit_retriever ..." in line:
            break
    time.sleep(1)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, sig), err
    assert "Received SIGTERM" not in out + err  # Lightning's own note: palr's line says it
    assert (f"palr: {sig} stopped the run in {tmp_path / 'run'} during its stage 'fit_retriever'; "
            "the same command resumes it") in err
    assert "Traceback" not in err and not (tmp_path / "run" / "metrics.json").exists()
    if sig == "SIGTERM":  # (resuming is the same after either signal)
        palr_run(*args, tmp_path=tmp_path, fast=False)
        assert (tmp_path / "run" / "metrics.json").is_file()


@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sasrec")
    palr_run(f"hydra.run.dir={tmp / 'run'}", "retriever=sasrec", "retriever.max_epochs=3", "eval.max_users=20",
             tmp_path=tmp)
    return tmp / "run"


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_recommending_from_a_finished_run_writes_nothing_in_it(sasrec_run, tmp_path):
    import palr

    before = snapshot(sasrec_run)
    run = palr.load_run(sasrec_run)
    assert run.recommend(run.users[0], k=3)
    assert snapshot(sasrec_run) == before


def test_a_run_whose_training_is_gone_is_refused_not_trained_again(sasrec_run, tmp_path):
    import shutil

    import palr
    from palr_core.runs import RunFolderError

    copy = tmp_path / "copy"
    shutil.copytree(sasrec_run, copy)
    shutil.rmtree(copy / "retriever_training")
    with pytest.raises(RunFolderError, match="the retriever 'sasrec' has no finished training in this run folder"):
        palr.load_run(copy)
    assert not (copy / "retriever_training").exists()


@pytest.mark.slow
def test_a_loaded_llm_run_reads_back_its_fusion_weight_instead_of_tuning_again(tmp_path, monkeypatch):
    from palr.plugins.llama_lora.ranker import LlamaLoraRanker

    import palr

    run = tmp_path / "run"
    palr_run(f"hydra.run.dir={run}", "ranker=llama_lora", "eval.max_users=10", "eval.tune_users=20",
             "trainer.max_epochs=1", tmp_path=tmp_path)
    monkeypatch.setenv("PALR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(LlamaLoraRanker, "tune", lambda *a, **k: pytest.fail("tuned again"))
    before = snapshot(run)
    loaded = palr.load_run(run)
    assert loaded.ranker.weight is not None and loaded.recommend(loaded.users[0], k=3)
    assert snapshot(run) == before
