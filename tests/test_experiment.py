"""experiment=palr-table2: the paper's Table 2 rows as one sweep, and the report at its end."""

import csv

import pytest

import palr
from tests.test_cli import palr_run

ROWS = {"popularity": ("popularity", "identity"), "bpr": ("bpr", "identity"), "ncf": ("ncf", "identity"),
        "gru4rec": ("gru4rec", "identity"), "caser": ("caser", "identity"), "sasrec": ("sasrec", "identity"),
        "palr-v1": ("sasrec", "llama_lora"), "palr-v2": ("sasrec", "llama_lora")}


def test_the_experiment_sweeps_every_table2_row_palr_has():
    cfg = palr.compose(["experiment=palr-table2"])
    rows = cfg.hydra.sweeper.params["+table2"].split(",")
    assert set(rows) == set(ROWS)
    assert cfg.trainer.max_time == "00:01:00:00"  # the CPU time box per training


@pytest.mark.parametrize("row", sorted(ROWS))
def test_each_row_chooses_its_retriever_and_ranker(row):
    cfg = palr.compose(["experiment=palr-table2", f"+table2={row}"])
    assert (cfg.retriever.name, cfg.ranker.name) == ROWS[row]
    if cfg.ranker.name == "llama_lora":
        assert cfg.ranker.task == row[-2:] and cfg.profile.name == "keywords"
    else:
        assert cfg.profile.name == "none"


@pytest.mark.slow
def test_a_shortened_table2_sweep_ends_with_its_report(tmp_path):
    """Two of the rows, shortened (the command-line sweep replaces the experiment's row list; a third of
    the default synthetic data, tuned on 20 users)."""
    palr_run("-m", "experiment=palr-table2", "+table2=popularity,palr-v2", "trainer.max_epochs=1",
             "eval.max_users=60", "eval.tune_users=20", "dataset.users=200", "dataset.franchises=60",
             f"hydra.sweep.dir={tmp_path}/sweep", tmp_path=tmp_path, fast=False)
    with open(tmp_path / "sweep" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    labels = [(r["label"], r["role"]) for r in rows]  # a ranker row that repeats its retriever's ranks is left out
    assert labels[:2] == [("table2=popularity", "retriever"), ("table2=palr-v2", "retriever")]
    assert labels[2:] in ([], [("table2=palr-v2", "ranker")])
    assert rows[1]["reference"] == "table2=palr-v2 · retriever"  # the SASRec row
    assert int(rows[1]["users"]) == 60 and rows[0]["difference"] != ""
    if len(rows) == 3:
        assert rows[2]["model"].startswith("ranker: PALR v2") and rows[2]["p_wilcoxon"] != ""
