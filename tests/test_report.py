"""The sweep report: per-user metrics, paired tests, labels from differing settings, the CLI."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from scipy import stats

from palr.report import build_report, paired_comparison, per_user, run_labels, write_report
from palr_core.metrics import metrics_from_ranks
from tests.test_cli import palr_command


def _fake_run(folder, config: dict, rows: dict[str, list], dataset="ml-1m", users=None):
    """A finished run folder: config, metrics.json and a rankings.parquet in which each row's
    held-out item sits at the given 0-based ranks (``inf``: not among the 50 candidates)."""
    folder.mkdir(parents=True)
    (folder / "config_resolved.yaml").write_text(yaml.safe_dump(config))
    ranker_ranks, retriever_ranks = rows["ranker"], rows["retriever"]
    users = users or list(range(len(ranker_ranks)))
    table = {"user": [], "rank": [], "retriever_rank": [], "held_out": []}
    for user, ranker_rank, retriever_rank in zip(users, ranker_ranks, retriever_ranks):
        for position in range(50):  # the ranker's order; the held-out item where the ranks say
            held = position == ranker_rank
            table["user"].append(user)
            table["rank"].append(position + 1)
            table["retriever_rank"].append(retriever_rank + 1 if held else 50 - position)
            table["held_out"].append(held)
    pq.write_table(pa.table(table), folder / "rankings.parquet")
    names = {"ranker": f"ranker: PALR v2 (llama_lora tiny, score) over {config['retriever']['name']} top-50",
             "retriever": f"retriever: {config['retriever']['name']} (its own order)"}
    metric_rows = [{"model": names[role], **metrics_from_ranks(np.array(rows[role], float), (10,))}
                   for role in ("retriever", "ranker")]
    (folder / "metrics.json").write_text(json.dumps({"dataset": dataset, "stats": {}, "users_evaluated": len(users),
                                                     "rows": metric_rows, "timings_s": {"fit": 3.0}, "seed": 0}))


def _hydra_overrides(folder, overrides):
    """The command-line overrides Hydra records in a run folder."""
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))


def _config(retriever="sasrec", hidden=64, seed=0, **extra):
    return {"seed": seed, "cache_dir": f"/tmp/cache{seed}", "retriever": {"name": retriever, "hidden": hidden, **extra},
            "ranker": {"name": "llama_lora"}, "dataset": {"name": "movielens", "root": f"/data/{seed}"}}


def test_per_user_metrics_average_to_the_run_metrics():
    ranks = np.array([0, 3, 9, 10, math.inf, 1, 25])
    for metric in ("HR@10", "NDCG@10", "HR@5", "NDCG@20"):
        assert per_user(ranks, metric).mean() == pytest.approx(
            metrics_from_ranks(ranks, (int(metric.split("@")[1]),))[metric])


def test_paired_comparison_is_scipy_s_tests_on_the_common_users():
    rng = np.random.default_rng(0)
    reference = {u: float(r) for u, r in enumerate(rng.integers(0, 30, 400))}
    better = {u: max(r - 3.0, 0.0) for u, r in reference.items()}
    better[9999] = 0.0  # a user only this row evaluated does not count
    result = paired_comparison(better, reference, "NDCG@10")
    a = per_user(np.array([better[u] for u in reference]), "NDCG@10")
    b = per_user(np.array(list(reference.values())), "NDCG@10")
    assert result["users"] == 400
    assert result["difference"] == pytest.approx((a - b).mean())
    assert result["p_ttest"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result["p_wilcoxon"] < 1e-6 and 0 < result["ci_low"] < result["difference"] < result["ci_high"]


def test_identical_rows_differ_by_nothing():
    ranks = {u: float(u % 13) for u in range(100)}
    assert paired_comparison(ranks, dict(ranks), "HR@10") == {
        "users": 100, "difference": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_ttest": 1.0, "p_wilcoxon": 1.0}


def test_labels_name_the_component_and_only_the_settings_that_differ(tmp_path):
    dirs = []
    for i, config in enumerate([_config("sasrec", 64), _config("sasrec", 32), _config("bpr", 64, reg=0.01),
                                _config("bpr", 64, reg=0.01, seed=1)]):
        dirs.append(tmp_path / str(i))
        _fake_run(dirs[-1], config, {"ranker": [1] * 5, "retriever": [2] * 5})
    # cache_dir and dataset.root differ too, but they do not change a result; a component's own
    # options appear only where runs of that component differ in them (bpr's hidden does not)
    assert run_labels(dirs) == ["retriever=sasrec, retriever.hidden=64, seed=0",
                                "retriever=sasrec, retriever.hidden=32, seed=0",
                                "retriever=bpr, seed=0", "retriever=bpr, seed=1"]


def test_the_report_compares_every_row_with_the_sasrec_retriever_and_quotes_the_paper(tmp_path):
    n = 300
    rng = np.random.default_rng(1)
    sasrec = rng.integers(0, 40, n).astype(float)
    _fake_run(tmp_path / "sweep" / "0", _config("bpr"), {"retriever": list(sasrec + 10), "ranker": list(sasrec + 5)})
    _fake_run(tmp_path / "sweep" / "1", _config("sasrec"), {"retriever": list(sasrec),
                                                           "ranker": list(np.maximum(sasrec - 2, 0))})
    report, written = write_report([tmp_path / "sweep"], tmp_path / "out")
    assert [p.name for p in written] == ["report.md", "report.csv", "report.png"]
    names = [r.name for r in report.rows]
    assert names == ["retriever=bpr · retriever", "retriever=bpr · ranker: PALR v2 (llama_lora tiny, score)",
                     "retriever=sasrec · retriever", "retriever=sasrec · ranker: PALR v2 (llama_lora tiny, score)"]
    reference = report.references["ml-1m"]
    assert reference.name == "retriever=sasrec · retriever" and reference.comparison is None
    bpr, palr = report.rows[0], report.rows[3]
    assert bpr.comparison["difference"] < 0 and bpr.comparison["ci_high"] < 0
    assert palr.comparison["difference"] > 0 and palr.comparison["p_wilcoxon"] < 0.001
    assert bpr.paper == (0.0354, 0.0158) and palr.paper == (0.2110, 0.1276)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Best NDCG@10: **retriever=sasrec · ranker: PALR v2 (llama_lora tiny, score)**" in text
    assert "significant at 5 % by both tests." in text
    assert "| 0.2110 / 0.1276 |" in text


def test_a_time_boxed_retriever_is_marked_as_such(tmp_path):
    """The report says what ended each retriever's training (the kit's done.json): a time box is not convergence."""
    _fake_run(tmp_path / "s" / "0", _config("bpr"), {"retriever": [1, 2, 3], "ranker": [0, 2, 3]})
    _fake_run(tmp_path / "s" / "1", _config("sasrec"), {"retriever": [0, 1, 2], "ranker": [0, 1, 2]})
    for job, reason, epochs in (("0", "early_stopping", 40), ("1", "max_time", 17)):
        (tmp_path / "s" / job / "retriever_training").mkdir()
        (tmp_path / "s" / job / "retriever_training" / "done.json").write_text(
            json.dumps({"best_checkpoint": "best.ckpt", "epochs": epochs, "stopped_by": reason}))
    report, _ = write_report([tmp_path / "s"], tmp_path / "out")
    # job 1's ranker kept its retriever's order: its row would repeat the retriever's, and is left out
    assert [r.stopped for r in report.rows] == ["early stopping, 40 epochs", "", "time box (trainer.max_time), 17 epochs"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| time box (trainer.max_time), 17 epochs |" in text
    rows = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert rows[0].split(",")[-6:-4] == ["stopped_by", "epochs"] and ",max_time,17," in rows[3]


def test_the_stop_reason_comes_from_metrics_json_before_the_kits_done_json(tmp_path):
    """Runs record each training's fit_summary in metrics.json; the kit's done.json is the fallback."""
    _fake_run(tmp_path / "s" / "0", _config("sasrec"), {"retriever": [0, 1, 2], "ranker": [0, 1, 2]})
    saved = json.loads((tmp_path / "s" / "0" / "metrics.json").read_text())
    saved["training"] = {"retriever": {"epochs": 22, "stopped_by": "max_time"}}
    (tmp_path / "s" / "0" / "metrics.json").write_text(json.dumps(saved))
    (tmp_path / "s" / "0" / "retriever_training").mkdir()
    (tmp_path / "s" / "0" / "retriever_training" / "done.json").write_text(
        json.dumps({"epochs": 99, "stopped_by": "early_stopping"}))
    report, _ = write_report([tmp_path / "s"], tmp_path / "out")
    assert report.rows[0].stopped == "time box (trainer.max_time), 22 epochs"


def test_a_chosen_reference_and_a_run_without_per_user_ranks(tmp_path):
    _fake_run(tmp_path / "a", _config("bpr"), {"retriever": [1, 2, 3], "ranker": [0, 2, 3]})
    _fake_run(tmp_path / "b", _config("sasrec"), {"retriever": [0, 1, 2], "ranker": [0, 1, 2]})
    (tmp_path / "b" / "rankings.parquet").unlink()  # a run from before palr wrote rankings
    report = build_report([tmp_path / "a", tmp_path / "b"], metric="HR@10", reference="bpr · ranker")
    assert report.references["ml-1m"].name == "retriever=bpr · ranker: PALR v2 (llama_lora tiny, score)"
    assert report.rows[0].comparison["users"] == 3 and report.rows[2].comparison is None
    with pytest.raises(ValueError, match="no row on ml-1m matches reference 'lightgcn'"):
        build_report([tmp_path], reference="lightgcn")
    with pytest.raises(ValueError, match="metric must look like NDCG@10"):
        build_report([tmp_path], metric="ndcg10")
    with pytest.raises(ValueError, match=r"the runs have no NDCG@20 \(they have HR@10, NDCG@10\)"):
        build_report([tmp_path], metric="NDCG@20")


def test_palr_report_names_a_folder_without_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = palr_command("report", str(tmp_path / "empty"), str(tmp_path / "missing"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "no finished palr run in it (no metrics.json)" in proc.stderr and "missing: not a folder" in proc.stderr


def test_a_retriever_row_repeated_by_another_run_is_shown_once(tmp_path):
    """Each PALR row trains the same SASRec again: its retriever row is left out, and said so."""
    sasrec = [0, 4, 9, 30]
    _fake_run(tmp_path / "0", _config("sasrec", seed=0), {"retriever": sasrec, "ranker": [1, 4, 9, 30]})
    _fake_run(tmp_path / "1", _config("sasrec", seed=0, task="v1"), {"retriever": sasrec, "ranker": [0, 2, 9, 30]})
    _fake_run(tmp_path / "2", _config("sasrec", seed=0, task="v2"), {"retriever": [1, 4, 9, 30], "ranker": sasrec})
    report = build_report([tmp_path])
    assert [(r.run_dir.name, r.role) for r in report.rows] == [
        ("0", "retriever"), ("0", "ranker"), ("1", "ranker"), ("2", "retriever"), ("2", "ranker")]
    assert report.repeated == ["retriever.task=v1 · retriever (the same ranks as retriever.task=None · retriever)"]


def test_one_sweep_is_labelled_by_its_overrides_runs_of_different_commands_by_their_configs(tmp_path):
    for i, lr in enumerate((0.001, 0.0093795)):
        _fake_run(tmp_path / "sweep" / str(i), _config("sasrec", lr=lr), {"retriever": [1, 2], "ranker": [1, 2]})
        _hydra_overrides(tmp_path / "sweep" / str(i), [f"retriever.lr={lr}", "hydra.run.dir=x", "dataset.root=/d"])
    assert run_labels(sorted((tmp_path / "sweep").iterdir())) == ["retriever.lr=0.001", "retriever.lr=0.0093795"]
    _fake_run(tmp_path / "other", _config("sasrec", lr=0.001, hidden=32), {"retriever": [1, 2], "ranker": [1, 2]})
    _hydra_overrides(tmp_path / "other", ["retriever.hidden=32"])
    assert run_labels([tmp_path / "other", *sorted((tmp_path / "sweep").iterdir())]) == [
        "retriever.hidden=32, retriever.lr=0.001", "retriever.hidden=64, retriever.lr=0.001",
        "retriever.hidden=64, retriever.lr=0.00938"]


def test_runs_of_two_sweeps_are_labelled_by_the_override_they_share(tmp_path):
    """Table 2's retriever rows in one sweep, its PALR rows in a second that loads the SASRec row's
    model: each run is named by its +table2 choice, not by every config key that differs."""
    runs = []
    for sweep, rows, extra in (("a", ("bpr", "sasrec"), "trainer.max_time=00:00:20:00"),
                               ("b", ("palr-v1", "palr-v2"), "retriever.load_from=a/1/retriever")):
        for i, row in enumerate(rows):
            folder = tmp_path / sweep / str(i)
            _fake_run(folder, _config("sasrec" if row != "bpr" else "bpr", task=row), {"retriever": [1, 2], "ranker": [1, 2]})
            _hydra_overrides(folder, [f"+table2={row}", "experiment=palr-table2", extra])
            runs.append(folder)
    assert run_labels(runs) == ["table2=bpr", "table2=sasrec", "table2=palr-v1", "table2=palr-v2"]


def test_figures_and_the_default_reference_come_from_a_file(tmp_path):
    """The paper's figures are data: a file of one's own replaces them, and names the reference row."""
    _fake_run(tmp_path / "s" / "0", _config("bpr"), {"retriever": [1, 2, 3], "ranker": [0, 2, 3]})
    _fake_run(tmp_path / "s" / "1", _config("sasrec"), {"retriever": [0, 1, 2], "ranker": [0, 0, 1]})
    own = tmp_path / "figures.yaml"
    own.write_text('reference: "retriever: bpr"\nfigures:\n  ml-1m:\n    "retriever: bpr": [0.5, 0.25]\n')
    report, _ = write_report([tmp_path / "s"], tmp_path / "out", figures=own)
    assert report.references["ml-1m"].model.startswith("retriever: bpr")
    assert [r.paper for r in report.rows] == [(0.5, 0.25), None, None, None]
    own.write_text("figures:\n  ml-1m:\n    'retriever: bpr': [0.5]\n")
    with pytest.raises(ValueError, match=r"figures.yaml: figures.ml-1m.retriever: bpr must be \[HR@10, NDCG@10\]"):
        write_report([tmp_path / "s"], tmp_path / "out", figures=own)


def test_the_chart_shows_whole_names_formatted_p_values_and_nothing_cut(tmp_path):
    """report.png, rendered: every row's whole name (wrapped, not cut where sweep rows differ), p
    written ``p<0.0001`` (never ``p=<0.0001``), and a blank margin on every side of the image, so no
    label or note is clipped at an edge."""
    from PIL import Image

    from palr.report import build_report, chart

    n = 300
    base = np.random.default_rng(2).integers(0, 40, n).astype(float)
    long_option = "retriever.some_unusually_long_option_name_that_a_sweep_varies_at_the_end"
    for i, value in enumerate((1, 2)):
        _fake_run(tmp_path / "sweep" / str(i), _config("sasrec", **{"extra": {long_option: value}}),
                  {"retriever": list(base + 3 * i), "ranker": list(np.maximum(base - 8, 0))})
    report = build_report([tmp_path / "sweep"])
    fig = chart(report)
    labels = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
    assert sorted(label.replace("\n", " ") for label in labels) == sorted(r.name for r in report.rows)
    notes = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "p<0.0001" in notes and "p=<" not in notes
    _, written = write_report([tmp_path / "sweep"], tmp_path / "out")
    image = np.asarray(Image.open(tmp_path / "out" / "report.png").convert("L"))
    for edge in (image[:4], image[-4:], image[:, :4], image[:, -4:]):
        assert edge.min() > 250, "something is drawn at the image's edge (clipped)"
