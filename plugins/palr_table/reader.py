"""Streaming reads of CSV/TSV (plain, gzip, zip) and Parquet files, a few columns at a time.

:func:`read_chunks` yields ``(first_row, {column: pyarrow string/typed array})`` blocks so the
caller can keep only what it needs from each block: memory stays proportional to the kept
columns, not to the file. Every error names the file and says what was expected.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pyarrow as pa

from palr_core import DataError

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
PARQUET_MAGIC = b"PAR1"
SEPARATORS = [",", "\t", ";", "|"]
BLOCK_BYTES = 16 << 20  # CSV bytes parsed per block: large enough for speed, small next to the data


@dataclass(frozen=True)
class TableSource:
    """A file as palr reads it: its path, format, compression, separator, encoding and header."""

    path: Path
    format: str  # "csv" or "parquet"
    compression: str  # "none", "gzip" or "zip"
    separator: str
    encoding: str | None  # None: UTF-8, checked
    columns: list[str]
    header: bool = True  # False: ``columns`` were given by the user and line 1 is data

    def require(self, wanted: dict[str, str], hints: dict[str, str] | None = None) -> None:
        """Fail naming the option and listing the columns found when a configured column is absent."""
        for option, column in wanted.items():
            if column not in self.columns:
                hint = (hints or {}).get(option, "")
                raise DataError(
                    f"{self.path}: column {column!r} (dataset.{option}) not found; "
                    f"columns found: {self.columns}" + (f"; {hint}" if hint else "")
                )


def inspect(path: str | Path, separator: str | None = None, encoding: str | None = None,
            names: list[str] | None = None) -> TableSource:
    """Detect format, compression and separator and read the header of ``path``.

    ``names`` names the columns of a text file without a header row, in order; fields beyond
    them are called ``column_<n>`` (1-based), so only the leading columns need names.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    compression = "gzip" if magic[:2] == GZIP_MAGIC else "zip" if magic == ZIP_MAGIC else "none"
    try:
        with _open_binary(path, compression) as fh:
            head = fh.read(64 << 10)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the {compression} file: {type(exc).__name__}: {exc}") from None
    if head[:4] == PARQUET_MAGIC:
        columns = _parquet_columns(path, compression)
        if names:
            raise DataError(f"{path}: column names are given for a file without a header, but this is "
                            f"Parquet, which names its columns: {columns}")
        return TableSource(path, "parquet", compression, "", None, columns)
    text = _decode_head(path, head, encoding, compression)
    header_line = text.splitlines()[0] if text.strip() else ""
    if not header_line.strip():
        raise DataError(f"{path}: the file is empty (no header line)")
    sep = separator or _guess_separator(header_line, path)
    fields = [c.strip() for c in next(csv.reader([header_line], delimiter=sep))]
    if not names:
        return TableSource(path, "csv", compression, sep, encoding, fields)
    if len(names) > len(fields):
        raise DataError(f"{path}: {len(names)} column names given ({list(names)}) but the first line has "
                        f"{len(fields)} {sep!r}-separated fields: {header_line[:200]!r}")
    columns = list(names) + [f"column_{i + 1}" for i in range(len(names), len(fields))]
    return TableSource(path, "csv", compression, sep, encoding, columns, header=False)


def read_chunks(source: TableSource, columns: list[str],
                block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, dict[str, pa.Array]]]:
    """Yield ``(index of the block's first data row, {column: array})`` over the whole file.

    CSV columns come as strings (the caller decides their type); Parquet columns keep theirs.
    ``block_bytes`` is the CSV block size (Parquet is read in 1M-row batches).
    """
    columns = list(dict.fromkeys(columns))
    batches = (_parquet_batches(source, columns) if source.format == "parquet"
               else _csv_batches(source, columns, block_bytes))
    row = 0
    try:
        for batch in batches:
            if batch.num_rows:
                yield row, {name: batch.column(name) for name in columns}
                row += batch.num_rows
    except DataError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, pa.ArrowException) as exc:  # truncated or corrupt
        raise DataError(f"{source.path}: cannot read on after {row:,} data rows: {type(exc).__name__}: {exc}") from None


def _csv_batches(source: TableSource, columns: list[str], block_bytes: int) -> Iterator[pa.RecordBatch]:
    import pyarrow.csv as pacsv

    read = pacsv.ReadOptions(block_size=block_bytes, encoding=source.encoding or "utf8",
                                column_names=None if source.header else source.columns)
    parse = pacsv.ParseOptions(delimiter=source.separator, newlines_in_values=True)
    convert = pacsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    with _open_binary(source.path, source.compression) as fh:
        try:
            reader = pacsv.open_csv(fh, read_options=read, parse_options=parse, convert_options=convert)
            yield from reader
        except pa.ArrowInvalid as exc:
            raise _csv_error(source, exc) from None


def _parquet_batches(source: TableSource, columns: list[str]) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    with _open_binary(source.path, source.compression) as fh:
        yield from pq.ParquetFile(fh).iter_batches(batch_size=1 << 20, columns=columns)


def _parquet_columns(path: Path, compression: str) -> list[str]:
    import pyarrow.parquet as pq

    with _open_binary(path, compression) as fh:
        try:
            return list(pq.ParquetFile(fh).schema_arrow.names)
        except pa.ArrowException as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


def _open_binary(path: Path, compression: str) -> IO[bytes]:
    """The decompressed bytes of ``path``; a zip archive must hold exactly one file."""
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zip":
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
        if len(members) != 1:
            raise DataError(f"{path}: a zip archive must contain exactly one file, found {members}")
        return archive.open(members[0])
    return open(path, "rb")


def _decode_head(path: Path, head: bytes, encoding: str | None, compression: str) -> str:
    if encoding is not None:
        try:
            return head.decode(encoding, errors="replace")
        except LookupError:
            raise DataError(f"{path}: unknown encoding {encoding!r} (dataset.encoding)") from None
    text = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        return text.decode(head, final=False)
    except UnicodeDecodeError:
        raise _encoding_error(path, compression) from None


def _guess_separator(header: str, path: Path) -> str:
    """The candidate separator that splits the header into the most fields (tab for ``.tsv``)."""
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda s: counts[s])
    if counts[best] == 0:
        return "\t" if ".tsv" in path.suffixes else ","
    return best


def _csv_error(source: TableSource, exc: Exception) -> DataError:
    message = str(exc)
    if "UTF8" in message or "UTF-8" in message:
        return _encoding_error(source.path, source.compression)
    return DataError(f"{source.path}: cannot parse as {source.separator!r}-separated text: {message}")


def _encoding_error(path: Path, compression: str) -> DataError:
    """Find the first byte that is not UTF-8 and say where it is and how to read the file instead."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with _open_binary(path, compression) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                bad = offset + err.start
                line += block[: err.start].count(b"\n")
                snippet = block[max(0, err.start - 20): err.start + 10]
                return DataError(
                    f"{path}: byte {bad} (line {line}) is not valid UTF-8 "
                    f"(bytes near it: {snippet!r}); give the file's encoding, e.g. dataset.encoding=latin-1"
                )
            offset += len(block)
            line += block.count(b"\n")
    return DataError(f"{path}: not valid UTF-8; give the file's encoding, e.g. dataset.encoding=latin-1")
