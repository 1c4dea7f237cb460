"""The ``table`` dataset: every file shape it accepts, and a clear message for each bad input."""

from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from palr.plugins.table.columns import IdColumn
from palr.plugins.table.dataset import TableDataset

from palr_core import DataError, leave_one_out_split, preprocess
from palr_core.kit.tables import Chunk, inspect, read_chunks

LOG = "user_id,item_id,timestamp\n1,10,300\n1,11,100\n2,10,200\n2,12,50\n"


def write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def load(path, **params):
    dataset = TableDataset(interactions=str(path), **params)
    return dataset, dataset.load()


def test_csv_with_integer_ids_and_timestamps(tmp_path):
    _, raw = load(write(tmp_path / "log.csv", LOG))
    assert raw.log.users.tolist() == [1, 1, 2, 2]
    assert raw.log.items.tolist() == [10, 11, 10, 12]
    assert raw.log.timestamps.tolist() == [300, 100, 200, 50]
    assert raw.catalog.ids == [10, 11, 12] and raw.catalog.titles == ["10", "11", "12"]


@pytest.mark.parametrize("sep", [",", "\t", ";", "|"])
def test_separator_is_detected_from_the_header(tmp_path, sep):
    _, raw = load(write(tmp_path / "log.txt", LOG.replace(",", sep)))
    assert raw.log.items.tolist() == [10, 11, 10, 12]


def test_files_without_header_take_column_names_from_config(tmp_path):
    log = write(tmp_path / "u.data", "1\t10\t5\t300\n1\t11\t3\t100\n")
    items = write(tmp_path / "u.item", "10|Ten|1995|x\n11|Eleven|1996|y\n")
    _, raw = load(log, log_columns=["user_id", "item_id", "rating", "timestamp"],
                  items=str(items), item_columns=["item_id", "title"])
    assert raw.log.timestamps.tolist() == [300, 100]
    assert raw.catalog.titles == ["Ten", "Eleven"]


def test_headerless_error_counts_lines_from_one(tmp_path):
    log = write(tmp_path / "u.data", "1,10,300\n1,11,soon\n")
    with pytest.raises(DataError, match=r"data row 2 \(line 2\): cannot read 'soon'"):
        load(log, log_columns=["user_id", "item_id", "timestamp"])


def test_quoted_fields_may_contain_the_separator(tmp_path):
    path = write(tmp_path / "items.csv", 'item_id,title\n10,"Alpha, Part 1"\n11,Beta\n12,"Say ""hi"""\n')
    _, raw = load(write(tmp_path / "log.csv", LOG), items=str(path))
    assert raw.catalog.titles == ["Alpha, Part 1", "Beta", 'Say "hi"']


def test_gzip_is_read_transparently(tmp_path):
    path = tmp_path / "log.csv.gz"
    path.write_bytes(gzip.compress(LOG.encode()))
    _, raw = load(path)
    assert raw.log.timestamps.tolist() == [300, 100, 200, 50]


def test_zip_with_one_file_is_read_transparently(tmp_path):
    path = tmp_path / "log.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("export/log.tsv", LOG.replace(",", "\t"))
    _, raw = load(path)
    assert raw.log.users.tolist() == [1, 1, 2, 2]


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    rows = "".join(f"{u},{u % 7},{u}\n" for u in range(50_000))
    packed = gzip.compress(("user_id,item_id,timestamp\n" + rows).encode())
    path = tmp_path / "log.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"log\.csv\.gz: cannot read on after [\d,]+ data rows: EOFError"):
        load(path)


def test_zip_with_several_files_is_an_error_listing_them(tmp_path):
    path = tmp_path / "log.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", LOG)
        archive.writestr("b.csv", LOG)
    with pytest.raises(DataError, match=r"log\.zip.*exactly one file.*'a\.csv', 'b\.csv'"):
        load(path)


def test_parquet_log_and_items(tmp_path):
    pq.write_table(pa.table({"uid": ["a", "a", "b"], "iid": [7, 8, 7],
                             "ts": pa.array([3, 1, 2], pa.timestamp("s"))}), tmp_path / "log.parquet")
    pq.write_table(pa.table({"iid": [7, 8], "title": ["Seven", "Eight"]}), tmp_path / "items.parquet")
    _, raw = load(tmp_path / "log.parquet", items=str(tmp_path / "items.parquet"), user="uid", item="iid",
                  timestamp="ts")
    assert raw.log.users.tolist() == ["a", "a", "b"]
    assert raw.log.timestamps.tolist() == [3000, 1000, 2000]
    assert dict(zip(raw.catalog.ids, raw.catalog.titles)) == {7: "Seven", 8: "Eight"}


def test_iso_timestamps_become_epoch_milliseconds(tmp_path):
    text = "user_id,item_id,timestamp\n1,10,2021-03-04\n1,11,2021-03-04T01:00:00\n1,12,2021-03-04T03:00:00+01:00\n"
    _, raw = load(write(tmp_path / "log.csv", text))
    hour = 3_600_000
    day = 1_614_816_000_000  # 2021-03-04T00:00:00Z
    assert raw.log.timestamps.tolist() == [day, day + hour, day + 2 * hour]


def test_no_timestamp_column_means_file_order(tmp_path):
    _, raw = load(write(tmp_path / "log.csv", "user_id,item_id\n1,10\n1,11\n"), timestamp=None)
    assert raw.log.timestamps is None
    assert preprocess(raw, k_core=1).sequences[0].tolist() == [0, 1]


def test_rating_threshold_keeps_only_high_ratings(tmp_path):
    text = "user_id,item_id,timestamp,stars\n1,10,1,5\n1,11,2,2.5\n2,10,3,4\n"
    dataset, raw = load(write(tmp_path / "log.csv", text), rating="stars", rating_threshold=4)
    assert raw.log.items.tolist() == [10, 10]
    assert (dataset.report.rows_read, dataset.report.rows_kept) == (3, 2)


def test_ids_with_leading_zeros_stay_strings(tmp_path):
    _, raw = load(write(tmp_path / "log.csv", "user_id,item_id\n1,007\n1,7\n"), timestamp=None)
    assert raw.log.items.tolist() == ["007", "7"]


def test_id_column_switches_to_strings_when_a_later_block_has_text(tmp_path):
    source = inspect(write(tmp_path / "log.csv", LOG))
    ids = IdColumn(source, "item_id", "item")
    first, second = pa.array(["10", "11"]), pa.array(["B00X", "10"])
    ids.add(Chunk(0, np.array([2, 3]), {"item_id": first}), first)
    ids.add(Chunk(2, np.array([4, 5]), {"item_id": second}), second)
    assert ids.finish().tolist() == ["10", "11", "B00X", "10"]


def test_csv_is_streamed_in_blocks_without_losing_rows(tmp_path):
    rows = "".join(f"{u},{u % 7},{u}\n" for u in range(2000))
    source = inspect(write(tmp_path / "log.csv", "user_id,item_id,timestamp\n" + rows))
    blocks = list(read_chunks(source, ["user_id", "timestamp"], block_bytes=4096))
    assert len(blocks) > 3
    assert [b.first_row for b in blocks] == np.cumsum([0] + [len(b) for b in blocks][:-1]).tolist()
    assert sum(len(b) for b in blocks) == 2000
    assert np.concatenate([b.lines for b in blocks]).tolist() == list(range(2, 2002))  # line 1 is the header


def test_items_file_gaps_are_counted_and_logged_items_get_their_id_as_title(tmp_path):
    items = write(tmp_path / "items.csv", "item_id,title\n10,Ten\n11,\n99,Never seen\n")
    dataset, raw = load(write(tmp_path / "log.csv", LOG), items=str(items))
    report = dataset.report
    assert (report.items_without_row, report.item_rows_never_interacted, report.empty_titles) == (1, 1, 1)
    titles = dict(zip(raw.catalog.ids, raw.catalog.titles))
    assert titles == {10: "Ten", 11: "11", 99: "Never seen", 12: "12"}


def test_report_is_printed(tmp_path, capsys):
    items = write(tmp_path / "items.csv", "item_id,title\n10,Ten\n99,Never seen\n")
    load(write(tmp_path / "log.csv", LOG), items=str(items))
    out = capsys.readouterr().out
    assert "2 logged items without a row in the items file" in out
    assert "1 item rows never interacted with" in out


def test_attribute_columns_become_labels(tmp_path):
    items = write(tmp_path / "items.csv", "item_id,title,genre\n10,Ten,Comedy|Drama\n11,Eleven,\n12,Twelve,Horror\n")
    _, raw = load(write(tmp_path / "log.csv", LOG), items=str(items), attributes=["genre"])
    assert raw.catalog.attributes["genre"] == [["Comedy", "Drama"], [], ["Horror"]]


def test_string_item_ids_in_items_file_match_integer_log_ids(tmp_path):
    items = write(tmp_path / "items.csv", "item_id,title\nB00X,Text id\n10,Ten\n11,Eleven\n12,Twelve\n")
    dataset, raw = load(write(tmp_path / "log.csv", LOG), items=str(items))
    assert raw.log.items.tolist() == ["10", "11", "10", "12"]
    assert dataset.report.item_rows_never_interacted == 1


def test_table_output_preprocesses_with_titles(tmp_path):
    rows = "".join(f"{u},{i},{u * 10 + i}\n" for u in range(6) for i in range(5))
    items = write(tmp_path / "items.csv", "item_id,title\n" + "".join(f"{i},Film {i}\n" for i in range(5)))
    _, raw = load(write(tmp_path / "log.csv", "user_id,item_id,timestamp\n" + rows), items=str(items))
    data = preprocess(raw, k_core=3)
    assert data.stats.users == 6 and data.catalog.titles[:2] == ["Film 0", "Film 1"]


# --- bad input: every message names the file, the column or option, and an example value ---

def test_duplicate_item_ids_are_an_error_naming_them(tmp_path):
    items = write(tmp_path / "items.csv", "item_id,title\n10,A\n11,B\n10,C\n12,D\n12,E\n")
    with pytest.raises(DataError, match=r"items\.csv, line 4: item id 10 \(column 'item_id', dataset\.item_id\) repeats line 2"):
        load(write(tmp_path / "log.csv", LOG), items=str(items))


def test_missing_column_lists_the_columns_found(tmp_path):
    with pytest.raises(DataError, match=r"log\.csv: column 'ts' \(dataset\.timestamp\) not found; "
                                        r"columns found: \['user_id', 'item_id', 'timestamp'\]"):
        load(write(tmp_path / "log.csv", LOG), timestamp="ts")


def test_log_without_time_column_suggests_file_order(tmp_path):
    with pytest.raises(DataError, match=r"set dataset\.timestamp=null to take file order"):
        load(write(tmp_path / "log.csv", "user_id,item_id\n1,10\n"))


def test_unparseable_timestamp_names_row_and_value(tmp_path):
    text = "user_id,item_id,timestamp\n1,10,2021-03-04\n1,11,yesterday\n"
    with pytest.raises(DataError, match=r"log\.csv: column 'timestamp' \(dataset\.timestamp\), "
                                        r"data row 2 \(line 3\): cannot read 'yesterday'"):
        load(write(tmp_path / "log.csv", text))


def test_non_numeric_rating_names_row_and_value(tmp_path):
    text = "user_id,item_id,timestamp,rating\n1,10,1,5\n1,11,2,five\n"
    with pytest.raises(DataError, match=r"column 'rating' \(dataset\.rating\), data row 2 .*'five'"):
        load(write(tmp_path / "log.csv", text), rating="rating", rating_threshold=4)


def test_empty_id_cell_names_the_row(tmp_path):
    with pytest.raises(DataError, match=r"column 'user_id' \(dataset\.user\) is empty in data row 2"):
        load(write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,10,1\n,11,2\n"))


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"log\.csv: the file is empty"):
        load(write(tmp_path / "log.csv", ""))


def test_header_without_rows_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"log\.csv: the file has a header .* but no data rows"):
        load(write(tmp_path / "log.csv", "user_id,item_id,timestamp\n"))


def test_rating_threshold_without_rating_column_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.rating_threshold is set but dataset\.rating names no column"):
        load(write(tmp_path / "log.csv", LOG), rating_threshold=4)


def test_column_names_for_a_parquet_file_are_an_error(tmp_path):
    pq.write_table(pa.table({"u": [1], "i": [2]}), tmp_path / "log.parquet")
    with pytest.raises(DataError, match=r"log\.parquet: .* Parquet, which names its columns: \['u', 'i'\]"):
        load(tmp_path / "log.parquet", log_columns=["user_id", "item_id"])


def test_rating_threshold_above_every_rating_is_an_error(tmp_path):
    text = "user_id,item_id,timestamp,rating\n1,10,1,3\n"
    with pytest.raises(DataError, match=r"no row has column 'rating' .* >= 4 .* the largest rating is 3\.0"):
        load(write(tmp_path / "log.csv", text), rating="rating", rating_threshold=4)


def test_non_utf8_bytes_name_offset_and_suggest_an_encoding(tmp_path):
    text = "item_id,title\n10,Ten\n11,Caf\xe9\n12,Twelve\n"
    items = write(tmp_path / "items.csv", text, encoding="latin-1")
    with pytest.raises(DataError, match=r"items\.csv: byte 27 \(line 3\) is not valid UTF-8.*dataset\.encoding=latin-1"):
        load(write(tmp_path / "log.csv", LOG), items=str(items))


def test_non_utf8_bytes_far_into_a_large_file_are_located(tmp_path):
    rows = "".join(f"{u},{u % 9},{u}\n" for u in range(20_000))  # ~200 kB: past the sniffed header block
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n" + rows + "Jos\xe9,1,5\n", encoding="latin-1")
    with pytest.raises(DataError, match=r"log\.csv, line 20002: byte \d+ is not valid UTF-8.*dataset\.encoding=latin-1$"):
        load(path)


def test_given_encoding_reads_latin1(tmp_path):
    items = write(tmp_path / "items.csv", "item_id,title\n10,Ten\n11,Caf\xe9\n12,Twelve\n", encoding="latin-1")
    _, raw = load(write(tmp_path / "log.csv", LOG), items=str(items), encoding="latin-1")
    assert raw.catalog.titles[1] == "Café"


@pytest.mark.parametrize("encoding", ["utf-16", "cp1252"])
def test_other_encodings_are_transcoded(tmp_path, encoding):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,Café €,3\n", encoding=encoding)
    _, raw = load(path, encoding=encoding)
    assert raw.log.items.tolist() == ["Café €"]


def test_user_with_one_interaction_is_reported_and_split_error_names_user_and_option(tmp_path):
    dataset, raw = load(write(tmp_path / "log.csv", LOG + "3,10,400\n"))
    assert dataset.report.users_with_one_interaction == 1
    assert dataset.report.examples["users_with_one_interaction"] == [3]
    with pytest.raises(DataError, match=r"log\.csv.*user 1.*k_core"):
        leave_one_out_split(preprocess(raw, k_core=1))


@pytest.mark.slow
def test_palr_run_on_a_generated_csv(tmp_path):
    import json
    import os
    import subprocess

    rng = np.random.default_rng(0)
    rows = [f"u{u},{i},{t}" for u in range(40) for t, i in enumerate(rng.choice(30, size=8, replace=False))]
    log = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    items = write(tmp_path / "items.csv", "item_id,title\n" + "".join(f"{i},Item {i}\n" for i in range(30)))
    out = tmp_path / "run"
    env = {**os.environ, "PALR_CACHE_DIR": str(tmp_path / "cache")}  # keep the user's cache clean
    result = subprocess.run(["palr-run", "dataset=table", f"dataset.interactions={log}", f"dataset.items={items}",
                             "retriever=popularity", "ranker=identity", "profile=none", f"hydra.run.dir={out}"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "log.csv" and len(metrics["rows"]) == 2
    assert metrics["stats"]["users"] == 40
