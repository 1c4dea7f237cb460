"""palr from Python (palr.run, palr.load_run) and from a finished run (palr recommend, palr export)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import palr
from palr_core import RankRequest
from palr_core.pipeline import RunFolderError
from tests.test_cli import FAST, REPO, palr_run
from tests.test_faults import PIPELINE

FAST_OVERRIDES = [f"{group}={name}" for group, name in FAST.items()]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PALR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


@pytest.mark.slow
def test_palr_run_runs_what_palr_run_runs(in_tmp):
    overrides = [*FAST_OVERRIDES, "eval.candidates=30", "seed=3"]
    result = palr.run(overrides)
    assert result.run_dir.parent.parent.name == "outputs" and (result.run_dir / "metrics.json").is_file()
    assert (result.run_dir / "palr.log").read_text().count("| model |") == 1
    palr_run(*overrides, f"hydra.run.dir={in_tmp}/cli", tmp_path=in_tmp)
    assert result.rows == json.loads((in_tmp / "cli" / "metrics.json").read_text())["rows"]
    assert result.metrics("ranker")["NDCG@10"] == result.rows[1]["NDCG@10"]
    again = palr.run(overrides, run_dir=result.run_dir)  # a finished folder is read back
    assert again.rows == result.rows and again.run_dir == result.run_dir
    # each stage's peak memory is the process's high-water mark: never falling, kept in metrics.json
    peaks = list(result.peak_memory_gb.values())
    assert list(result.peak_memory_gb) == list(result.timings) and peaks == sorted(peaks) and peaks[0] > 0
    assert again.peak_memory_gb == result.peak_memory_gb
    assert again.training == result.training == {}  # popularity and identity train nothing


def test_the_validation_metrics_are_the_retriever_on_validation_items_never_the_test_item(in_tmp):
    """A run's ``validation`` is the retriever ranking each evaluated user's validation item from the
    training prefix: computed here independently with the same (deterministic) popularity model."""
    from palr.plugins.popularity.retriever import PopularityRetriever
    from palr.plugins.synthetic.dataset import SyntheticMovies

    from palr_core import (
        PalrConfig,
        TrainingData,
        leave_one_out_split,
        metrics_from_ranks,
        preprocess,
        rank_from_lists,
    )

    result = palr.run([*FAST_OVERRIDES, "objective=validation/NDCG@10"])
    data = preprocess(SyntheticMovies().load(), k_core=5)
    split = leave_one_out_split(data)
    popularity = PopularityRetriever()
    popularity.fit(TrainingData(split.train, split.valid, data.catalog), None)
    ids, _ = popularity.retrieve(split.histories("valid"), 20)
    expected = metrics_from_ranks(rank_from_lists(ids, split.valid), (5, 10, 20))
    assert result.validation == pytest.approx(expected)
    assert result.validation != result.metrics("retriever")  # the test row ranks other items
    saved = json.loads((result.run_dir / "metrics.json").read_text())["validation"]["retriever"]
    again = palr.run([*FAST_OVERRIDES, "objective=validation/NDCG@10"], run_dir=result.run_dir)  # read back
    assert saved == pytest.approx(expected) and again.validation == saved
    config = PalrConfig(dataset={}, retriever={}, profile={}, ranker={}, objective="validation/NDCG@10")
    assert config.objective_value(result) == expected["NDCG@10"]


def test_palr_run_refuses_a_wrong_option_by_name(in_tmp):
    with pytest.raises(Exception, match=r"no retriever named 'sasrek' \(did you mean 'sasrec'\?\)"):
        palr.run(["retriever=sasrek"])


#: PIPELINE with fewer epochs, fine-tuning users and tuning users: what a finished run holds is the same
SHORTER = ("retriever.max_epochs=2", "ranker.instructions.user_fraction=0.1", "eval.tune_users=20")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A whole small PALR pipeline (SASRec, keyword profiles, the tiny LLaMA ranker), finished."""
    tmp = tmp_path_factory.mktemp("finished")
    palr_run(*PIPELINE, *SHORTER, f"hydra.run.dir={tmp}/run", tmp_path=tmp, fast=False)
    return tmp / "run"


def _load(run_dir: Path):
    from unittest import mock

    with mock.patch.dict(os.environ, {"PALR_CACHE_DIR": str(run_dir.parent / "cache")}):  # only while loading
        return palr.load_run(run_dir)


@pytest.mark.slow
def test_a_loaded_run_ranks_its_evaluated_users_as_the_run_did(finished_run):
    checkpoints = {p: p.stat().st_mtime_ns for p in finished_run.rglob("*.ckpt")}
    run = _load(finished_run)
    assert {p: p.stat().st_mtime_ns for p in finished_run.rglob("*.ckpt")} == checkpoints  # nothing retrained
    saved = pq.read_table(finished_run / "rankings.parquet").to_pylist()
    users = sorted({row["user"] for row in saved})[:8]
    index = [run.user_index(u) for u in users]
    histories = [run.data.sequences[i][:-1] for i in index]  # what the run saw: all but the test item
    candidates, scores = run.retriever.retrieve(histories, run.config.eval.candidates)
    profiles = run.profile.generate(index, histories, run.context)
    requests = [RankRequest(user=i, history=h, candidates=c, candidate_scores=s, profile=p or None)
                for i, h, c, s, p in zip(index, histories, candidates, scores, profiles)]
    ranked = run.ranker.rank(requests, run.context)
    for user, request, order in zip(users, requests, ranked):
        rows = sorted((r for r in saved if r["user"] == user), key=lambda r: r["rank"])
        assert [r["item"] for r in rows] == [run.data.catalog.ids[i] for i in order]
        assert [r["retriever_rank"] for r in rows] == [list(request.candidates).index(i) + 1 for i in order]
        held_out = [r["item"] for r in rows if r["held_out"]]
        assert held_out in ([], [run.data.catalog.ids[run.data.sequences[run.user_index(user)][-1]]])


@pytest.mark.slow
def test_recommend_gives_unseen_items_by_dataset_ids(finished_run):
    run = _load(finished_run)
    user = run.users[7]
    recs = run.recommend(user, k=10)
    assert [r.rank for r in recs] == list(range(1, 11))
    seen = {item for item, _ in run.history(user)}
    assert not seen & {r.item for r in recs} and len({r.item for r in recs}) == 10
    assert all(r.title == run.data.catalog.titles[run.data.catalog.ids.index(r.item)] for r in recs)
    assert run.recommend(str(user), k=10) == recs  # "42" names user 42; and it is deterministic
    many = run.recommend_many(run.users[:3], k=4)
    assert list(many) == run.users[:3] and all(len(v) == 4 for v in many.values())
    with pytest.raises(KeyError, match=r"no user 'nobody' in this run's dataset 'synthetic' \(after 5-core"):
        run.recommend("nobody")


@pytest.mark.slow
def test_the_runs_recommendations_file_is_what_its_models_answer(finished_run):
    """``recommendations.parquet`` (what ``palr recommend`` reads) holds what the loaded run's
    retriever, profiles and fine-tuned ranker give every evaluated user after their whole history."""
    run = _load(finished_run)
    table = pq.read_table(finished_run / "recommendations.parquet")
    users = list(dict.fromkeys(table["user"].to_pylist()))
    assert set(users) == set(pq.read_table(finished_run / "rankings.parquet")["user"].to_pylist())
    answers = run.recommend_many(users, json.loads(table.schema.metadata[b"palr"])["k"])
    rows = table.to_pylist()
    for user in users:
        saved = [r for r in rows if r["user"] == user]
        assert [(r["rank"], r["item"], r["title"], r["retriever_rank"]) for r in saved] == [
            (a.rank, a.item, a.title, a.retriever_rank) for a in answers[user]]
        assert [r["retriever_score"] for r in saved] == pytest.approx([a.retriever_score for a in answers[user]])
        assert {(r["history_length"], r["last_title"]) for r in saved} == {(len(run.history(user)),
                                                                            run.history(user)[-1][1])}


def test_load_run_refuses_what_is_not_a_finished_run(tmp_path):
    with pytest.raises(RunFolderError, match="is not a palr run folder"):
        palr.load_run(tmp_path)


def palr_cli(capsys, *args: str) -> tuple[int, str, str]:
    """``palr <args>`` in this process (the command-line entry point, without a new interpreter)."""
    from palr_core.cli import main

    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_palr_recommend_and_export(finished_run, capsys):
    tmp = finished_run.parent
    run = _load(finished_run)
    user = run.users[4]
    code, out, _ = palr_cli(capsys, "recommend", str(finished_run), "--user", str(user), "-k", "3", "--json")
    [answer] = json.loads(out)
    assert code == 0 and answer["user"] == user
    assert [r["item"] for r in answer["recommendations"]] == [r.item for r in run.recommend(user, k=3)]
    code, text, _ = palr_cli(capsys, "recommend", str(finished_run), "-u", str(user))
    assert text.startswith(f"user {user}: top 10 by PALR v2") and run.recommend(user)[0].title in text
    code, _, err = palr_cli(capsys, "recommend", str(finished_run), "-u", "nobody")
    assert code == 2 and err.startswith("palr: no user 'nobody'")

    code, said, _ = palr_cli(capsys, "export", str(finished_run), "-k", "5")
    csv = (finished_run / "rankings_top5.csv").read_text().splitlines()
    assert csv[0] == '"user","rank","item","title","retriever_rank","retriever_score","held_out"'
    assert len(csv) - 1 == 5 * json.loads((finished_run / "metrics.json").read_text())["users_evaluated"]
    assert re.search(r"300 rows \(60 users, ranked lists of up to 5 items\)", said)
    palr_cli(capsys, "export", str(finished_run), "-o", str(tmp / "all.parquet"))
    assert pq.read_table(tmp / "all.parquet").equals(pq.read_table(finished_run / "rankings.parquet"))
    code, _, err = palr_cli(capsys, "export", str(tmp))
    assert code == 2 and "no rankings.parquet in" in err


def _python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))


#: run before the page's code: each ``palr.run`` gets ``eval.tune_users=20`` and, with the default
#: ranker (the tiny LLaMA), a smaller tiny LLaMA fine-tuned on fewer users: the same pipeline in a third
#: of the CPU time (the page's own time is for its code as written)
CHEAPER_RUNS = """
import palr

def _cheaper(overrides, _run=palr.run, **kwargs):
    ranker = [] if any(o.startswith("ranker=") for o in overrides) else [
        "ranker.tiny.hidden_size=32", "ranker.tiny.layers=1", "ranker.instructions.user_fraction=0.05"]
    return _run([*overrides, *ranker, "eval.tune_users=20"], **kwargs)

palr.run = _cheaper
"""


@pytest.mark.slow
def test_the_python_api_page_runs_as_written(tmp_path):
    """docs/python-api.md's code, run top to bottom like a notebook (:data:`CHEAPER_RUNS` first)."""
    code = _python_blocks(REPO / "docs" / "python-api.md")
    assert "palr.run(" in code and "palr.load_run(" in code and ".recommend(" in code
    code = CHEAPER_RUNS + code
    env = {**os.environ, "PALR_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| model |" in proc.stdout and np.any(["rank" in line for line in proc.stdout.splitlines()])


def test_the_objective_is_the_named_row_and_metric():
    from palr_core import PalrConfig
    from palr_core.pipeline import RunResult

    result = RunResult(rows=[{"model": "retriever: sasrec (its own order)", "HR@20": 0.5, "NDCG@10": 0.25},
                             {"model": "ranker: PALR v2 over sasrec top-50", "HR@20": 0.75, "NDCG@10": 0.5}],
                       stats={}, timings={})
    config = PalrConfig(dataset={}, retriever={}, profile={}, ranker={})
    assert config.objective_value(result) == 0.5
    config.objective = "retriever/HR@20"
    assert config.objective_value(result) == 0.5 and result.metrics("ranker")["HR@20"] == 0.75


def test_the_results_table_says_what_the_ranker_chose_on_validation_items():
    from palr_core.pipeline import RunResult

    rows = [{"model": "retriever: sasrec (its own order)", "NDCG@10": 0.25},
            {"model": "ranker: PALR v2 over sasrec top-50", "NDCG@10": 0.25}]
    tuning = {"retriever_weight": "retriever order", "users": 200, "retriever order NDCG@10": 0.340401,
              "NDCG@10 by retriever_weight": {"0": 0.09}}
    table = RunResult(rows=rows, stats={}, timings={}, tuning=tuning).table()
    assert table.endswith("The ranker's choice on validation items: retriever_weight=retriever order, users=200, "
                          "retriever order NDCG@10=0.3404")
    assert "validation" not in RunResult(rows=rows, stats={}, timings={}).table()  # a ranker without tune()
