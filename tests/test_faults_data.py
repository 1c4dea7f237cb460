"""Faults at the data seams end in one line naming the file (and line, column or option) and what was
expected: damaged cache entries heal themselves, an unusable ``cache_dir`` is refused by name,
garbage and out-of-range numbers in MovieLens files are reported by line (or skipped and counted),
and repeated item ids or column headers are refused instead of silently picking one."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest
from palr.plugins.movielens.dataset import MovieLens
from palr.plugins.table.dataset import TableDataset

from palr_core import DataError
from palr_core.cache import cached
from palr_core.config import default_cache_dir
from palr_core.testing import tiny_context
from tests.test_cli import palr_run
from tests.test_dataset_cache import _parsed
from tests.test_movielens import U_ITEM_FLAGS, write_1m, write_100k

GOOD_ROWS = b"1\t3\t5\t300\n1\t1\t4\t100\n"


# -- cache entries: checked by content, healed when stale --------------------------------------
def _entry(tmp_path):
    (entry,) = (tmp_path / "cache" / "parsed").glob("demo-*")
    return entry


def _first_parse(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    calls: list = []
    _parsed(tmp_path, [f], {}, calls)
    return f, calls


def test_a_cache_entry_without_its_manifest_is_rebuilt_with_one_log_line(tmp_path, caplog):
    f, calls = _first_parse(tmp_path)
    (_entry(tmp_path) / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING, logger="palr"):
        assert _parsed(tmp_path, [f], {}, calls)[1:] == ({"n": 2}, False)
    (record,) = [r for r in caplog.records if "cache entry" in r.getMessage()]
    assert "has no manifest.json" in record.getMessage() and "rebuilding it" in record.getMessage()
    assert "\n" not in record.getMessage()
    assert _parsed(tmp_path, [f], {}, calls)[1:] == ({"n": 2}, True)  # healed: the new entry is used


@pytest.mark.parametrize("manifest", ['{"key": "ab', "[1, 2]", '{"key": 1, "files": 3}', ""])
def test_a_truncated_or_garbled_manifest_makes_the_entry_stale(tmp_path, caplog, manifest):
    f, calls = _first_parse(tmp_path)
    (_entry(tmp_path) / "manifest.json").write_text(manifest)
    with caplog.at_level(logging.WARNING, logger="palr"):
        assert _parsed(tmp_path, [f], {}, calls)[1:] == ({"n": 2}, False)
    assert "manifest.json" in caplog.text and "rebuilding it" in caplog.text
    assert _parsed(tmp_path, [f], {}, calls)[1:] == ({"n": 2}, True)


def test_a_same_size_edit_of_a_cached_file_is_detected_by_its_sha256(tmp_path, caplog):
    f, calls = _first_parse(tmp_path)
    catalog = _entry(tmp_path) / "catalog.json"
    catalog.write_text(catalog.read_text().replace('"One"', '"Onf"'))  # same size, valid JSON
    with caplog.at_level(logging.WARNING, logger="palr"):
        raw, report, from_cache = _parsed(tmp_path, [f], {}, calls)
    assert raw.catalog.titles == ["One", "Two"] and (report, from_cache) == ({"n": 2}, False)
    assert "catalog.json does not have the sha256 its manifest records" in caplog.text


def test_the_manifest_records_size_and_sha256_of_every_file(tmp_path):
    import hashlib

    _first_parse(tmp_path)
    entry = _entry(tmp_path)
    files = json.loads((entry / "manifest.json").read_text())["files"]
    assert set(files) == {"log.npz", "catalog.json", "report.json"}
    for name, recorded in files.items():
        data = (entry / name).read_bytes()
        assert recorded == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_an_entry_replaced_by_a_file_is_rebuilt(tmp_path, caplog):
    f, calls = _first_parse(tmp_path)
    entry = _entry(tmp_path)
    for p in entry.iterdir():
        p.unlink()
    entry.rmdir()
    entry.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="palr"):
        assert _parsed(tmp_path, [f], {}, calls)[1:] == ({"n": 2}, False)
    assert "is not a folder" in caplog.text and entry.is_dir()


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from palr_core.cache import cached

    def build():
        time.sleep(0.5)  # both writers are inside build() at the same time
        return sys.argv[2]

    def save(value, folder):
        (folder / "a.txt").write_text(value * 100_000)
        (folder / "b.txt").write_text(value)

    def load(folder):
        a, b = (folder / "a.txt").read_text(), (folder / "b.txt").read_text()
        assert a == b * 100_000, "mixed entry"
        return b

    print(cached(sys.argv[1], "demo", "race", {"k": 1}, build, save, load))
""")


def test_two_processes_writing_one_entry_leave_one_whole_entry(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), value], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for value in "xy"]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    (entry,) = (tmp_path / "demo").iterdir()  # one entry, no temporary folder left
    value = cached(tmp_path, "demo", "race", {"k": 1}, lambda: pytest.fail("rebuilt"),
                   lambda v, f: None, lambda folder: (folder / "b.txt").read_text())
    assert value in "xy" and (entry / "a.txt").read_text() == value * 100_000


# -- cache_dir: a folder palr can write, or one line naming the option --------------------------
def test_a_cache_dir_that_is_a_file_is_refused_naming_the_option(tmp_path):
    file = tmp_path / "hostname"
    file.write_text("box\n")
    with pytest.raises(ValueError, match=rf"^cache_dir={file}: .*a file.* expected a folder palr can write"):
        default_cache_dir(file)
    with pytest.raises(ValueError, match=rf"cache_dir={file / 'sub'}: .*{file} is a file"):
        default_cache_dir(file / "sub")


def test_a_cache_dir_from_the_environment_is_named_as_such(tmp_path, monkeypatch):
    file = tmp_path / "hostname"
    file.write_text("box\n")
    monkeypatch.setenv("PALR_CACHE_DIR", str(file))
    with pytest.raises(ValueError, match=rf"^PALR_CACHE_DIR={file} \(cache_dir unset\): "):
        default_cache_dir(None)
    assert default_cache_dir(tmp_path / "c") == tmp_path / "c"  # the option wins over the variable


def test_a_read_only_cache_dir_is_refused_naming_the_option(tmp_path, read_only):
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(folder)
    with pytest.raises(ValueError, match=rf"cache_dir={folder}: cannot write there"):
        default_cache_dir(folder)


def test_palr_run_with_a_file_as_cache_dir_prints_one_line(tmp_path):
    file = tmp_path / "hostname"
    file.write_text("box\n")
    proc = palr_run(f"cache_dir={file}", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"palr: cache_dir={file}: it is a file; expected a folder palr can write" in proc.stderr


# -- MovieLens: garbage and out-of-range numbers are named by line ------------------------------
def movielens(root, tmp_path, **params):
    return MovieLens(root=str(root), progress=False, variant=params.pop("variant", "ml-100k"),
                     **params).load(tiny_context(tmp_path / "ctx"))


GARBAGE = {
    "random bytes": bytes(range(128, 256)) + b"\x00\x01\x02",
    "NUL bytes": b"1\t2\x00\x00\t3\t4",
    "invalid UTF-8": b"1\t2\t3\t\xff\xfe",
    "latin-1 text": "1\t2\t3\t4 é".encode("latin-1"),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=list(GARBAGE))
def test_binary_garbage_in_u_data_names_the_file_and_line(tmp_path, garbage):
    root = write_100k(tmp_path / "ml")
    (root / "u.data").write_bytes(GOOD_ROWS + garbage + b"\n" + GOOD_ROWS)
    with pytest.raises(DataError, match=r"u\.data, line 3: ") as err:
        movielens(root, tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=list(GARBAGE))
def test_binary_garbage_in_u_data_is_skipped_and_counted_on_request(tmp_path, caplog, garbage):
    root = write_100k(tmp_path / "ml")
    (root / "u.data").write_bytes(GOOD_ROWS + garbage + b"\n" + garbage + b"\n" + GOOD_ROWS)
    with caplog.at_level(logging.WARNING, logger="palr"):
        raw = movielens(root, tmp_path, on_bad_lines="skip")
    assert raw.log.items.tolist() == [3, 1, 3, 1]
    assert "skipped 2 malformed lines (on_bad_lines=skip)" in caplog.text


def test_garbage_across_many_blocks_keeps_line_numbers(tmp_path):
    from palr_core.kit.tables import BadLines, read_delimited

    path = tmp_path / "u.data"
    rows = [b"%d\t%d\t5\t%d" % (u, u % 7, u) for u in range(3000)]
    rows[1234] = b"\xc3\x28\t1\t1\t1"
    rows[2500] = b"7\t\xa0\xa1\t1\t1"
    path.write_bytes(b"\n".join(rows) + b"\n")
    columns = [("user", "int"), ("item", "int"), ("rating", "float"), ("timestamp", "int")]
    with pytest.raises(DataError, match=r"u\.data, line 1235: "):
        read_delimited(path, columns, "\t", block_bytes=1000)
    bad = BadLines("skip")
    cols = read_delimited(path, columns, "\t", bad_lines=bad, block_bytes=1000)
    assert len(cols["user"]) == 2998 and cols["user"][-1] == 2999
    assert [m.split(": ")[0].rsplit(", ", 1)[1] for m in bad.examples] == ["line 1235", "line 2501"]


@pytest.mark.parametrize("row, column", [
    (b"1\t99999999999999999999\t3\t4", "item"),
    (b"-99999999999999999999\t2\t3\t4", "user"),
    (b"1\t2\t3\t9223372036854775808", "timestamp"),
])
def test_huge_ids_or_timestamps_name_file_line_and_column(tmp_path, row, column):
    root = write_100k(tmp_path / "ml")
    (root / "u.data").write_bytes(GOOD_ROWS + row + b"\n")
    with pytest.raises(DataError, match=rf"u\.data, line 3: field '{column}' .*64-bit integer.*got '"):
        movielens(root, tmp_path)


def test_the_largest_int64_is_still_read(tmp_path):
    root = write_100k(tmp_path / "ml")
    (root / "u.data").write_bytes(GOOD_ROWS + b"1\t2\t3\t9223372036854775807\n")
    assert movielens(root, tmp_path).log.timestamps[-1] == 2**63 - 1


def test_palr_run_on_garbage_in_u_data_prints_one_line(tmp_path):
    root = write_100k(tmp_path / "ml")
    (root / "u.data").write_bytes(GOOD_ROWS + GARBAGE["random bytes"] + b"\n")
    proc = palr_run("dataset=ml-100k", f"dataset.root={root}", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("palr: ")]
    assert f"{root / 'u.data'}, line 3: " in line


# -- repeated item ids and column headers are refused, not resolved silently -------------------
def test_a_repeated_item_id_in_u_item_names_file_line_and_id(tmp_path):
    root = write_100k(tmp_path / "ml")
    with open(root / "u.item", "ab") as f:
        f.write(f"2|Toy Story again (1995)|01-Jan-1995||http://y|{U_ITEM_FLAGS}\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"u\.item, line 4: item id 2 repeats line 2; each movie needs exactly one"):
        movielens(root, tmp_path)


def test_a_repeated_item_id_in_movies_dat_names_file_line_and_id(tmp_path):
    root = write_1m(tmp_path / "ml")
    with open(root / "movies.dat", "ab") as f:
        f.write(b"10::Another (1999)::Drama\n")
    with pytest.raises(DataError, match=r"movies\.dat, line 3: item id 10 repeats line 1"):
        movielens(root, tmp_path, variant="ml-1m")


def test_palr_run_on_a_repeated_u_item_id_prints_one_line(tmp_path):
    root = write_100k(tmp_path / "ml")
    with open(root / "u.item", "ab") as f:
        f.write(f"3|Heat again|01-Jan-1995||http://z|{U_ITEM_FLAGS}\n".encode("latin-1"))
    proc = palr_run("dataset=ml-100k", f"dataset.root={root}", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"palr: {root / 'u.item'}, line 4: item id 3 repeats line 3" in proc.stderr


def test_a_repeated_item_id_in_the_table_items_file_names_file_line_and_id(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n1,10,1\n1,11,2\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n10,Ten\n11,Eleven\n\n10,Ten again\n")
    with pytest.raises(DataError, match=r"items\.csv, line 5: item id 10 \(column 'item_id', dataset\.item_id\) "
                                        r"repeats line 2; each item needs exactly one row"):
        TableDataset(interactions=str(log), items=str(items)).load()


@pytest.mark.parametrize("header, column", [("user_id,item_id,timestamp,item_id", "item_id"),
                                            ("user_id,item_id,user_id", "user_id")])
def test_a_duplicated_column_header_is_refused(tmp_path, header, column):
    log = tmp_path / "log.csv"
    rows = [f"{u},{i},{u * 100 + i},{9 - i}" for u in range(5) for i in range(6)]
    log.write_text(header + "\n" + "\n".join(",".join(r.split(",")[:header.count(",") + 1]) for r in rows) + "\n")
    with pytest.raises(DataError, match=rf"log\.csv: the header names column '{column}' twice \(fields "):
        TableDataset(interactions=str(log), timestamp=None).load()


def test_a_duplicated_column_header_in_the_items_file_is_refused(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n1,10,1\n1,11,2\n")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,title\n10,Ten,X\n11,Eleven,Y\n")
    with pytest.raises(DataError, match=r"items\.csv: the header names column 'title' twice \(fields 2 and 3\)"):
        TableDataset(interactions=str(log), items=str(items)).load()


def test_a_duplicated_unused_column_is_refused_too(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp,note,note\n1,10,1,a,b\n1,11,2,c,d\n")
    with pytest.raises(DataError, match="names column 'note' twice"):
        TableDataset(interactions=str(log)).load()


def test_a_repeated_item_id_in_a_parquet_items_file_names_the_data_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,timestamp\n1,B1,1\n1,B2,2\n")
    pq.write_table(pa.table({"item_id": ["B1", "B2", "B1"], "title": ["One", "Two", "Uno"]}), tmp_path / "items.pq")
    with pytest.raises(DataError, match=r"items\.pq, data row 3: item id 'B1' .* repeats data row 1"):
        TableDataset(interactions=str(log), items=str(tmp_path / "items.pq")).load()


def test_a_parse_still_works_when_its_cache_folder_cannot_be_written(tmp_path, caplog):
    """The library path (no palr-run to check cache_dir first): the result, a warning, no traceback."""
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    f = tmp_path / "in.txt"
    f.write_text("a")
    with caplog.at_level(logging.WARNING, logger="palr"):
        raw, report, from_cache = _parsed(tmp_path, [f], {}, [])
    assert raw.catalog.titles == ["One", "Two"] and not from_cache
    assert "demo: not cached: cannot write" in caplog.text
