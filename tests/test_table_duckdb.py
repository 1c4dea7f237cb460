"""``dataset.engine=duckdb``: the same sequences as palr's in-memory preprocessing, out of core."""

from __future__ import annotations

import gzip

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from palr.plugins.table.dataset import TableDataset

import palr
from palr_core import DataError, RunContext, preprocess

pytest.importorskip("duckdb")


def skewed_log(n: int = 6000, seed: int = 0) -> dict[str, np.ndarray]:
    """Power-law users and items, repeated (user, item) pairs and time ties: the k-core takes
    several rounds and dedup and tie order matter."""
    rng = np.random.default_rng(seed)
    users = (rng.random(n) ** 2 * 600).astype(np.int64)
    items = (rng.random(n) ** 4 * 400).astype(np.int64)
    times = rng.integers(0, 40, n) * 1000
    return {"user_id": users, "item_id": items, "timestamp": times}


def both(path, k_core: int = 5, **params):
    """(in memory, DuckDB) preprocessing of the same file and options."""
    memory = preprocess(TableDataset(interactions=str(path), **params).load(), k_core=k_core)
    duck = TableDataset(interactions=str(path), engine="duckdb", memory_limit="256MB", **params).load_sequences(
        k_core, None)
    return memory, duck


def assert_same(memory, duck) -> None:
    assert duck.user_ids == memory.user_ids
    assert duck.catalog.ids == memory.catalog.ids
    assert duck.catalog.titles == memory.catalog.titles
    assert duck.catalog.attributes == memory.catalog.attributes
    assert len(duck.sequences) == len(memory.sequences)
    for got, want in zip(duck.sequences, memory.sequences):
        np.testing.assert_array_equal(got, want)
    assert (duck.timestamps is None) == (memory.timestamps is None)
    for got, want in zip(duck.timestamps or [], memory.timestamps or []):
        np.testing.assert_array_equal(got, want)


def test_parquet_log_gives_the_in_memory_sequences(tmp_path):
    pq.write_table(pa.table(skewed_log()), tmp_path / "log.parquet")
    memory, duck = both(tmp_path / "log.parquet", title=None)
    assert 100 < len(memory.sequences) and sum(map(len, memory.sequences)) > 1000  # a real k-core survived
    assert_same(memory, duck)


def test_k_core_takes_several_rounds_and_dedup_keeps_the_earliest_event():
    from palr.plugins.table.outofcore import connect, preprocess_relation

    log = skewed_log()
    con = connect(memory_limit="256MB", threads=2)
    con.register("log", pa.table({**log, "rn": np.arange(len(log["user_id"]))}))
    result = preprocess_relation(con, "SELECT user_id AS uid, item_id AS iid, timestamp AS ts, rn FROM log", 5, True)
    assert result.counts["k_core_rounds"] >= 3
    assert result.counts["rows"] > result.counts["deduplicated"] > result.counts["kept"]


def test_text_log_with_string_ids_ratings_no_header_and_gzip(tmp_path):
    log = skewed_log(seed=1)
    stars = np.random.default_rng(2).integers(1, 6, len(log["user_id"]))
    lines = [f" u{u:03d} ;{'0' if i % 7 == 0 else ''}{i};{t / 1000};{s}" for u, i, t, s in
             zip(log["user_id"], log["item_id"], log["timestamp"], stars)]
    path = tmp_path / "log.csv.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    params = dict(log_columns=["user", "item", "time", "stars"], user="user", item="item", timestamp="time",
                  rating="stars", rating_threshold=2, title=None)
    memory, duck = both(path, **params)
    assert any(isinstance(i, str) and i.startswith("0") for i in memory.catalog.ids)  # "07" stayed text
    reports = [TableDataset(interactions=str(path), engine=engine, **params) for engine in ("memory", "duckdb")]
    reports[0].load(), reports[1].load_sequences(5, None)
    counts = [(r.report.rows_read, r.report.rows_kept) for r in reports]
    assert counts[0] == counts[1] and counts[0][0] > counts[0][1]  # the rating filter dropped rows
    assert_same(memory, duck)


def test_items_file_titles_attributes_and_items_without_a_row(tmp_path):
    pq.write_table(pa.table(skewed_log(seed=3)), tmp_path / "log.parquet")
    items = [f"{i},Title {i},{'Drama|Comedy' if i % 2 else 'Horror'}" for i in range(0, 400, 2)]  # odd ids: no row
    (tmp_path / "items.csv").write_text("item_id,title,genres\n" + "\n".join(items) + "\n")
    memory, duck = both(tmp_path / "log.parquet", items=str(tmp_path / "items.csv"), attributes=["genres"])
    assert "Title 0" in duck.catalog.titles
    assert_same(memory, duck)


@pytest.mark.parametrize("times", ["none", "iso"])
def test_file_order_and_iso_timestamps(tmp_path, times):
    log = skewed_log(seed=4)
    if times == "none":
        text = "user_id,item_id\n" + "".join(f"{u},{i}\n" for u, i in zip(log["user_id"], log["item_id"]))
        params = {"timestamp": None}
    else:
        text = "user_id,item_id,timestamp\n" + "".join(
            f"{u},{i},2021-03-{1 + t // 2000:02d}T{t // 1000 % 2:02d}:30:00{('', 'Z', '+01:00')[u % 3]}\n"
            for u, i, t in zip(log["user_id"], log["item_id"], log["timestamp"]))
        params = {}
    (tmp_path / "log.csv").write_text(text)
    memory, duck = both(tmp_path / "log.csv", title=None, **params)
    assert_same(memory, duck)


def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    pq.write_table(pa.table(skewed_log()), tmp_path / "log.parquet")
    context = RunContext(seed=0, work_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    dataset = TableDataset(interactions=str(tmp_path / "log.parquet"), title=None, engine="duckdb")
    first = dataset.load_sequences(5, context)
    import palr.plugins.table.large as large

    monkeypatch.setattr(large, "preprocess_relation", lambda *a, **k: pytest.fail("preprocessed again"))
    assert_same(first, dataset.load_sequences(5, context))
    assert not list((tmp_path / "cache").glob("duckdb-*"))  # DuckDB's working folder is gone
    with pytest.raises(BaseException, match="preprocessed again"):
        dataset.load_sequences(3, context)  # another k-core is another entry


def test_memory_engine_leaves_the_work_to_palr(tmp_path):
    pq.write_table(pa.table(skewed_log()), tmp_path / "log.parquet")
    assert TableDataset(interactions=str(tmp_path / "log.parquet")).load_sequences(5, None) is None


def test_palr_run_gives_the_same_results_with_either_engine(tmp_path):
    pq.write_table(pa.table(skewed_log(12000)), tmp_path / "log.parquet")
    common = ["dataset=table", f"dataset.interactions={tmp_path / 'log.parquet'}", "dataset.title=null",
              "retriever=popularity", "ranker=identity", "profile=none", f"cache_dir={tmp_path / 'cache'}",
              "trainer.enable_progress_bar=false"]
    memory = palr.run(common, run_dir=tmp_path / "memory")
    duck = palr.run([*common, "dataset.engine=duckdb"], run_dir=tmp_path / "duckdb")
    assert duck.stats == memory.stats
    assert duck.rows == memory.rows


def test_zip_and_unusable_timestamps_are_refused_by_name(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "log.zip", "w") as archive:
        archive.writestr("log.csv", "user_id,item_id,timestamp\n1,2,3\n")
    with pytest.raises(DataError, match=r"log.zip: dataset.engine=duckdb reads Parquet and plain or gzip text"):
        TableDataset(interactions=str(tmp_path / "log.zip"), engine="duckdb").load_sequences(5, None)
    pq.write_table(pa.table({"user_id": [1], "item_id": [2], "timestamp": [True]}), tmp_path / "log.parquet")
    with pytest.raises(DataError, match=r"column 'timestamp' \(dataset.timestamp\) is BOOLEAN"):
        TableDataset(interactions=str(tmp_path / "log.parquet"), engine="duckdb").load_sequences(5, None)
    (tmp_path / "bad.csv").write_text("user_id,item_id,timestamp\n1,2,yesterday\n")
    with pytest.raises(DataError, match=r"bad.csv: DuckDB could not read it \(dataset.engine=duckdb\)"):
        TableDataset(interactions=str(tmp_path / "bad.csv"), engine="duckdb").load_sequences(1, None)


def test_without_duckdb_the_refusal_says_how_to_install_it(tmp_path, monkeypatch):
    pq.write_table(pa.table(skewed_log()), tmp_path / "log.parquet")
    monkeypatch.setitem(__import__("sys").modules, "duckdb", None)  # import duckdb now raises ImportError
    with pytest.raises(DataError, match=r"needs DuckDB: pip install duckdb \(or palr\[large\]\)"):
        TableDataset(interactions=str(tmp_path / "log.parquet"), engine="duckdb").load_sequences(5, None)


def test_a_killed_loads_working_folder_is_removed_by_the_next_load(tmp_path):
    import os
    import subprocess
    import sys

    pq.write_table(pa.table(skewed_log()), tmp_path / "log.parquet")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that no longer runs
    cache = tmp_path / "cache"
    left = cache / f"duckdb-{gone}-abc"
    (left / "spill").mkdir(parents=True)
    (left / "palr.duckdb").write_bytes(b"x" * 1000)
    ours = cache / f"duckdb-{os.getpid()}-live"  # a running process's folder stays
    ours.mkdir()
    context = RunContext(seed=0, work_dir=tmp_path / "run", cache_dir=cache)
    TableDataset(interactions=str(tmp_path / "log.parquet"), title=None, engine="duckdb").load_sequences(5, context)
    assert not left.exists() and ours.exists()
    assert sorted(p.name for p in cache.glob("duckdb-*")) == [ours.name]
