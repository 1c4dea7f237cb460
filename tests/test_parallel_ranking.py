"""Ranking in forked CPU processes (``eval.rank_processes``) gives exactly the one-process rankings."""

import json

import pytest

from palr_core.parallel import rank_in_processes
from palr_core.ranking import rank_candidates

from .test_cli import palr_run
from .test_llama_lora import SMALL, _requests


class _Reversed:
    """Each request's candidates backwards, and the process that ranked it."""

    def rank(self, requests, context):
        import os

        return [[*reversed(r.candidates.tolist()), os.getpid()] for r in requests]


def test_shards_come_back_in_the_requests_order_from_each_process(small_split, run_context):
    requests = _requests(small_split, range(7))
    ranked = rank_in_processes(_Reversed(), requests, run_context, processes=3)
    assert [r[:-1] for r in ranked] == [list(reversed(q.candidates.tolist())) for q in requests]
    pids = [r[-1] for r in ranked]
    assert len(set(pids)) == 3 and pids == sorted(pids, key=pids.index)  # three contiguous shards


def test_more_processes_than_requests_and_one_process_rank_in_place(small_split, run_context):
    requests = _requests(small_split, range(2))
    import os

    assert {r[-1] for r in rank_in_processes(_Reversed(), requests, run_context, processes=1)} == {os.getpid()}
    assert len(rank_in_processes(_Reversed(), requests, run_context, processes=8)) == 2


def test_an_error_in_a_process_reaches_the_caller(small_split, run_context):
    class Broken:
        def rank(self, requests, context):
            raise RuntimeError("the model fell over")

    with pytest.raises(RuntimeError, match="the model fell over"):
        rank_in_processes(Broken(), _requests(small_split, range(4)), run_context, processes=2)


@pytest.mark.parametrize("decoder", ["score", "verbalizer"])
def test_a_fine_tuned_llm_ranks_the_same_in_two_processes(registry, run_context, training_data, small_split, decoder):
    """The fitted tiny LLaMA, forked: its rankings are the one-process ones, list for list."""
    ranker = registry.build("ranker", "llama_lora", {**SMALL, "decoder": decoder, "choices": 5, "epochs": 1,
                                                     "retriever_weight": 0})
    ranker.fit(training_data, run_context)
    requests = _requests(small_split, range(12), k=10)
    alone = rank_candidates(ranker, requests, run_context, "llama_lora")
    assert rank_candidates(ranker, requests, run_context, "llama_lora", processes=2) == alone


@pytest.mark.slow
def test_a_run_with_rank_processes_has_the_one_process_metrics_and_reads_back_as_the_same_run(tmp_path, monkeypatch):
    """In this process (``palr.run``, what ``palr-run`` runs, without a new process's imports each time)."""
    import palr

    monkeypatch.setenv("PALR_CACHE_DIR", str(tmp_path / "cache"))
    args = ["retriever=popularity", "ranker=llama_lora", "ranker.epochs=1", "ranker.tiny.hidden_size=32", "ranker.tiny.layers=1",
            "ranker.retriever_weight=0", "ranker.instructions.user_fraction=0.3", "profile=none",
            "dataset.users=150", "eval.max_users=30", "eval.candidates=20", "trainer.enable_progress_bar=false"]
    palr.run(args, run_dir=tmp_path / "one")
    palr.run([*args, "eval.rank_processes=2"], run_dir=tmp_path / "two")
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["rows"] == one["rows"]
    # rank_processes is not part of what the run computes: the finished folder is read back, not
    # refused as holding another run (RunFolderError)
    again = palr.run([*args, "eval.rank_processes=2"], run_dir=tmp_path / "one")
    assert again.rows == one["rows"]


def test_a_process_that_dies_without_answering_is_named(small_split, run_context):
    class Dying:
        def rank(self, requests, context):
            import os

            os._exit(3)

    with pytest.raises(RuntimeError, match=r"the process ranking shard \d of 2 ended without an answer \(exit code 3\)"):
        rank_in_processes(Dying(), _requests(small_split, range(4)), run_context, processes=2)


def test_zero_rank_processes_is_refused_before_any_work(tmp_path):
    proc = palr_run("eval.rank_processes=0", f"hydra.run.dir={tmp_path}/run",
                    tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "eval.rank_processes must be >= 1, got 0" in proc.stderr
