"""The one table reader of palr's dataset plugins: CSV/TSV (plain, gzip, zip) and Parquet, via pyarrow.

:func:`read_chunks` streams ``Chunk`` blocks of a few columns, so a caller keeps only what it needs
and memory follows the kept columns, not the file. :func:`read_delimited` reads a whole
fixed-format file (MovieLens' ``u.data``, ``ratings.dat``...) into typed numpy columns. Both
report a malformed line by file and physical line number and say what was expected (with a hint
when another separator would split it right); :class:`BadLines` decides whether such a line
stops the load or is skipped and counted. Every error is a :class:`palr_core.DataError`.
"""

from __future__ import annotations

import codecs
import csv
import io
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data import DataError
from .files import compression_of, open_binary

__all__ = ["TableSource", "Chunk", "BadLines", "inspect", "read_chunks", "read_delimited", "first_repeat"]

PARQUET_MAGIC = b"PAR1"
SEPARATORS = [",", "\t", ";", "|"]
SEPARATOR_NAMES = {"\t": "tab", ",": "comma", "::": "'::'", "|": "'|'", " ": "space", ";": "semicolon"}
BLOCK_BYTES = 16 << 20  # CSV bytes parsed per block: large enough for speed, small next to the data
_SWAP = "\x1f"  # a multi-character separator ("::") is read as this one-byte unit separator
INTEGER = r"^\s*[-+]?[0-9]+\s*$"
NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LONGEST_LINE = 64 << 20  # a "line" longer than this without a line end is not text


class BadLines:
    """What to do with a malformed line: ``"error"`` (raise, naming file and line) or ``"skip"`` (count).

    ``option`` names the setting that selects skipping, suggested in errors (``None``: no such setting).

    One instance per load; ``skipped`` maps file name to the number of lines skipped, and
    ``examples`` keeps the first few messages for the log.
    """

    def __init__(self, on_bad_lines: str = "error", option: str | None = "dataset.on_bad_lines") -> None:
        if on_bad_lines not in ("error", "skip"):
            raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
        self.mode = on_bad_lines
        self.option = option  # the option that turns skipping on, suggested in errors (None: there is none)
        self.skipped: dict[str, int] = {}
        self.examples: list[str] = []

    def __call__(self, path: str | Path, lineno: int | None, problem: str) -> None:
        """Report line ``lineno`` (1-based) of ``path``: raise in ``error`` mode, else count it."""
        message = f"{path}, line {lineno}: {problem}" if lineno else f"{path}: {problem}"
        if self.mode == "error":
            raise DataError(message + (f" (set {self.option}=skip to skip such lines)" if self.option else ""))
        self.skipped[Path(path).name] = self.skipped.get(Path(path).name, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(message)

    @property
    def total(self) -> int:
        return sum(self.skipped.values())


@dataclass(frozen=True)
class TableSource:
    """A file as palr reads it: its path, format, compression, separator, encoding and header.

    :param quoted: ``"`` quotes fields (CSV convention); off for formats whose titles contain
        unbalanced quotes (MovieLens).
    :param encoding_option: the option that sets ``encoding``, suggested when the file is not UTF-8
        (``None``: the format has a fixed encoding).
    """

    path: Path
    format: str  # "csv" or "parquet"
    compression: str  # "none", "gzip" or "zip"
    separator: str
    encoding: str | None  # None: UTF-8, checked
    columns: list[str]
    header: bool = True  # False: ``columns`` were given by the caller and line 1 is data
    quoted: bool = True
    encoding_option: str | None = "dataset.encoding"

    def require(self, wanted: dict[str, str], hints: dict[str, str] | None = None) -> None:
        """Fail naming the option and listing the columns found when a configured column is absent
        (and the separator that would have found it, when another one would)."""
        for option, column in wanted.items():
            if column not in self.columns:
                hint = (hints or {}).get(option, "")
                splits = [name for sep, name in SEPARATOR_NAMES.items() if sep != self.separator
                          and sep.strip(" ") and any(column in c.split(sep) for c in self.columns)]
                if splits:
                    hint = (f"the header splits into columns on {splits[0]}, not on "
                            f"{SEPARATOR_NAMES.get(self.separator, repr(self.separator))}: set dataset.separator "
                            "to it, or leave dataset.separator unset to detect it")
                raise DataError(
                    f"{self.path}: column {column!r} (dataset.{option}) not found; "
                    f"columns found: {self.columns}" + (f"; {hint}" if hint else "")
                )

    def expected(self) -> str:
        """``3 tab-separated fields (user, item, rating)``, for messages."""
        name = SEPARATOR_NAMES.get(self.separator, repr(self.separator))
        return f"{len(self.columns)} {name}-separated fields ({', '.join(self.columns)})"


@dataclass(frozen=True)
class Chunk:
    """A block of rows: the index of its first data row, each row's physical line (text files;
    ``None`` for Parquet), and the requested columns."""

    first_row: int
    lines: np.ndarray | None
    arrays: dict[str, pa.Array]

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def where(self, index: int) -> str:
        """``data row N (line M)`` of the row at ``index`` in this chunk, for messages."""
        line = f" (line {int(self.lines[index])})" if self.lines is not None else ""
        return f"data row {self.first_row + index + 1}{line}"


def inspect(path: str | Path, separator: str | None = None, encoding: str | None = None,
            names: list[str] | None = None) -> TableSource:
    """Detect format, compression and separator and read the header of ``path``.

    ``names`` names the columns of a text file without a header row, in order; fields beyond
    them are called ``column_<n>`` (1-based), so only the leading columns need names.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise DataError(f"{path} is a directory; expected a file (CSV, TSV or Parquet)")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    compression = compression_of(path)
    try:
        with open_binary(path, compression) as fh:
            head = fh.read(64 << 10)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read the {compression} file: {type(exc).__name__}: {exc}") from None
    if head[:4] == PARQUET_MAGIC:
        columns = _parquet_columns(path, compression)
        _refuse_repeated(path, columns, "the file's schema")
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
        _refuse_repeated(path, fields, "the header")
        return TableSource(path, "csv", compression, sep, encoding, fields)
    if len(names) > len(fields):
        raise DataError(f"{path}: {len(names)} column names given ({list(names)}) but the first line has "
                        f"{len(fields)} {sep!r}-separated fields: {header_line[:200]!r}")
    columns = list(names) + [f"column_{i + 1}" for i in range(len(names), len(fields))]
    _refuse_repeated(path, columns, "the column names given")
    return TableSource(path, "csv", compression, sep, encoding, columns, header=False)


def _refuse_repeated(path: Path, columns: list[str], where: str) -> None:
    """A column named twice would be read from one of the two silently: refuse it by name."""
    for column in dict.fromkeys(columns):
        fields = [i + 1 for i, c in enumerate(columns) if c == column]
        if len(fields) > 1:
            times = "twice" if len(fields) == 2 else f"{len(fields)} times"
            raise DataError(f"{path}: {where} names column {column!r} {times} (fields "
                            f"{', '.join(map(str, fields[:-1]))} and {fields[-1]}); each column needs its own name")


def read_chunks(source: TableSource, columns: list[str], bad_lines: BadLines | None = None,
                block_bytes: int = BLOCK_BYTES) -> Iterator[Chunk]:
    """Yield :class:`Chunk` blocks of ``columns`` over the whole file.

    CSV columns come as strings (the caller decides their type); Parquet columns keep theirs.
    Blank lines are dropped. A line with the wrong number of fields goes to ``bad_lines``
    (default: an error naming the line).
    """
    columns = list(dict.fromkeys(columns))
    bad_lines = bad_lines or BadLines("error", option=None)
    row = 0
    try:
        if source.format == "parquet":
            for batch in _parquet_batches(source, columns):
                if batch.num_rows:
                    yield Chunk(row, None, {name: batch.column(name) for name in columns})
                    row += batch.num_rows
            return
        for lines, arrays in _csv_blocks(source, columns, bad_lines, block_bytes):
            if len(lines):
                yield Chunk(row, lines, arrays)
                row += len(lines)
    except DataError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, pa.ArrowException) as exc:  # truncated or corrupt
        raise DataError(f"{source.path}: cannot read on after {row:,} data rows: {type(exc).__name__}: {exc}") from None


def read_delimited(path: str | Path, columns: Sequence[tuple[str, str]], sep: str, *,
                   encoding: str = "utf-8", header: bool = False, quoted: bool = False,
                   bad_lines: BadLines | None = None, block_bytes: int = BLOCK_BYTES,
                   line_numbers: bool = False) -> dict[str, np.ndarray]:
    """Read a separated text file with known columns into one numpy array per column.

    :param columns: ``(name, kind)`` for every field, kind ``"int"``, ``"float"`` or ``"str"``.
    :param sep: the field separator; more than one character (MovieLens' ``::``) is allowed.
    :param header: the first line is a header (skipped).
    :param quoted: ``"`` quotes fields (off by default: MovieLens titles hold unbalanced quotes).
    :param bad_lines: what to do with lines of the wrong shape, not valid in ``encoding``, or with
        unreadable numbers (integers must fit in 64 bits).
    :param line_numbers: also return ``"line"``: each row's physical line (1-based), for messages.
    """
    path = Path(path)
    kinds = dict(columns)
    unknown = set(kinds.values()) - {"int", "float", "str"}
    if unknown:
        raise ValueError(f"column kinds must be int, float or str, got {sorted(unknown)}")
    source = TableSource(path, "csv", compression_of(path), sep, encoding, list(kinds), header=header,
                         quoted=quoted, encoding_option=None)
    bad_lines = bad_lines or BadLines("error")
    parts: dict[str, list[np.ndarray]] = {name: [] for name in kinds}
    lines: list[np.ndarray] = []
    for chunk in read_chunks(source, list(kinds), bad_lines, block_bytes):
        keep = np.ones(len(chunk), dtype=bool)
        for name, kind in kinds.items():
            if kind != "str":
                keep &= _valid_numbers(chunk, name, kind, path, bad_lines)
        for name, kind in kinds.items():
            parts[name].append(_convert(chunk.arrays[name], kind, keep))
        lines.append(chunk.lines[keep])
    if not any(len(p) for p in parts[next(iter(kinds))]):
        if not bad_lines.total:
            raise DataError(f"{path} is empty; expected lines of {source.expected()}")
        parts = {name: [np.zeros(0, dtype=_DTYPES[kind])] for name, kind in kinds.items()}
        lines = [np.zeros(0, dtype=np.int64)]
    columns_read = {name: np.concatenate(parts[name]) for name in kinds}
    return {**columns_read, "line": np.concatenate(lines)} if line_numbers else columns_read


_DTYPES = {"int": np.int64, "float": np.float64, "str": object}


def first_repeat(values: np.ndarray) -> tuple[int, int] | None:
    """``(position, earlier)``: the first value equal to one before it and where that one is
    (``None`` when all differ); for an id that must name one row, e.g. an item file's ids."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    repeats = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
    if not len(repeats):
        return None
    at = repeats[np.argmin(order[repeats])]  # the repeat that comes first in the file
    earlier = at - 1
    while earlier > 0 and ordered[earlier - 1] == ordered[at]:
        earlier -= 1
    return int(order[at]), int(order[earlier])


def _valid_numbers(chunk: Chunk, name: str, kind: str, path: Path, bad_lines: BadLines) -> np.ndarray:
    array = chunk.arrays[name]
    ok = pc.match_substring_regex(array, INTEGER if kind == "int" else NUMBER).to_numpy(zero_copy_only=False)
    for index in np.flatnonzero(~ok):
        bad_lines(path, int(chunk.lines[index]), f"field {name!r} must be {'an integer' if kind == 'int' else 'a number'}, "
                                                 f"got {array[int(index)].as_py()!r}")
    if kind == "int":  # 19 or more characters may not fit in int64: check those few in Python
        long = ok & pc.greater_equal(pc.utf8_length(array), 19).to_numpy(zero_copy_only=False)
        for index in np.flatnonzero(long):
            value = array[int(index)].as_py()
            if not INT64_MIN <= int(value) <= INT64_MAX:
                ok[index] = False
                bad_lines(path, int(chunk.lines[index]), f"field {name!r} must be a 64-bit integer (from {INT64_MIN} "
                                                         f"to {INT64_MAX}), got {value.strip()!r}")
    return ok


def _convert(array: pa.Array, kind: str, keep: np.ndarray) -> np.ndarray:
    if not keep.all():
        array = array.filter(pa.array(keep))
    if kind == "str":
        return np.asarray(array.to_pylist(), dtype=object)
    target = pa.int64() if kind == "int" else pa.float64()
    return pc.cast(pc.utf8_trim_whitespace(array), target).to_numpy(zero_copy_only=False)


# -- CSV ---------------------------------------------------------------------------------------
def _csv_blocks(source: TableSource, columns: list[str], bad_lines: BadLines,
                block_bytes: int) -> Iterator[tuple[np.ndarray, dict[str, pa.Array]]]:
    """``(physical line of each row, {column: strings})`` per block, blank and malformed rows removed."""
    import pyarrow.csv as pacsv

    skipped: list[int] = []
    refused: list[DataError] = []

    def invalid_row(row) -> str:
        # an exception raised in here would reach the caller as pyarrow's own message: keep ours
        text = row.text.replace(_SWAP, source.separator)
        try:
            bad_lines(source.path, row.number, _shape_problem(source, text, row.actual_columns))
        except DataError as exc:
            refused.append(exc)
            return "error"
        if row.number is not None:  # unknown only with quoted newlines; lines are then approximate
            skipped.append(row.number)
        return "skip"

    multi = len(source.separator) > 1
    # one thread: pyarrow then knows each malformed row's line number
    read = pacsv.ReadOptions(block_size=block_bytes, encoding=source.encoding or "utf8", use_threads=False,
                             column_names=source.columns, skip_rows=1 if source.header else 0)
    parse = pacsv.ParseOptions(delimiter=_SWAP if multi else source.separator,
                               quote_char='"' if source.quoted else False, newlines_in_values=source.quoted,
                               ignore_empty_lines=False, invalid_row_handler=invalid_row)
    convert = pacsv.ConvertOptions(include_columns=columns, column_types={c: pa.string() for c in columns},
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    next_line = 2 if source.header else 1
    with open_binary(source.path, source.compression) as raw:
        stream = raw
        if codecs.lookup(source.encoding or "utf8").name == "utf-8":  # pyarrow reads UTF-8 as it is: check it here
            advice = (f"give the file's encoding, e.g. {source.encoding_option}=latin-1" if source.encoding_option
                      else "this format is UTF-8: is the file another one re-encoded?")
            stream = _Utf8Lines(stream, source.path, bad_lines, advice)
        stream = _SeparatorSwap(stream, source.separator.encode()) if multi else stream
        try:
            reader = pacsv.open_csv(stream, read_options=read, parse_options=parse, convert_options=convert)
            for batch in reader:
                n = batch.num_rows
                gaps = np.asarray(skipped, dtype=np.int64)
                lines = np.setdiff1d(np.arange(next_line, next_line + n + len(gaps)), gaps)[:n]
                next_line = int(lines[-1]) + 1 if n else next_line
                skipped[:] = [s for s in skipped if s >= next_line]  # the next block's malformed lines
                arrays = {name: batch.column(name) for name in columns}
                blank = np.ones(n, dtype=bool)
                for array in arrays.values():
                    blank &= pc.equal(pc.binary_length(array), 0).to_numpy(zero_copy_only=False)
                if blank.any():
                    mask = pa.array(~blank)
                    arrays = {name: array.filter(mask) for name, array in arrays.items()}
                    lines = lines[~blank]
                yield lines, arrays
        except pa.ArrowInvalid as exc:
            if refused:
                raise refused[0] from None
            raise _csv_error(source, exc) from None


def _shape_problem(source: TableSource, text: str, fields: int) -> str:
    """What is wrong with a line of the wrong shape, and a hint when another separator fits."""
    hint = ""
    for other, other_name in SEPARATOR_NAMES.items():
        if other != source.separator and other.strip(" ") and len(text.split(other)) == len(source.columns):
            hint = f"; the line splits into {len(source.columns)} fields on {other_name} — wrong separator?"
            break
    return f"expected {source.expected()}, got {fields} field(s): {text[:80]!r}{hint}"


class _BlockStream(io.RawIOBase):
    """A binary stream read block by block from ``raw``, each block rewritten by :meth:`_rewrite`."""

    out: bytes = b""
    offset = 0
    eof = False

    def readable(self) -> bool:
        return True

    def _rewrite(self, block: bytes) -> bytes:
        """The bytes to hand on for the next block read (``b""`` at the end of ``raw``)."""
        raise NotImplementedError

    def readinto(self, buffer) -> int:
        while self.offset >= len(self.out) and not self.eof:
            block = self.raw.read(1 << 20)
            self.eof = not block
            self.out, self.offset = self._rewrite(block), 0
        n = min(len(buffer), len(self.out) - self.offset)
        buffer[:n] = self.out[self.offset:self.offset + n]
        self.offset += n
        return n


class _Utf8Lines(_BlockStream):
    """A UTF-8 text stream in which each line that is not valid UTF-8 (binary garbage, another
    encoding) goes to ``bad_lines`` and is replaced by an empty line, so later lines keep their numbers.

    pyarrow would otherwise stop at such a line with a message that names no line, and fail
    inside its own malformed-row callback when the line also has the wrong number of fields.
    Whole lines are checked at once: ``bytes.isascii`` (or one ``decode``) per block in the usual case.
    """

    def __init__(self, raw, path: Path, bad_lines: BadLines, advice: str) -> None:
        self.raw, self.path, self.bad_lines, self.advice = raw, path, bad_lines, advice
        self.held = b""  # the unfinished last line of the blocks read so far
        self.line, self.byte = 1, 0  # the line number and file offset at the start of ``held``
        self.dropping = False  # inside a line longer than LONGEST_LINE, skipped to its end

    def _rewrite(self, block: bytes) -> bytes:
        data = self.held + block
        if self.dropping:
            end = data.find(b"\n")
            self.byte += len(data) if end < 0 else end + 1
            if end < 0:
                self.held = b""
                return b""
            self.dropping, self.line, data = False, self.line + 1, data[end + 1:]
            return b"\n" + self._whole_lines_of(data)
        return self._whole_lines_of(data)

    def _whole_lines_of(self, data: bytes) -> bytes:
        end = len(data) if self.eof else data.rfind(b"\n") + 1
        if end == 0 and len(data) > LONGEST_LINE:
            self.bad_lines(self.path, self.line, f"more than {LONGEST_LINE >> 20} MiB without a line end: "
                                                 "not a text table?")
            self.dropping, self.held, self.byte = True, b"", self.byte + len(data)
            return b""
        whole, self.held = data[:end], data[end:]
        if not whole.isascii():
            try:
                whole.decode("utf-8")
            except UnicodeDecodeError:
                whole = self._without_bad_lines(whole)
        self.line += whole.count(b"\n")
        self.byte += end
        return whole

    def _without_bad_lines(self, whole: bytes) -> bytes:
        lines = whole.split(b"\n")
        start = self.byte
        for number, text in enumerate(lines):
            try:
                text.decode("utf-8")
            except UnicodeDecodeError as err:
                snippet = text[max(0, err.start - 20): err.start + 10]
                self.bad_lines(self.path, self.line + number, f"byte {start + err.start} is not valid UTF-8 "
                                                              f"(bytes near it: {snippet!r}); {self.advice}")
                lines[number] = b""
            start += len(text) + 1
        return b"\n".join(lines)


class _SeparatorSwap(_BlockStream):
    """A binary stream with every multi-byte separator replaced by the one byte ``\\x1f``."""

    def __init__(self, raw, separator: bytes) -> None:
        self.raw, self.separator = raw, separator
        self.held = b""  # the end of the last read, when it may begin a separator the next read ends

    def _rewrite(self, chunk: bytes) -> bytes:
        data, self.held = (self.held + chunk).replace(self.separator, _SWAP.encode()), b""
        for k in range(len(self.separator) - 1, 0, -1):
            if not self.eof and data.endswith(self.separator[:k]):
                data, self.held = data[:-k], data[-k:]
                break
        return data


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
        raise _encoding_error(path, compression, "dataset.encoding") from None


def _guess_separator(header: str, path: Path) -> str:
    """The candidate separator that splits the header into the most fields (tab for ``.tsv``)."""
    counts = {sep: header.count(sep) for sep in SEPARATORS}
    best = max(SEPARATORS, key=lambda s: counts[s])
    if counts[best] == 0:
        return "\t" if ".tsv" in path.suffixes else ","
    return best


def _csv_error(source: TableSource, exc: Exception) -> DataError:
    message = str(exc)
    if "Empty CSV file" in message:
        return DataError(f"{source.path} is empty; expected lines of {source.expected()}")
    if "UTF8" in message or "UTF-8" in message:
        return _encoding_error(source.path, source.compression, source.encoding_option)
    return DataError(f"{source.path}: cannot parse as {source.separator!r}-separated text: {message}")


def _encoding_error(path: Path, compression: str, option: str | None) -> DataError:
    """Find the first byte that is not UTF-8 and say where it is and how to read the file instead."""
    advice = (f"give the file's encoding, e.g. {option}=latin-1" if option
              else "this format is UTF-8: is the file another one re-encoded?")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with open_binary(path, compression) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as err:
                bad = offset + err.start
                line += block[: err.start].count(b"\n")
                snippet = block[max(0, err.start - 20): err.start + 10]
                return DataError(
                    f"{path}: byte {bad} (line {line}) is not valid UTF-8 "
                    f"(bytes near it: {snippet!r}); {advice}"
                )
            offset += len(block)
            line += block.count(b"\n")
    return DataError(f"{path}: not valid UTF-8; {advice}")


# -- Parquet -----------------------------------------------------------------------------------
def _parquet_batches(source: TableSource, columns: list[str]) -> Iterator[pa.RecordBatch]:
    import pyarrow.parquet as pq

    with open_binary(source.path, source.compression) as fh:
        yield from pq.ParquetFile(fh).iter_batches(batch_size=1 << 20, columns=columns)


def _parquet_columns(path: Path, compression: str) -> list[str]:
    import pyarrow.parquet as pq

    with open_binary(path, compression) as fh:
        try:
            return list(pq.ParquetFile(fh).schema_arrow.names)
        except pa.ArrowException as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
