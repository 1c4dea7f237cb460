"""``palr recommend`` from a run's ``recommendations.parquet``: the same answers as the run's models,
without importing them; every way the file cannot answer falls back to the models or is one named line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from palr_core.cli import main
from palr_core.runs import RECOMMENDATIONS
from tests.test_cli import palr_run

RUN = ("eval.max_users=20", "recommend.k=8")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("recommend")
    palr_run(f"hydra.run.dir={tmp / 'run'}", *RUN, tmp_path=tmp)
    return tmp / "run"


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns(".palr.lock")))


def cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def file_users(run: Path) -> list[str]:
    return [str(u) for u in dict.fromkeys(pq.read_table(run / RECOMMENDATIONS)["user"].to_pylist())]


def test_the_run_writes_each_evaluated_users_top_k(finished_run):
    table = pq.read_table(finished_run / RECOMMENDATIONS)
    evaluated = set(pq.read_table(finished_run / "rankings.parquet")["user"].to_pylist())
    assert set(table["user"].to_pylist()) == evaluated and table.num_rows == 8 * len(evaluated)
    about = json.loads(table.schema.metadata[b"palr"])
    assert about == {"ranker": "identity", "retriever": "popularity", "k": 8, "candidates": 50, "eval_candidates": 50}
    assert "recommend" in json.loads((finished_run / "metrics.json").read_text())["timings_s"]


def test_the_file_answers_as_the_models_do_and_imports_no_model_library(finished_run, capsys):
    users = file_users(finished_run)[:3]
    asked = [a for u in users for a in ("-u", u)]
    probe = ("import json, sys; from palr_core.cli import main; code = main(sys.argv[1:]); "
             "print(json.dumps(sorted(m for m in ('torch', 'lightning', 'transformers', 'peft') if m in sys.modules)),"
             " file=sys.stderr); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", probe, "recommend", str(finished_run), *asked, "-k", "5", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "[]"  # answered without torch, Lightning, transformers or peft
    code, recomputed, err = cli(capsys, "recommend", str(finished_run), *asked, "-k", "5", "--json", "--recompute")
    assert code == 0 and json.loads(proc.stdout) == json.loads(recomputed)
    code, text, err = cli(capsys, "recommend", str(finished_run), "-u", users[0], "-k", "8")
    code_models, text_models, _ = cli(capsys, "recommend", str(finished_run), "-u", users[0], "-k", "8", "--recompute")
    assert code == code_models == 0 and text == text_models and err == ""
    assert text.startswith(f"user {users[0]}: top 8 by identity over popularity's top-50 (after ")


@pytest.mark.parametrize(("args", "says"), [
    (["-k", "9"], "recommendations.parquet holds each user's top 8 (recommend.k), ranked among 50 candidates"),
    (["-u", "unevaluated"], "user {user} is not among the evaluated users whose answers recommendations.parquet holds"),
])
def test_what_the_file_cannot_answer_the_models_do(finished_run, capsys, args, says):
    import palr

    evaluated = set(file_users(finished_run))
    user = next(str(u) for u in palr.load_run(finished_run).users if str(u) not in evaluated)
    asked = ["-u", user if "-u" in args else sorted(evaluated)[0]] + (args if "-k" in args else [])
    code, out, err = cli(capsys, "recommend", str(finished_run), *asked, "--json")
    assert code == 0 and err.strip() == "palr: answered by the run's models: " + says.format(user=user)
    code, recomputed, _ = cli(capsys, "recommend", str(finished_run), *asked, "--json", "--recompute")
    assert json.loads(out) == json.loads(recomputed)


def test_a_read_only_run_answers_from_its_file_and_nothing_in_it_changes(finished_run, tmp_path, capsys, read_only):
    run = copy_of(finished_run, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    read_only(run)
    user = file_users(run)[0]
    code, out, err = cli(capsys, "recommend", str(run), "-u", user, "-k", "3")
    assert code == 0 and err == "" and out.count("\n") == 5
    code, again, err = cli(capsys, "recommend", str(run), "-u", user, "-k", "3", "--recompute")  # the models
    assert code == 0 and [line.split()[1] for line in again.splitlines()[2:]] == [line.split()[1] for line in
                                                                               out.splitlines()[2:]], err
    # what would write into the run says so in one line, and where to write instead
    code, _, err = cli(capsys, "export", str(run))
    assert code == 2 and err.startswith(f"palr: cannot write {run / 'rankings.csv'} (") and "give --output" in err
    code, _, err = cli(capsys, "report", str(run))
    assert code == 2 and err.startswith(f"palr: cannot write the report into {run} (") and "give --output" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def _rewrite(path: Path, change) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


def _set_column(name: str, values):
    return lambda t: t.set_column(t.schema.get_field_index(name), name, pa.array(values(t)))


DAMAGE = [  # (what is done to recommendations.parquet, what the one line says after the file's name)
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "is not a recommendations file palr wrote ("),
    (lambda p: p.write_bytes(b""), "is not a recommendations file palr wrote ("),
    (lambda p: _rewrite(p, lambda t: t.drop_columns(["history_length"])),
     "no column 'history_length' (it has user, rank, item, title, retriever_rank, retriever_score, last_title)"),
    (lambda p: _rewrite(p, lambda t: t.replace_schema_metadata({})), "its metadata has no 'palr' object"),
    (lambda p: _rewrite(p, lambda t: t.replace_schema_metadata({"palr": '{"ranker": "x"}'})),
     "metadata 'retriever' must be text, it is missing"),
    (lambda p: _rewrite(p, lambda t: t.replace_schema_metadata({"palr": json.dumps(
        {"ranker": "x", "retriever": "y", "k": 0, "candidates": 50, "eval_candidates": 50})})),
     "metadata 'k' must be a whole number >= 1, got 0"),
    (lambda p: _rewrite(p, _set_column("rank", lambda t: [0] * t.num_rows)), "column 'rank' must hold positions from 1, got 0"),
    (lambda p: _rewrite(p, _set_column("retriever_score", lambda t: ["x"] * t.num_rows)),
     "column 'retriever_score' must hold numbers, got string"),
    (lambda p: _rewrite(p, _set_column("rank", lambda t: [2] * t.num_rows)), "'s ranks are not 1, 2, 3, ..."),
]


@pytest.mark.parametrize(("damage", "says"), DAMAGE)
def test_a_damaged_or_crafted_file_is_one_named_line(finished_run, tmp_path, capsys, damage, says):
    run = copy_of(finished_run, tmp_path)
    user = file_users(run)[0]
    damage(run / RECOMMENDATIONS)
    code, out, err = cli(capsys, "recommend", str(run), "-u", user, "-k", "3")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"palr: {run / RECOMMENDATIONS}") and says in err
    assert err.rstrip().endswith("; or ask the models with --recompute")


def test_an_unfinished_run_is_refused_though_its_file_is_there(finished_run, tmp_path, capsys):
    run = copy_of(finished_run, tmp_path)
    (run / "run.json").write_text((run / "run.json").read_text().replace('"finished": true', '"finished": false'))
    code, _, err = cli(capsys, "recommend", str(run), "-u", file_users(run)[0])
    assert code == 2 and "holds a run that has not finished" in err


def test_a_run_cut_short_before_it_finished_writes_the_same_file_again(finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path)
    written = (run / RECOMMENDATIONS).read_bytes()
    (run / RECOMMENDATIONS).unlink()  # killed in its recommend stage: no file (it is written whole or not at all)
    (run / "run.json").write_text((run / "run.json").read_text().replace('"finished": true', '"finished": false'))
    os.remove(run / "metrics.json")
    palr_run(f"hydra.run.dir={run}", *RUN, tmp_path=finished_run.parent)
    assert (run / RECOMMENDATIONS).read_bytes() == written


def test_no_file_without_precompute_and_the_models_answer(tmp_path, capsys, monkeypatch):
    palr_run(f"hydra.run.dir={tmp_path / 'run'}", "eval.max_users=5", "recommend.precompute=false", tmp_path=tmp_path)
    assert not (tmp_path / "run" / RECOMMENDATIONS).exists()
    monkeypatch.setenv("PALR_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = cli(capsys, "recommend", str(tmp_path / "run"), "-u", "1", "-k", "2")
    assert code == 0 and err == "" and out.startswith("user 1: top 2 by identity over popularity's top-50")
