"""A run's result files read back by ``palr report``, ``palr export``, ``load_run`` and a finished run
started again: anything palr did not write is one line naming the file and field, never a traceback,
and a model name cannot change the structure of a markdown table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from palr_core.cli import main
from palr_core.result_files import ResultFileError
from palr_core.runs import RunResult
from tests.test_cli import palr_run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("results")
    palr_run(f"hydra.run.dir={tmp / 'run'}", "eval.max_users=20", tmp_path=tmp)
    return tmp / "run"


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns(".palr.lock")))


def palr(*args: str, capsys) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def set_path(saved: dict, path: str, value) -> dict:
    *parents, last = path.split("/")
    node = saved
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return saved


EDITS = [  # (what is done to metrics.json, what the one line says after the file's name)
    (lambda s, t: t[: len(t) // 2], "not valid JSON (Expecting"),
    (lambda s, t: "", "not valid JSON (Expecting value at line 1, column 1)"),
    (lambda s, t: b"\xff\xfe\x00garbage", "not UTF-8 text (byte 0)"),
    (lambda s, t: "[]", "the file must be a JSON object with rows, dataset, users_evaluated..., got an array []"),
    (lambda s, t: set_path(s, "rows", KeyError), "no 'rows' key"),
    (lambda s, t: set_path(s, "rows", {}), "rows must be a non-empty array of result rows, got an object {}"),
    (lambda s, t: set_path(s, "rows", []), "rows must be a non-empty array of result rows, got an array []"),
    (lambda s, t: set_path(s, "rows/1", "x"), 'rows[1] must be an object (model and metrics), got a string "x"'),
    (lambda s, t: set_path(s, "rows/0/model", KeyError), "rows[0].model must be the row's name as text, it is missing"),
    (lambda s, t: set_path(s, "rows/0/model", 7), "rows[0].model must be the row's name as text, got a number 7"),
    (lambda s, t: set_path(s, "rows/0/NDCG@10", "0.5"), 'rows[0].NDCG@10 must be a number (or null), got a string "0.5"'),
    (lambda s, t: set_path(s, "rows/0/NDCG@10", True), "rows[0].NDCG@10 must be a number (or null), got true"),
    (lambda s, t: set_path(s, "rows/1/HR@5", 1e300), "rows[1].HR@5 must be a share between 0 and 1, got a number 1e+300"),
    (lambda s, t: t.replace('"HR@5": 0.', '"HR@5": 1e999', 1), "rows[0].HR@5 must be a number (or null), got a number Infinity"),
    (lambda s, t: json.dumps(set_path(s, "rows/0/HR@5", 10 ** 100)), "rows[0].HR@5 must be a share between 0 and 1"),
    (lambda s, t: '{"rows": [{"model": "x", "HR@5": ' + "9" * 5000 + "}]}", "not a metrics file palr writes (Exceeds"),
    (lambda s, t: '{"rows": [{"model": "x", "HR@5": 1e999}]}', "rows[0].HR@5 must be a number (or null), got a number Infinity"),
    (lambda s, t: '{"rows": [{"model": "x", "HR@5": NaN}]}', "not a metrics file palr writes (it holds NaN, which strict"),
    (lambda s, t: set_path(s, "rows/1/MRR@10", KeyError), "rows[1] has the metrics HR@5, "),
    (lambda s, t: set_path(s, "users_evaluated", "20"), 'users_evaluated must be a whole number >= 0, got a string "20"'),
    (lambda s, t: set_path(s, "users_evaluated", -1), "users_evaluated must be a whole number >= 0, got a number -1"),
    (lambda s, t: set_path(s, "dataset", ["x"]), 'dataset must be the dataset\'s name as text, got an array ["x"]'),
    (lambda s, t: set_path(s, "timings_s/load", "slow"), 'timings_s.load must be seconds (a finite number >= 0), got a string "slow"'),
    (lambda s, t: set_path(s, "timings_s", 3), "timings_s must be an object, got a number 3"),
    (lambda s, t: set_path(s, "validation/retriever/NDCG@10", {}),
     "validation.retriever.NDCG@10 must be a number (or null), got an object {}"),
]


def craft(run: Path, edit) -> Path:
    file = run / "metrics.json"
    text = file.read_text()
    out = edit(json.loads(text), text)
    if isinstance(out, dict):
        out = json.dumps(out)
    file.write_bytes(out if isinstance(out, bytes) else out.encode())
    return file


@pytest.mark.parametrize(("edit", "says"), EDITS)
def test_a_crafted_metrics_json_given_to_palr_report_is_one_named_line(finished_run, tmp_path, capsys, edit, says):
    file = craft(copy_of(finished_run, tmp_path), edit)
    code, _, err = palr("report", str(file.parent), "-o", str(tmp_path / "out"), capsys=capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"palr: {file}: {says}"), err
    assert err.rstrip().endswith("run the run again to rewrite it") or "cannot read" in err
    assert not (tmp_path / "out" / "report.md").exists()


def test_a_newline_or_pipe_in_a_model_name_does_not_rewrite_the_report(finished_run, tmp_path, capsys):
    plain = tmp_path / "plain"
    assert palr("report", str(finished_run), "-o", str(plain), capsys=capsys)[0] == 0
    run = copy_of(finished_run, tmp_path)
    craft(run, lambda s, t: set_path(s, "rows/0/model", "retriever: evil\n| injected | 1 |\n## Owned | x"))
    assert palr("report", str(run), "-o", str(tmp_path / "out"), capsys=capsys)[0] == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert len(report.splitlines()) == len((plain / "report.md").read_text().splitlines())
    assert not any(line.startswith(("## Owned", "| injected")) for line in report.splitlines())
    row = next(line for line in report.splitlines() if "evil" in line)
    assert "retriever: evil\\n\\| injected \\| 1 \\|\\n## Owned \\| x" in row
    assert row.count(" | ") == report.splitlines()[4].count(" | ")  # as many cells as the header


def test_a_newline_or_pipe_in_a_model_name_does_not_rewrite_results_md():
    table = RunResult(rows=[{"model": "ranker: a\n| b |", "HR@5": 0.5}], stats={}, timings={}).table()
    assert table.splitlines() == ["| model | HR@5 |", "|---|---:|", "| ranker: a\\n\\| b \\| | 0.5000 |"]


# -- rankings.parquet ------------------------------------------------------------------------------
def rewrite_rankings(run: Path, change) -> Path:
    file = run / "rankings.parquet"
    columns = pq.read_table(file).to_pydict()
    table = change(columns)
    pq.write_table(table if isinstance(table, pa.Table) else pa.table(columns), file)
    return file


RANKINGS_EDITS = [
    (lambda c: c.update(rank=[str(r) for r in c["rank"]]), "column 'rank' must hold positions from 1, got string"),
    (lambda c: c.pop("held_out"), "no column 'held_out' (it has user, rank, item, title, retriever_rank, retriever_score)"),
    (lambda c: c.update(rank=[0] * len(c["rank"])), "column 'rank' must hold positions from 1, got 0"),
    (lambda c: c.update(retriever_rank=[None] + c["retriever_rank"][1:]), "column 'retriever_rank' has 1 missing value(s)"),
    (lambda c: c.update(held_out=[1] * len(c["held_out"])), "column 'held_out' must hold true/false, got int64"),
    (lambda c: c.update(user=[[u] for u in c["user"]]), "column 'user' must hold whole numbers or text, got list<element: int64>"),
]


@pytest.mark.parametrize("command", ["report", "export"])
@pytest.mark.parametrize(("change", "says"), RANKINGS_EDITS)
def test_a_crafted_rankings_file_is_one_named_line(finished_run, tmp_path, capsys, command, change, says):
    file = rewrite_rankings(copy_of(finished_run, tmp_path), change)
    code, _, err = palr(command, str(file.parent), "-o", str(tmp_path / "out" / "x.csv"), capsys=capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err == f"palr: {file} is not a rankings file palr wrote: {says}; run the run again to rewrite it\n"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# -- load_run and a finished run started again ---------------------------------------------------
def test_load_run_refuses_a_crafted_metrics_json_naming_it(finished_run, tmp_path):
    from palr_core.api import load_run

    file = craft(copy_of(finished_run, tmp_path), lambda s, t: set_path(s, "rows", "x"))
    with pytest.raises(ResultFileError, match=rf"^{file}: rows must be a non-empty array of result rows, got a string"):
        load_run(file.parent)


def test_a_finished_run_started_again_with_a_crafted_metrics_json_is_one_line(finished_run, tmp_path):
    file = craft(copy_of(finished_run, tmp_path), lambda s, t: set_path(s, "rows/0/HR@5", "high"))
    proc = palr_run(f"hydra.run.dir={file.parent}", "eval.max_users=20", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f'palr: {file}: rows[0].HR@5 must be a number (or null), got a '
                                                    'string "high"; run the run again to rewrite it')
