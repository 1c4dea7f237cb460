"""The dataset toolkit: downloads over HTTP with checksums, file hashes, the parsed-data cache, the line reader."""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np
import pytest

from palr_core import DataError, InteractionLog, ItemCatalog, RawDataset
from palr_core.kit.datasets import cached_raw
from palr_core.kit.files import ChecksumError, FileHashes, MissingDataError, fetch
from palr_core.kit.tables import BadLines, read_delimited

COLS = [("user", "int"), ("item", "int"), ("rating", "float")]


def test_fetch_verifies_the_checksum_and_leaves_nothing_on_mismatch(tmp_path, http_server):
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "x.bin").write_bytes(b"payload")
    url = http_server(tmp_path / "web") + "/x.bin"
    good = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    assert fetch(url, tmp_path / "dl", "help", checksum=good, progress=False).read_bytes() == b"payload"
    with pytest.raises(ChecksumError, match="does not match"):
        fetch(url, tmp_path / "dl2", "help", checksum="md5:" + "0" * 32, progress=False)
    assert not list((tmp_path / "dl2").glob("x.bin*"))


def test_fetch_offline_raises_missing_data_with_help_text(tmp_path, http_server):
    (tmp_path / "web").mkdir()
    url = http_server(tmp_path / "web") + "/data.zip"
    with pytest.raises(MissingDataError, match="put the files in X") as err:
        fetch(url, tmp_path / "dest", "put the files in X", unpack=True, progress=False)
    assert url in str(err.value)


def test_file_hashes_rehash_a_file_replaced_in_place(tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("one")
    assert FileHashes(tmp_path / "c").sha256(f) == hashlib.sha256(b"one").hexdigest()
    f.write_text("two!")  # new size: the remembered digest must not be reused
    assert FileHashes(tmp_path / "c").sha256(f) == hashlib.sha256(b"two!").hexdigest()


def test_unreadable_memo_file_is_ignored(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "file_hashes.json").write_text("{not json")
    f = tmp_path / "x"
    f.write_bytes(b"x")
    assert FileHashes(tmp_path / "c").sha256(f) == hashlib.sha256(b"x").hexdigest()
    assert os.path.getsize(tmp_path / "c" / "file_hashes.json") > 10


def _parsed(tmp_path, files, settings, calls):
    def build():
        calls.append(1)
        log = InteractionLog(np.array(["u1", "u2"]), np.array([1, 2]), np.array([5, 6]))
        catalog = ItemCatalog(ids=[1, 2], titles=["One", "Two"], attributes={"genres": [["A"], []]})
        return RawDataset(log, catalog, name="demo"), {"n": len(calls)}

    return cached_raw(tmp_path / "cache", "demo", files, settings, build)


def test_cache_reuses_the_parse_until_a_file_or_setting_changes(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    calls: list = []
    raw, report, from_cache = _parsed(tmp_path, [f], {"s": 1}, calls)
    assert (report, from_cache) == ({"n": 1}, False)
    again, report, from_cache = _parsed(tmp_path, [f], {"s": 1}, calls)
    assert (report, from_cache) == ({"n": 1}, True)
    assert again.log.users.tolist() == ["u1", "u2"] and again.catalog == raw.catalog
    assert _parsed(tmp_path, [f], {"s": 2}, calls)[1] == {"n": 2}
    f.write_text("bb")
    assert _parsed(tmp_path, [f], {"s": 1}, calls)[1] == {"n": 3}


def test_read_delimited_reads_columns_across_blocks_with_crlf_and_gzip(tmp_path):
    rows = [f"{u}\t{u % 7}\t{u / 2}" for u in range(500)]
    path = tmp_path / "r.tsv.gz"
    with gzip.open(path, "wt", newline="") as f:
        f.write("\r\n".join(rows))  # no final newline, CRLF endings
    cols = read_delimited(path, COLS, "\t", block_bytes=256)
    assert cols["user"].tolist() == list(range(500))
    assert cols["item"][:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]
    assert cols["rating"].dtype == np.float64 and cols["rating"][3] == 1.5


def test_a_multi_character_separator_is_read_across_blocks(tmp_path):
    path = tmp_path / "r.dat"
    path.write_text("".join(f"{u}::{u + 1}::{u}.5\n" for u in range(300)))
    cols = read_delimited(path, COLS, "::", block_bytes=97)
    assert cols["user"].tolist() == list(range(300)) and cols["rating"][2] == 2.5


def test_bad_line_names_file_line_and_expectation(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("1\t2\t3\n4\t5\n6\t7\t8\n")
    with pytest.raises(DataError, match=r"r\.tsv, line 2: expected 3 tab-separated fields \(user, item, rating\)"):
        read_delimited(path, COLS, "\t")


def test_non_numeric_field_is_reported_with_its_line(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("1\t2\t3\n\n4\tfive\t6\n")
    with pytest.raises(DataError, match="line 3: field 'item' must be an integer, got 'five'"):
        read_delimited(path, COLS, "\t")


def test_skip_mode_skips_and_counts_bad_lines(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("1\t2\t3\nbroken\n\n4\t5\t6\n7\tx\t8\n")
    bad = BadLines("skip")
    cols = read_delimited(path, COLS, "\t", bad_lines=bad)
    assert cols["user"].tolist() == [1, 4]
    assert bad.total == 2 and bad.skipped == {"r.tsv": 2}  # the blank line is not an error
    assert bad.examples[0].endswith("line 2: expected 3 tab-separated fields (user, item, rating), got 1 field(s): 'broken'")
    assert "line 5: field 'item'" in bad.examples[1]


def test_wrong_separator_gets_a_hint(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match="splits into 3 fields on comma"):
        read_delimited(path, COLS, "\t")


def test_empty_file_is_reported(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("\n")
    with pytest.raises(DataError, match="is empty; expected lines of 3 tab-separated fields"):
        read_delimited(path, COLS, "\t")


def test_bad_on_bad_lines_option_is_rejected():
    with pytest.raises(ValueError, match="on_bad_lines must be 'error' or 'skip'"):
        BadLines("ignore")
