"""The promise palr makes about failures, checked on every CI run: no code runs from a file palr
reads, runs never mix, a killed run resumes to the uninterrupted run's result, caches are never
trusted blindly, and a number that makes no sense is refused by name before any work starts.
``docs/reliability.md`` states the promise; each test here is one case of it."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from palr.plugins.popularity.retriever import PopularityRetriever
from palr.plugins.sasrec.model import SASRecRetriever

from palr_core import ItemCatalog, TrainingData
from palr_core.kit.files import FileHashes
from palr_core.pipeline import seed_stage
from tests.test_cli import FAST, palr_process, palr_run
from tests.test_dataset_cache import _parsed

TINY = dict(maxlen=20, hidden=16, heads=2, blocks=1, dropout=0.1, lr=5e-3, batch_size=64)


class _Payload:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# -- no code runs from a file ------------------------------------------------------------------
def test_a_crafted_checkpoint_cannot_run_code(training_data, run_context, tmp_path):
    """retriever.load_from and resuming read checkpoints with weights_only=True: no pickle runs."""
    marker = tmp_path / "pwned"
    saved = tmp_path / "crafted"
    saved.mkdir()
    torch.save({"config": {}, "num_items": 3, "state_dict": {}, "extra": _Payload(marker)}, saved / "retriever.pt")
    with pytest.raises(ValueError, match="retriever.pt holds something other than weights"):
        SASRecRetriever(**TINY, load_from=str(saved)).fit(training_data, run_context)
    last = run_context.work_dir / "retriever_training" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match="last.ckpt holds something other than weights"):
        SASRecRetriever(**TINY, max_epochs=1).fit(training_data, run_context)
    assert not marker.exists()




def test_a_crafted_adapter_or_base_model_is_refused(registry, run_context, training_data, tmp_path):
    """ranker.adapter=<folder>: peft and transformers read .bin weights with weights_only=True."""
    from tests.test_llama_lora import SMALL

    ranker = registry.build("ranker", "llama_lora", SMALL)
    ranker.fit(training_data, run_context)
    folder = run_context.work_dir / "llama_lora"
    marker = tmp_path / "pwned"
    (folder / "adapter" / "adapter_model.safetensors").unlink()
    torch.save({"weights": _Payload(marker)}, folder / "adapter" / "adapter_model.bin")
    with pytest.raises(pickle.UnpicklingError):
        registry.build("ranker", "llama_lora", {**SMALL, "adapter": str(folder)}).fit(training_data, run_context)
    assert not marker.exists()


def test_a_crafted_popularity_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    np.save(tmp_path / "popularity.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        PopularityRetriever.load(tmp_path)
    assert not marker.exists()


def test_a_crafted_llm_profile_cache_is_plain_json(tmp_path):
    """Profiles are cached as JSON: there is no code in them to run."""
    from palr_core.kit.files import write_atomic

    write_atomic(tmp_path / "x.json", json.dumps({"profile": "p"}))
    assert json.loads((tmp_path / "x.json").read_text()) == {"profile": "p"}
    assert not list(tmp_path.glob("*.tmp"))


# -- caches are never trusted blindly ------------------------------------------------------------
def test_file_hashes_see_an_edit_that_restores_size_and_mtime(tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("aaaa")
    old = time.time() - 60
    os.utime(f, (old, old))
    time.sleep(0.01)
    hashes = FileHashes(tmp_path / "c")
    assert hashes.sha256(f) == hashlib.sha256(b"aaaa").hexdigest()
    f.write_text("bbbb")  # same size ...
    os.utime(f, (old, old))  # ... and the old mtime restored: the ctime still moved
    assert FileHashes(tmp_path / "c").sha256(f) == hashlib.sha256(b"bbbb").hexdigest()


def test_a_corrupt_cache_entry_is_detected_and_rebuilt(tmp_path, caplog):
    f = tmp_path / "in.txt"
    f.write_text("a")
    calls: list = []
    _parsed(tmp_path, [f], {}, calls)
    (payload,) = (tmp_path / "cache" / "parsed").glob("*/log.npz")
    payload.write_bytes(payload.read_bytes()[:-3] + b"xyz")  # same size, broken zip CRC
    with caplog.at_level("WARNING", logger="palr"):
        assert _parsed(tmp_path, [f], {}, calls)[1] == {"n": 2}
    assert "log.npz does not have the sha256 its manifest records" in caplog.text
    assert _parsed(tmp_path, [f], {}, calls)[1:] == ({"n": 2}, True)  # the rebuilt entry is used again


def test_a_crafted_cache_entry_cannot_run_code(tmp_path, caplog):
    """A pickle planted in the cache is refused (npz is read with allow_pickle=False), never executed."""
    f = tmp_path / "in.txt"
    f.write_text("a")
    calls: list = []
    _parsed(tmp_path, [f], {}, calls)
    (entry,) = (tmp_path / "cache" / "parsed").glob("demo-*")
    marker = tmp_path / "pwned"
    arrays = {"users.values": np.array([_Payload(marker)], dtype=object), "users.codes": np.array([0])}
    np.savez(entry / "log.npz", **arrays)  # an object array: a pickle inside the npz
    manifest = json.loads((entry / "manifest.json").read_text())
    data = (entry / "log.npz").read_bytes()  # a manifest that vouches for it: only allow_pickle=False is left
    manifest["files"]["log.npz"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (entry / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="palr"):
        _parsed(tmp_path, [f], {}, calls)
    assert "Object arrays cannot be loaded when allow_pickle=False" in caplog.text
    assert not marker.exists()


def test_an_abandoned_temporary_entry_is_removed(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    calls: list = []
    _parsed(tmp_path, [f], {}, calls)
    (entry,) = (tmp_path / "cache" / "parsed").glob("demo-*")
    dead = entry.parent / f".{entry.name}.999999999.abc.tmp"  # a pid that cannot be running
    dead.mkdir()
    _parsed(tmp_path, [f], {}, calls)
    assert not dead.exists()




# -- runs never mix ------------------------------------------------------------------------------
def test_default_run_folders_never_collide(tmp_path):
    """Two palr-runs started together get two folders (microseconds in the name) and both finish."""
    args = [f"{k}={v}" for k, v in FAST.items()]
    procs = [palr_process(args, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert len(list((tmp_path / "outputs").glob("*/*/metrics.json"))) == 2


def test_one_folder_serves_one_process_at_a_time(tmp_path):
    from palr_core import PalrConfig
    from palr_core.pipeline import RunFolder

    config = PalrConfig(dataset={"name": "synthetic"}, retriever={"name": "popularity"}, profile={"name": "none"},
                        ranker={"name": "identity"})
    with RunFolder(tmp_path / "run", config):
        holder = subprocess.run([sys.executable, "-c", (
            "from palr_core import PalrConfig; from palr_core.pipeline import RunFolder\n"
            "c = PalrConfig(dataset={'name': 'synthetic'}, retriever={'name': 'popularity'}, "
            "profile={'name': 'none'}, ranker={'name': 'identity'})\n"
            f"RunFolder({str(tmp_path / 'run')!r}, c).__enter__()")], capture_output=True, text=True)
    assert holder.returncode != 0 and "is in use by another palr run" in holder.stderr
    with RunFolder(tmp_path / "run", config):  # released when the holder left
        pass


def test_a_folder_of_another_run_is_refused_and_a_finished_one_is_not_redone(tmp_path):
    palr_run(f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path)
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    other = palr_run(f"hydra.run.dir={tmp_path}/run", "seed=2", tmp_path=tmp_path, check=False)
    assert other.returncode != 0 and "holds another run (it differs in seed (42 -> 2))" in other.stderr
    again = palr_run(f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path)
    assert "finished: its results (nothing was trained or evaluated again)" in again.stdout
    assert (tmp_path / "run" / "metrics.json").read_text() == metrics
    assert "seed: 42" in (tmp_path / "run" / "config_resolved.yaml").read_text()  # not the refused run's


def test_a_folder_whose_data_changed_is_refused(tmp_path):
    log = tmp_path / "log.csv"
    rows = [f"{u},{i},{u * 100 + i}" for u in range(30) for i in range(u % 5, u % 5 + 8)]
    log.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    args = ("dataset=table", f"dataset.interactions={log}", f"hydra.run.dir={tmp_path}/run", "eval.candidates=5",
            "eval.ks=[1,5]")
    palr_run(*args, tmp_path=tmp_path)
    (tmp_path / "run" / "run.json").write_text(json.dumps({**json.loads((tmp_path / "run" / "run.json").read_text()),
                                                           "finished": False}))
    log.write_text("user_id,item_id,timestamp\n" + "\n".join(rows[:-8]) + "\n")  # the last user gone
    proc = palr_run(*args, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "holds a run on other data" in proc.stderr


# -- your own tables: every hole is refused or counted, by name ---------------------------------
def _table(tmp_path, name, content):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table(content), path)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("name, content, options, message", [
    ("b.parquet", {"user_id": [1, 2], "item_id": [3, 4], "timestamp": [True, False]}, {},
     "column 'timestamp' (dataset.timestamp) holds bool values"),
    ("l.parquet", {"user_id": [1, 2], "item_id": [[3], [4]], "timestamp": [1, 2]}, {},
     "column 'item_id' (dataset.item) holds list<element: int64> values"),
    ("n.parquet", {"user_id": [1.0, float("nan")], "item_id": [3, 4], "timestamp": [1, 2]}, {},
     "column 'user_id' (dataset.user) is empty (or NaN) in data row 2"),
    ("t.parquet", {"user_id": [1, 2], "item_id": [3, 4], "timestamp": [1.0, float("nan")]}, {},
     "column 'timestamp' (dataset.timestamp) is empty (or NaN) in data row 2"),
    ("inf.csv", "user_id,item_id,timestamp\n1,2,1.5\n2,3,inf\n", {}, "a time must be a finite number"),
    ("nan.csv", "user_id,item_id,timestamp\nnan,2,1\n1,3,2\n", {}, "pandas writes NaN as 'nan'"),
    ("r.csv", "user_id,item_id,timestamp,rating\n1,2,3,nan\n2,3,4,\n", {"rating": "rating", "rating_threshold": 4},
     "all 2 ratings are NaN or empty"),
    ("tab.tsv", "user_id\titem_id\ttimestamp\n1\t2\t3\n", {"separator": " "},
     "the header splits into columns on tab"),
])
def test_a_table_hole_is_refused_by_name(tmp_path, name, content, options, message):
    from palr.plugins.table.dataset import TableDataset

    from palr_core import DataError

    with pytest.raises(DataError, match=re.escape(message)):
        TableDataset(interactions=str(_table(tmp_path, name, content)), **options).load()


def test_a_directory_given_as_the_table_and_spaces_after_commas(tmp_path):
    from palr.plugins.table.dataset import TableDataset

    from palr_core import DataError

    with pytest.raises(DataError, match="is a directory; expected a file"):
        TableDataset(interactions=str(tmp_path)).load()
    spaced = _table(tmp_path, "s.csv", "user_id, item_id, timestamp\n1, 2, 3\n2, 3, 4\n")
    assert TableDataset(interactions=str(spaced)).load().log.items.tolist() == [2, 3]


def test_nan_ratings_are_counted(tmp_path):
    from palr.plugins.table.dataset import TableDataset

    table = TableDataset(interactions=str(_table(tmp_path, "r.csv", "user_id,item_id,timestamp,rating\n"
                                                  "1,2,3,nan\n2,3,4,5\n3,4,5,\n")), rating="rating",
                         rating_threshold=4)
    assert table.load().log.users.tolist() == [2] and table.report.ratings_missing == 2


# -- a killed run resumes to the uninterrupted result ------------------------------------------
class _CrashAtStep(Callback):
    """Stops training the hard way in the middle of an epoch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated interruption")


def _fit(retriever, data, context, callbacks=()):
    seed_stage(context.seed, "fit_retriever")  # as the pipeline does before the stage
    retriever.fit(data, context, callbacks=list(callbacks))
    return retriever


def test_an_interrupted_training_resumes_to_the_uninterrupted_result(training_data, run_context, small_split):
    whole = _fit(SASRecRetriever(**TINY, max_epochs=4, patience=0), training_data, run_context)
    crashed_context = replace(run_context, work_dir=run_context.work_dir / "crashed")
    with pytest.raises(RuntimeError, match="simulated interruption"):  # mid-epoch 2 (3 batches an epoch)
        _fit(SASRecRetriever(**TINY, max_epochs=4, patience=0), training_data, crashed_context, [_CrashAtStep(7)])
    resumed = _fit(SASRecRetriever(**TINY, max_epochs=4, patience=0), training_data, crashed_context)
    assert resumed.fit_summary["epochs"] == whole.fit_summary["epochs"] == 4
    histories = small_split.histories("test")
    assert torch.equal(resumed.score(histories), whole.score(histories))


def test_a_finished_training_is_not_run_again(training_data, run_context):
    _fit(SASRecRetriever(**TINY, max_epochs=2, patience=0), training_data, run_context)
    again = _fit(SASRecRetriever(**TINY, max_epochs=2, patience=0), training_data, run_context,
                 [_CrashAtStep(1)])  # would raise if a step ran
    assert again.fit_summary["epochs"] == 2


def test_a_folder_of_another_configuration_is_refused_by_name(training_data, run_context):
    from palr_core.kit.training import FolderInUse

    _fit(SASRecRetriever(**TINY, max_epochs=1), training_data, run_context)
    with pytest.raises(FolderInUse, match="retriever_training holds checkpoints of retriever SASRecRetriever with "
                                          "another config"):
        _fit(SASRecRetriever(**{**TINY, "hidden": 8}, max_epochs=1), training_data, run_context)


def test_a_moved_run_folder_keeps_its_best_score(training_data, run_context, small_split):
    import shutil

    crashed = replace(run_context, work_dir=run_context.work_dir / "first")
    with pytest.raises(RuntimeError):
        _fit(SASRecRetriever(**TINY, max_epochs=3, patience=0), training_data, crashed, [_CrashAtStep(7)])
    moved = replace(run_context, work_dir=run_context.work_dir / "moved")
    shutil.copytree(crashed.work_dir, moved.work_dir)
    shutil.rmtree(crashed.work_dir)
    resumed = _fit(SASRecRetriever(**TINY, max_epochs=3, patience=0), training_data, moved)
    whole = _fit(SASRecRetriever(**TINY, max_epochs=3, patience=0), training_data,
                 replace(run_context, work_dir=run_context.work_dir / "whole"))
    assert resumed.fit_summary["best_val_ndcg10"] == whole.fit_summary["best_val_ndcg10"]
    histories = small_split.histories("test")
    assert torch.equal(resumed.score(histories), whole.score(histories))




#: a whole (small) PALR pipeline: SASRec, keyword profiles, the tiny LLaMA ranker
PIPELINE = ("dataset.users=200", "dataset.franchises=60", "retriever.maxlen=30", "retriever.hidden=32",
            "retriever.max_epochs=6", "retriever.patience=0", "ranker.epochs=2", "ranker.checkpoint_every_n_steps=2",
            "ranker.instructions.user_fraction=0.5", "ranker.tiny.hidden_size=32", "ranker.tiny.layers=1",
            "eval.max_users=60", "trainer.enable_progress_bar=false")


#: the same run up to its retriever, ranked by the identity ranker: what a retriever's resume decides
RETRIEVER_STAGE = (*(a for a in PIPELINE if not a.startswith("ranker.")), "ranker=identity", "profile=none")


def kill_when(path: Path, tmp_path: Path, run_dir: Path, args=RETRIEVER_STAGE) -> None:
    """Start ``palr-run *args`` in ``run_dir`` and SIGKILL it as soon as ``path`` exists."""
    proc = palr_process([*args, f"hydra.run.dir={run_dir}"], tmp_path, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert path.exists(), f"the run ended (code {proc.returncode}) before {path.name} appeared"
    assert not (run_dir / "metrics.json").exists(), "the run finished before it could be killed"


@pytest.mark.slow
@pytest.mark.parametrize("stage, checkpoint", [("retriever", "retriever_training/checkpoints/last.ckpt")])
def test_a_run_killed_mid_training_resumes_to_the_uninterrupted_metrics(tmp_path, stage, checkpoint):
    """The ranker's stage has its own kill points (tests/test_resume_ranker.py)."""
    # store.enabled=false: with its training in the store, the second run would read it, not train and be killed
    palr_run(*RETRIEVER_STAGE, "store.enabled=false", f"hydra.run.dir={tmp_path}/whole", tmp_path=tmp_path, fast=False)
    kill_when(tmp_path / "killed" / checkpoint, tmp_path, tmp_path / "killed")
    palr_run(*RETRIEVER_STAGE, f"hydra.run.dir={tmp_path}/killed", tmp_path=tmp_path, fast=False)
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert resumed["rows"] == whole["rows"], stage


# -- numbers that make no sense are refused by name --------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("eval.candidates=0", "eval.candidates must be >= 1, got 0"),
    ("preprocess.k_core=-1", "preprocess.k_core must be >= 1, got -1"),
    ("eval.max_users=0", "eval.max_users must be >= 1, got 0"),
    ("eval.ks=[]", "eval.ks must not be empty"),
    ("seed=-3", "seed must be >= 0, got -3"),
    ("trainer.max_time=soon", "trainer.max_time must be DD:HH:MM:SS"),
    ("trainer.precision=42", "trainer.precision must be one of"),
    ("retriever=sasrec retriever.max_epochs=0", "retriever.max_epochs must be >= 1, got 0"),
    ("retriever=sasrec retriever.hidden=0", "retriever.hidden must be >= 1, got 0"),
    ("retriever=sasrec retriever.maxlen=0", "retriever.maxlen must be >= 1, got 0"),
    ("retriever=sasrec retriever.heads=0", "retriever.heads must be >= 1, got 0"),
    ("retriever=sasrec retriever.batch_size=0", "retriever.batch_size must be >= 1, got 0"),
    ("retriever=sasrec retriever.lr=-0.1", "retriever.lr must be > 0, got -0.1"),
    ("retriever=sasrec retriever.dropout=1.5", "retriever.dropout must be >= 0 and < 1, got 1.5"),
    ("ranker=llama_lora ranker.lora.r=0", "ranker.lora.r must be >= 1, got 0"),
    ("ranker=llama_lora ranker.instructions.user_fraction=0", "ranker.instructions.user_fraction must be > 0"),
    ("objective=ranker/MRR", "objective must be <retriever|ranker|validation>/<HR|NDCG>@K, e.g. validation/NDCG@10"),
    ("-m objective=retriever/HR@50", "objective=retriever/HR@50 needs 50 in eval.ks, which is [5, 10, 20]"),
    ("trainer.logger=wandb", "trainer.logger: unknown logger 'wandb'; choose from csv, tensorboard, mlflow, none"),
    ("trainer.profiler=fast", "trainer.profiler must be one of simple, advanced, pytorch"),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches must be > 0, got 0"),
])
def test_a_number_out_of_range_is_refused_by_name_before_any_work(tmp_path, override, message):
    proc = palr_run(*override.split(), f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "dataset_stats.json").exists()


def test_metrics_json_is_strict_json(tmp_path):
    palr_run(f"hydra.run.dir={tmp_path}/run", "eval.max_users=1", tmp_path=tmp_path)
    json.loads((tmp_path / "run" / "metrics.json").read_text(),
               parse_constant=lambda name: pytest.fail(f"metrics.json holds {name}"))


def test_resources_are_checked_before_the_first_stage(tmp_path):
    proc = palr_run("ranker=llama_lora", "ranker.model=/no/such/llama", f"hydra.run.dir={tmp_path}/run",
                    tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "ranker.model='/no/such/llama'" in proc.stderr
    assert not (tmp_path / "run" / "dataset_stats.json").exists()
    if not torch.cuda.is_available():
        gpu = palr_run("trainer=gpu", f"hydra.run.dir={tmp_path}/gpu", tmp_path=tmp_path, check=False)
        assert "trainer.accelerator=gpu, but torch sees no GPU device" in gpu.stderr
        assert "MisconfigurationException" not in gpu.stderr


# -- memory is bounded by a chunk, not by users x items ------------------------------------------
def test_popularity_retrieval_memory_does_not_grow_with_users():
    items = 20_000
    train = [np.arange(i % 50, i % 50 + 20) for i in range(2_000)]
    popularity = PopularityRetriever()
    popularity.fit(TrainingData(train, np.zeros(len(train), dtype=np.int64),
                                ItemCatalog(ids=list(range(items)), titles=[str(i) for i in range(items)])), None)
    peaks = []
    for users in (500, 4_000):
        histories = [train[u % len(train)] for u in range(users)]
        tracemalloc.start()
        ids, _ = popularity.retrieve(histories, 50)
        peaks.append(tracemalloc.get_traced_memory()[1] - ids.nbytes * 2)  # beyond the returned arrays
        tracemalloc.stop()
    assert peaks[1] < 2 * peaks[0] + (1 << 20)  # flat: 8x the users, not 8x the memory
    assert peaks[1] < users * items * 8 / 20  # far below one dense users x items matrix


def test_trained_retrievers_score_in_chunks_of_eval_batch_size(training_data, run_context, small_split):
    retriever = SASRecRetriever(**TINY, max_epochs=1, eval_batch_size=16)
    retriever.fit(training_data, run_context)
    widest = []
    score = retriever.module.score
    retriever.module.score = lambda queries: widest.append(len(queries)) or score(queries)
    retriever.retrieve(small_split.histories("test"), 10)
    assert max(widest) == 16 and len(widest) == -(-len(small_split.test) // 16)
