"""palr_core.datafiles: checksums, download over file://, safe extraction, the parsed cache, the line reader."""

from __future__ import annotations

import gzip
import hashlib
import os
import zipfile

import numpy as np
import pytest

from palr_core import DataError
from palr_core.datafiles import (
    BadLines,
    ChecksumError,
    FileHashes,
    MissingDataError,
    Remote,
    cache_key,
    cached,
    download,
    extract,
    fetch,
    read_delimited,
    verify_checksum,
)

COLS = [("user", "int"), ("item", "int"), ("rating", "float")]


def test_verify_checksum_accepts_sha256_and_md5_and_rejects_other_bytes(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"hello")
    verify_checksum(f, "sha256:" + hashlib.sha256(b"hello").hexdigest())
    verify_checksum(f, "md5:" + hashlib.md5(b"hello").hexdigest())
    with pytest.raises(ChecksumError, match="expected"):
        verify_checksum(f, "sha256:" + hashlib.sha256(b"other").hexdigest())


def test_file_hashes_rehash_a_file_replaced_in_place(tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("one")
    assert FileHashes(tmp_path / "c").sha256(f) == hashlib.sha256(b"one").hexdigest()
    f.write_text("two!")  # new size: the remembered digest must not be reused
    assert FileHashes(tmp_path / "c").sha256(f) == hashlib.sha256(b"two!").hexdigest()


def test_download_from_file_url_verifies_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    good = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    out = download(src.as_uri(), tmp_path / "dl" / "x.bin", good, progress=False)
    assert out.read_bytes() == b"payload"
    with pytest.raises(ChecksumError, match="does not match"):
        download(src.as_uri(), tmp_path / "dl" / "y.bin", "md5:" + "0" * 32, progress=False)
    assert not (tmp_path / "dl" / "y.bin").exists() and not (tmp_path / "dl" / "y.bin.part").exists()


def test_extract_refuses_members_outside_the_target(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DataError, match="outside"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_fetch_offline_raises_missing_data_with_help_text(tmp_path):
    url = (tmp_path / "nowhere" / "data.zip").as_uri()
    with pytest.raises(MissingDataError, match="put the files in X") as err:
        fetch([Remote(url, unpack=True)], tmp_path / "dest", "put the files in X", progress=False)
    assert url in str(err.value)


def _cached_count(tmp_path, files, settings, calls):
    def build():
        calls.append(1)
        return {"n": len(calls)}

    return cached(tmp_path / "cache", "demo", files, settings, build)


def test_cache_reuses_result_until_a_file_or_setting_changes(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    calls: list = []
    assert _cached_count(tmp_path, [f], {"s": 1}, calls) == {"n": 1}
    assert _cached_count(tmp_path, [f], {"s": 1}, calls) == {"n": 1}
    assert _cached_count(tmp_path, [f], {"s": 2}, calls) == {"n": 2}
    f.write_text("bb")
    assert _cached_count(tmp_path, [f], {"s": 1}, calls) == {"n": 3}


def test_corrupt_cache_is_detected_and_rebuilt(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    calls: list = []
    _cached_count(tmp_path, [f], {}, calls)
    (payload,) = (tmp_path / "cache" / "parsed").glob("*.pkl")
    payload.write_bytes(payload.read_bytes()[:-3] + b"xyz")
    with pytest.warns(UserWarning, match="corrupt"):
        assert _cached_count(tmp_path, [f], {}, calls) == {"n": 2}
    assert _cached_count(tmp_path, [f], {}, calls) == {"n": 2}  # the rebuilt cache is used again


def test_read_delimited_reads_columns_across_blocks_with_crlf_and_gzip(tmp_path):
    rows = [f"{u}\t{u % 7}\t{u / 2}" for u in range(500)]
    path = tmp_path / "r.tsv.gz"
    with gzip.open(path, "wt", newline="") as f:
        f.write("\r\n".join(rows))  # no final newline, CRLF endings
    cols = read_delimited(path, COLS, "\t", block_bytes=256)
    assert cols["user"].tolist() == list(range(500))
    assert cols["item"][:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]
    assert cols["rating"].dtype == np.float64 and cols["rating"][3] == 1.5


def test_bad_line_names_file_line_and_expectation(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("1\t2\t3\n4\t5\n6\t7\t8\n")
    with pytest.raises(DataError, match=r"r\.tsv, line 2: expected 3 tab-separated fields \(user, item, rating\)"):
        read_delimited(path, COLS, "\t")


def test_non_numeric_field_is_reported(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("1\t2\t3\n4\tfive\t6\n")
    with pytest.raises(DataError, match="line 2: field 'item' must be an integer, got 'five'"):
        read_delimited(path, COLS, "\t")


def test_skip_mode_skips_and_counts_bad_lines(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("1\t2\t3\nbroken\n\n4\t5\t6\n7\tx\t8\n")
    bad = BadLines("skip")
    cols = read_delimited(path, COLS, "\t", bad_lines=bad)
    assert cols["user"].tolist() == [1, 4]
    assert bad.total == 2 and bad.skipped == {"r.tsv": 2}  # the blank line is not an error


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


def test_unreadable_memo_file_is_ignored(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "file_hashes.json").write_text("{not json")
    f = tmp_path / "x"
    f.write_bytes(b"x")
    assert FileHashes(tmp_path / "c").sha256(f) == hashlib.sha256(b"x").hexdigest()
    assert os.path.getsize(tmp_path / "c" / "file_hashes.json") > 10


def test_cache_key_changes_with_file_content_and_settings(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("a")
    first = cache_key(tmp_path / "c", "demo", [f], {"s": 1})
    assert cache_key(tmp_path / "c", "demo", [f], {"s": 1}) == first
    assert cache_key(tmp_path / "c", "demo", [f], {"s": 2}) != first
    f.write_text("b")  # same size, possibly the same mtime tick: must still be re-hashed
    assert cache_key(tmp_path / "c", "demo", [f], {"s": 1}) != first
