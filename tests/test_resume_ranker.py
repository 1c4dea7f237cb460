"""A run killed anywhere in the LLM ranker's stage, then started again with the same command,
ends with the uninterrupted run's metrics and rankings: whatever the killed process left in
``llama_lora/`` (a saved base and nothing else, a mid-training checkpoint, a finished adapter)."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .test_faults import kill_when

#: the LLM stage on its own: no retriever training, the tiny LLaMA trained from a random init, the
#: model's scores alone ranking (``retriever_weight=0``), so every drift in the ranker shows
RANKER_ONLY = ("retriever=popularity", "profile=keywords", "ranker=llama_lora", "dataset.users=120",
               "dataset.franchises=40", "ranker.epochs=2", "ranker.batch_size=8", "ranker.checkpoint_every_n_steps=2",
               "ranker.instructions.user_fraction=0.5", "ranker.tiny.hidden_size=32", "ranker.tiny.layers=1",
               "ranker.retriever_weight=0", "eval.max_users=40", "eval.candidates=20",
               "trainer.enable_progress_bar=false", "trainer.threads=1")

#: where to kill: the file whose appearance marks the point
KILL_POINTS = {"base saved, before training": "llama_lora/base/config.json",
               "mid-training checkpoint": "llama_lora/checkpoints/last.ckpt",
               "fine-tuning finished, ranking not": "llama_lora/done.json"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """In this process (``palr.run``, what ``palr-run`` runs): only the killed runs need a process of their own."""
    import palr

    folder = tmp_path_factory.mktemp("ranker-whole")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PALR_CACHE_DIR", str(folder / "cache"))
        palr.run(list(RANKER_ONLY), run_dir=folder / "run")
    return folder / "run"


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_ranker_killed_anywhere_resumes_to_the_uninterrupted_run(uninterrupted, tmp_path, monkeypatch, point):
    import palr

    run_dir = tmp_path / "killed"
    kill_when(run_dir / KILL_POINTS[point], tmp_path, run_dir, RANKER_ONLY)
    monkeypatch.setenv("PALR_CACHE_DIR", str(tmp_path / "cache"))  # the killed run's cache
    palr.run(list(RANKER_ONLY), run_dir=run_dir)  # the same command again, in this process
    whole = json.loads((uninterrupted / "metrics.json").read_text())
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["rows"] == whole["rows"], point
    assert resumed["validation"] == whole["validation"], point
    rankings = [pq.read_table(folder / "rankings.parquet").to_pylist() for folder in (uninterrupted, run_dir)]
    assert rankings[0] == rankings[1], point
