"""The store of trained stages: a run whose retriever was trained before reads it instead of
training it, gets the same results, and the store stays sound under parallel jobs, kills and damage."""

from __future__ import annotations

import fcntl
import json
import logging
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from omegaconf import open_dict

from palr_core import PalrConfig
from palr_core.cache import check_entry
from palr_core.components import RunContext, TrainingData
from palr_core.composition import compose, typed_config
from palr_core.pipeline import build_components, prepare_data, run_pipeline
from palr_core.store import StageStore, stage_digest
from tests.test_cli import palr_process, palr_run
from tests.test_namespace import installed

#: a SASRec run of a few seconds: the retriever is the stage the store keeps
SASREC = ("retriever=sasrec", "retriever.max_epochs=2", "ranker=identity", "profile=none", "eval.max_users=20",
          "dataset.users=200", "trainer.threads=1", "trainer.enable_progress_bar=false")


def config_of(*overrides: str, registry) -> PalrConfig:
    cfg = compose(overrides, registry)
    with open_dict(cfg):
        del cfg["hydra"]
    return typed_config(cfg)


def run(tmp: Path, folder: str, *overrides: str, registry, base: tuple[str, ...] = SASREC) -> Path:
    """One palr run in this process, its cache (and so its store) under ``tmp``; its run folder."""
    run_pipeline(config_of(*base, f"cache_dir={tmp / 'cache'}", *overrides, registry=registry), registry, tmp / folder)
    return tmp / folder


def rows(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "metrics.json").read_text())["rows"]


def entries(store: Path) -> list[Path]:
    return sorted(p for p in (store / "retriever").glob("*") if p.is_dir() and not p.name.startswith("."))


def read_line(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if "read from the store" in r.getMessage())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, registry) -> Path:
    """A folder whose store holds the SASRec of run ``first`` (trained there)."""
    tmp = tmp_path_factory.mktemp("store")
    run(tmp, "first", registry=registry)
    return tmp


def test_a_second_run_reads_the_stored_retriever_and_gets_the_same_results(trained, registry, caplog):
    caplog.set_level(logging.INFO, logger="palr")
    second = run(trained, "second", registry=registry)
    first = trained / "first"
    assert (first / "retriever_training" / "done.json").is_file()
    assert not (second / "retriever_training").exists()  # nothing trained
    entry, = entries(trained / "cache" / "stages")
    assert f"key {entry.name}, entry {entry} (its training took" in read_line(caplog)
    assert rows(second) == rows(first)
    assert pq.read_table(second / "rankings.parquet").equals(pq.read_table(first / "rankings.parquet"))
    summary = json.loads((first / "metrics.json").read_text())["training"]
    assert json.loads((second / "metrics.json").read_text())["training"] == summary


def test_another_number_of_evaluated_users_still_reads_the_store(trained, registry, caplog):
    caplog.set_level(logging.INFO, logger="palr")
    more = run(trained, "more_users", "eval.max_users=30", registry=registry)
    assert read_line(caplog) and not (more / "retriever_training").exists()
    assert len(entries(trained / "cache" / "stages")) == 1


def test_another_seed_trains_and_stores_a_second_entry(trained, registry, caplog):
    caplog.set_level(logging.INFO, logger="palr")
    other = run(trained, "seed1", "seed=1", registry=registry)
    assert not read_line(caplog) and (other / "retriever_training" / "done.json").is_file()
    assert len(entries(trained / "cache" / "stages")) == 2


def test_store_disabled_always_trains_and_stores_nothing(trained, registry, caplog):
    caplog.set_level(logging.INFO, logger="palr")
    before = entries(trained / "cache" / "stages")
    off = run(trained, "off", "store.enabled=false", registry=registry)
    assert not read_line(caplog) and (off / "retriever_training" / "done.json").is_file()
    assert entries(trained / "cache" / "stages") == before
    assert rows(off) == rows(trained / "first")  # the store changes no result


def test_a_stored_run_folder_is_read_back_without_the_store(trained, registry):
    """``palr.load_run`` on a run that read its retriever from the store: the run folder's copy."""
    from palr import load_run

    run_dir = trained / "second" if (trained / "second").is_dir() else run(trained, "second", registry=registry)
    loaded = load_run(run_dir)
    assert (run_dir / "retriever" / "stored.json").is_file()
    assert loaded is not None


def test_a_corrupted_entry_is_refused_by_name_and_trained_again(tmp_path, registry, caplog):
    store = tmp_path / "own_store"
    first = run(tmp_path, "first", f"store.dir={store}", registry=registry)
    entry, = entries(store)
    weights = entry / "retriever.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    weights.write_bytes(bytes(data))
    caplog.set_level(logging.INFO, logger="palr")
    again = run(tmp_path, "again", f"store.dir={store}", registry=registry)
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and str(entry) in refused[0] and "retriever.pt" in refused[0]
    assert (again / "retriever_training" / "done.json").is_file() and not read_line(caplog)
    check_entry(entry, entry.name)  # stored again, sound
    assert rows(again) == rows(first)


def test_stage_keys_leave_out_exactly_the_options_declared_outside(tmp_path, registry):
    """Options declared unable to change a trained stage (PalrConfig.OUTSIDE_STAGE_KEYS,
    TrainerConfig.OBSERVATION, RetrieverConfig.OUTSIDE_STAGE_KEY) leave the retriever's key as it
    is; the data, the seed, a model option and a result-changing trainer setting change it."""
    import dataclasses

    from palr_core.kit import RetrieverConfig

    def key(*overrides: str) -> str:
        config = config_of(*SASREC, f"cache_dir={tmp_path / 'cache'}", *overrides, registry=registry)
        parts = build_components(config, registry)
        context = RunContext(seed=config.seed, work_dir=tmp_path, cache_dir=tmp_path / "cache", trainer=config.trainer)
        data, split = prepare_data(parts.dataset, context, config.preprocess)
        training = TrainingData(train=split.train, valid=split.valid, catalog=data.catalog)
        return stage_digest({"kind": "retriever", **parts.retriever.stage_key(training, context)})

    base = key()
    same = ["eval.max_users=7", "eval.candidates=10", "eval.ks=[10]", "objective=retriever/HR@10",
            "store.enabled=false", f"store.dir={tmp_path}/s", f"cache_dir={tmp_path}/other_cache",
            "trainer.threads=2", "trainer.logger=none", "trainer.enable_progress_bar=true",
            "retriever.save=false", "ranker=llama_lora", "profile=keywords"]
    assert key(*same) == base  # all at once: one compose, not thirteen
    for override in ("seed=1", "retriever.hidden=32", "trainer.precision=64-true", "preprocess.k_core=4",
                     "dataset.users=150", "retriever.max_epochs=3"):
        assert key(override) != base, override
    fields = {f.name for f in dataclasses.fields(PalrConfig)}
    assert set(PalrConfig.OUTSIDE_STAGE_KEYS) <= fields
    assert set(RetrieverConfig.OUTSIDE_STAGE_KEY) <= {f.name for f in dataclasses.fields(RetrieverConfig)}


def test_a_killed_writers_temporary_folder_is_removed_and_never_read(tmp_path):
    """Under the key's lock a temporary folder of that key is a dead writer's; another key's is left alone."""
    store = StageStore(tmp_path)
    key, other = "ab" * 32, "cd" * 32
    abandoned = tmp_path / "retriever" / f".{key}.12345.x1.tmp"
    writing = tmp_path / "retriever" / f".{other}.12345.x1.tmp"
    for folder in (abandoned, writing):
        folder.mkdir(parents=True)
        (folder / "retriever.pt").write_bytes(b"half")
    with store.lock("retriever", key):
        assert store.lookup("retriever", key) is None
    assert not abandoned.exists() and writing.is_dir()


@pytest.mark.slow
def test_parallel_joblib_jobs_that_share_a_key_train_it_once(tmp_path):
    palr_run("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "eval.max_users=20,30",
             f"hydra.sweep.dir={tmp_path}/sweep", *(a for a in SASREC if not a.startswith(("eval.", "trainer.threads"))),
             tmp_path=tmp_path, fast=False)
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if (p / "metrics.json").is_file())
    assert len(jobs) == 2
    trained = [j for j in jobs if (j / "retriever_training" / "done.json").is_file()]
    read = [j for j in jobs if (j / "retriever" / "stored.json").is_file()]
    assert len(trained) == 1 and len(read) == 1, (trained, read)
    assert "read from the store" in (read[0] / "palr.log").read_text()
    assert len(entries(tmp_path / "cache" / "stages")) == 1
    validation = [json.loads((j / "metrics.json").read_text())["training"] for j in jobs]
    assert validation[0] == validation[1]


@pytest.mark.slow
def test_a_kill_during_training_leaves_no_entry_and_no_held_lock(tmp_path):
    run_dir = tmp_path / "killed"
    args = [*SASREC, "retriever.max_epochs=500", "retriever.patience=null", f"hydra.run.dir={run_dir}"]
    proc = palr_process(args, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((run_dir / "retriever_training").glob("checkpoints/*.ckpt")):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stages = tmp_path / "cache" / "stages" / "retriever"
    assert entries(tmp_path / "cache" / "stages") == []
    lock, = stages.glob("*.lock")
    with open(lock) as handle:  # the kernel released the dead trainer's lock: the next job can train
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


NEXT_ITEM = '''
"""A third party's retriever: what followed the history's last item in training, stored through
palr's Storable contract (stage_key, save, restore) with .npy files."""
import hashlib
from pathlib import Path

import numpy as np
from palr_core import hookimpl

PALR_PLUGIN_API = 3


class NextItem:
    def __init__(self, smoothing: float = 0.1):
        self.smoothing = smoothing
        self.counts = None

    def fit(self, data, context):
        n = data.num_items
        self.counts = np.zeros((n, n))
        for seq in data.train:
            np.add.at(self.counts, (seq[:-1], seq[1:]), 1.0)
        with open(Path(context.work_dir) / "next_item_fits.txt", "a") as f:
            f.write("fit\\n")

    def retrieve(self, histories, k):
        popularity = self.counts.sum(0) / max(self.counts.sum(), 1.0)
        scores = np.stack([self.counts[h[-1]] + self.smoothing * popularity for h in histories])
        for row, h in enumerate(histories):
            scores[row, h] = -np.inf
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(scores, ids, 1)

    def stage_key(self, data, context):
        digest = hashlib.sha256(b"|".join(np.asarray(s, np.int64).tobytes() for s in data.train))
        return {"model": "next_item", "smoothing": self.smoothing, "data": digest.hexdigest(),
                "items": data.num_items, "seed": context.seed}

    def save(self, folder):
        np.save(Path(folder) / "counts.npy", self.counts, allow_pickle=False)

    def restore(self, folder, context):
        self.counts = np.load(Path(folder) / "counts.npy", allow_pickle=False)


@hookimpl
def register_retrievers(register):
    register("next_item", NextItem)
'''


@pytest.mark.slow
def test_a_third_party_retriever_is_stored_and_read_back(tmp_path):
    env = installed(tmp_path / "site", "palr_next_item", NEXT_ITEM, dist="palr-next-item")
    env = {k: v for k, v in env.items() if k != "PALR_CACHE_DIR"}
    common = ("retriever=next_item", "dataset.users=200", "eval.max_users=20")
    palr_run(*common, f"hydra.run.dir={tmp_path}/first", tmp_path=tmp_path, env=env)
    palr_run(*common, f"hydra.run.dir={tmp_path}/second", tmp_path=tmp_path, env=env)
    assert (tmp_path / "first" / "next_item_fits.txt").read_text() == "fit\n"
    assert not (tmp_path / "second" / "next_item_fits.txt").exists()  # read, not fitted
    entry, = entries(tmp_path / "cache" / "stages")
    assert (entry / "counts.npy").is_file()
    assert f"read from the store, key {entry.name}" in (tmp_path / "second" / "palr.log").read_text()
    assert rows(tmp_path / "second") == rows(tmp_path / "first")


def test_palr_store_lists_sizes_removes_and_prunes_entries(tmp_path, capsys):
    from palr_core.cli import main

    store = StageStore(tmp_path)
    keys = [stage_digest({"model": "m", "n": n}) for n in range(3)]
    for n, key in enumerate(keys):
        store.put("retriever", key, {"model": "m", "n": n}, lambda f: (f / "w.npy").write_bytes(b"x" * 2048), 1.5)
    assert main(["store", "list", "--dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert all(key in listed for key in keys) and "3 entries" in listed and "1.5 s" in listed
    assert main(["store", "du", "--dir", str(tmp_path)]) == 0
    assert "in 3 entries" in capsys.readouterr().out
    assert main(["store", "rm", keys[0][:8], "--dir", str(tmp_path)]) == 0
    assert [e.key for e in store.entries()] == sorted(keys[1:], key=keys.index)
    assert main(["store", "rm", "000000", "--dir", str(tmp_path)]) == 2
    assert "no entry's key starts with it" in capsys.readouterr().err
    assert main(["store", "prune", "--older-than", "1", "--dir", str(tmp_path)]) == 0  # all are fresh
    assert len(store.entries()) == 2
    assert main(["store", "prune", "--older-than", "0", "--dir", str(tmp_path)]) == 0
    assert store.entries() == []


@pytest.mark.slow
def test_the_rankers_fine_tuned_adapter_is_stored_and_read_back(tmp_path, registry, caplog):
    """llama_lora's fine-tuning is a stage of its own: a run with the same retriever, data and
    fine-tuning settings reads the adapter (no llama_lora/checkpoints) and ranks exactly as the
    run that trained it; its key includes the retriever's."""
    llm = (*(a for a in SASREC if not a.startswith(("ranker=", "profile="))), "ranker.retriever_weight=0.5")
    first = run(tmp_path, "first", registry=registry, base=llm)
    caplog.set_level(logging.INFO, logger="palr")
    second = run(tmp_path, "second", registry=registry, base=llm)
    stages = tmp_path / "cache" / "stages"
    ranker_entry, = [p for p in (stages / "ranker").iterdir() if p.is_dir()]
    assert f"ranker: read from the store, key {ranker_entry.name}" in "\n".join(r.getMessage() for r in caplog.records)
    assert (first / "llama_lora" / "checkpoints").is_dir() and not (second / "llama_lora" / "checkpoints").exists()
    assert rows(second) == rows(first) and rows(second)[1] != rows(second)[0]  # the model ranked
    assert pq.read_table(second / "rankings.parquet").equals(pq.read_table(first / "rankings.parquet"))
    inputs = json.loads((ranker_entry / "manifest.json").read_text())["inputs"]
    retriever_entry, = entries(stages)
    assert inputs["upstream"] == {"retriever": retriever_entry.name}
    assert not [p for p in ranker_entry.rglob("*") if p.suffix in (".ckpt", ".pt", ".bin", ".pkl")]


def test_a_store_folder_that_is_a_file_is_one_line_naming_store_dir(tmp_path, registry):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(ValueError, match=r"^store\.dir=.*taken: .*taken is a file; expected a folder palr can write"):
        run(tmp_path, "run", f"store.dir={tmp_path / 'taken'}", registry=registry)
    assert not (tmp_path / "run" / "retriever_training").exists()  # refused before the retriever trained
