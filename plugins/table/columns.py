"""Typed columns of a table, built block by block: ids, timestamps and numbers, with clear errors.

Each builder is fed one :class:`~palr_core.kit.tables.Chunk` at a time (``add``) and keeps only
compact numpy arrays, so a file far larger than memory costs about 8 bytes per kept row per
column. Any value that cannot be read is reported with the file, the column, the option that
named it (``dataset.<option>``), the row and line, and the value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from palr_core import DataError
from palr_core.kit.tables import Chunk, TableSource

__all__ = ["Column", "IdColumn", "NumberColumn", "TimeColumn"]

INTEGER = r"^-?(0|[1-9][0-9]{0,17})$"  # no leading zeros: "007" stays the string id "007"
NUMBER = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
ZONE = r"(Z|[+-][0-9]{2}:?[0-9]{2})$"  # an explicit UTC offset at the end of an ISO time
TIME_HELP = ("expected integers (seconds or milliseconds since 1970) or ISO 8601 dates/times "
             "such as 2021-03-04 or 2021-03-04T05:06:07Z")


class Column:
    """Where a column comes from, for error messages."""

    def __init__(self, source: TableSource, column: str, option: str) -> None:
        self.source, self.column, self.option = source, column, option

    def fail(self, chunk: Chunk, index: int, value, expected: str) -> DataError:
        return DataError(
            f"{self.source.path}: column {self.column!r} (dataset.{self.option}), {chunk.where(index)}: "
            f"cannot read {value!r}; {expected}"
        )

    #: the Arrow types this kind of column reads (Parquet keeps its types; CSV columns are text)
    ACCEPTS: tuple[str, ...] = ("integers", "floats", "text")
    #: a NaN cell is an empty one (ids, times); a rating may be NaN (it is counted and dropped)
    NAN_IS_EMPTY = True

    def check_present(self, chunk: Chunk, array: pa.Array) -> None:
        """Refuse a column of a type this kind cannot read, and empty cells (an event without a
        user, item or time cannot be placed)."""
        kind = _arrow_kind(array.type)
        if kind not in self.ACCEPTS:
            raise DataError(f"{self.source.path}: column {self.column!r} (dataset.{self.option}) holds "
                            f"{array.type} values; expected {' or '.join(self.ACCEPTS)}")
        if not self.NAN_IS_EMPTY:  # an empty or NaN cell is a value of its own here
            return
        missing = array.is_null()
        if kind == "text":
            missing = pc.or_(missing, pc.equal(pc.binary_length(array), 0))
        elif kind == "floats" and self.NAN_IS_EMPTY:
            missing = pc.or_(missing, pc.is_nan(array))
        if pc.any(missing).as_py():
            index = int(np.flatnonzero(missing.to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{self.source.path}: column {self.column!r} (dataset.{self.option}) "
                            f"is empty{' (or NaN)' if kind == 'floats' else ''} in {chunk.where(index)}")


def _arrow_kind(kind: pa.DataType) -> str:
    if pa.types.is_integer(kind):
        return "integers"
    if pa.types.is_floating(kind):
        return "floats"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return "dates/times"
    return str(kind)


class IdColumn(Column):
    """Raw user or item ids: int64 while every value is a plain integer, otherwise strings."""

    def __init__(self, source: TableSource, column: str, option: str) -> None:
        super().__init__(source, column, option)
        self.blocks: list[np.ndarray] = []
        self.vocab: dict[str, int] | None = None  # set once a non-integer id appears
        self.values = self.distinct = self.counts = np.zeros(0, dtype=np.int64)

    def add(self, chunk: Chunk, array: pa.Array, keep: np.ndarray | None = None) -> None:
        self.check_present(chunk, array)
        if pa.types.is_floating(array.type):  # Parquet float ids: whole numbers only
            fraction = pc.not_equal(array, pc.floor(array))
            if pc.any(fraction).as_py():
                index = int(np.flatnonzero(fraction.to_numpy(zero_copy_only=False))[0])
                raise self.fail(chunk, index, array[index].as_py(), "ids must be whole numbers or text")
            array = pc.cast(array, pa.int64())
        if _arrow_kind(array.type) == "text":
            array = pc.utf8_trim_whitespace(array)  # "1, 2, 3": spaces after separators are not part of ids
            self.check_present(chunk, array)  # a cell of spaces only is an empty one
            written_nan = pc.equal(pc.utf8_lower(array), "nan")  # how pandas writes a missing value
            if pc.any(written_nan).as_py():
                index = int(np.flatnonzero(written_nan.to_numpy(zero_copy_only=False))[0])
                raise self.fail(chunk, index, array[index].as_py(), "that is how a missing value is written (pandas "
                                "writes NaN as 'nan'): fix or drop the row")
        if self.vocab is None:
            integers = _as_integers(array)
            if integers is not None:
                self.blocks.append(_own(integers, keep))
                return
            self._switch_to_strings()
        codes = self._encode(pc.cast(array, pa.string()))
        self.blocks.append(_own(codes, keep))

    def finish(self) -> np.ndarray:
        """All kept ids: int64, or an object array of str (one str object per distinct id).

        Also sets ``values`` (the same array), ``distinct`` (each kept id once) and ``counts``
        (rows per distinct id); for string ids these come from the integer codes, which is far
        cheaper than sorting Python strings.
        """
        codes = _stack(self.blocks, np.int64)
        if self.vocab is None:
            self.values = codes
            self.distinct, self.counts = np.unique(codes, return_counts=True)
            return codes
        vocab = np.empty(len(self.vocab), dtype=object)
        vocab[:] = list(self.vocab)
        counts = np.bincount(codes, minlength=len(vocab))
        seen = counts > 0  # ids seen only in rows the rating filter dropped are not kept
        self.distinct, self.counts = vocab[seen], counts[seen]
        self.values = vocab[codes]
        return self.values

    def _encode(self, array: pa.Array) -> np.ndarray:
        assert self.vocab is not None
        encoded = pc.dictionary_encode(array)
        vocab = self.vocab
        lookup = np.fromiter((vocab.setdefault(v, len(vocab)) for v in encoded.dictionary.to_pylist()),
                             dtype=np.int32, count=len(encoded.dictionary))
        return lookup[encoded.indices.to_numpy(zero_copy_only=False)]

    def _switch_to_strings(self) -> None:
        self.vocab = {}
        blocks, self.blocks = self.blocks, []
        for block in blocks:
            uniq, inverse = np.unique(block, return_inverse=True)
            lookup = self._encode(pa.array(uniq.astype(str)))
            self.blocks.append(lookup[inverse].astype(np.int32))


class NumberColumn(Column):
    """A numeric column (ratings): float64 per row; empty cells and NaN are NaN (the caller counts them)."""

    NAN_IS_EMPTY = False

    def read(self, chunk: Chunk, array: pa.Array) -> np.ndarray:
        """float64 values; empty cells and NaN become NaN."""
        self.check_present(chunk, array)
        if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
            return array.cast(pa.float64()).fill_null(float("nan")).to_numpy(zero_copy_only=False)
        array = pc.if_else(pc.equal(pc.binary_length(array), 0), pa.scalar(None, array.type), array)
        convert = lambda a: pc.cast(pc.utf8_trim_whitespace(pc.cast(a, pa.string())), pa.float64())  # noqa: E731
        return _convert(self, chunk, array, convert, "expected a number").fill_null(float("nan")).to_numpy(
            zero_copy_only=False)


class TimeColumn(Column):
    """Timestamps: integers as given, floats as given, ISO 8601 strings as epoch milliseconds.

    The kind is decided by the first row and every later row must match it, so one file never
    mixes units. NaN and infinite times are refused.
    """

    ACCEPTS = ("integers", "floats", "text", "dates/times")

    def __init__(self, source: TableSource, column: str, option: str) -> None:
        super().__init__(source, column, option)
        self.kind: str | None = None
        self.blocks: list[np.ndarray] = []

    def add(self, chunk: Chunk, array: pa.Array, keep: np.ndarray | None = None) -> None:
        self.check_present(chunk, array)
        self.kind = self.kind or _time_kind(array)
        converters = {"int": _to_int64, "float": _to_float64, "iso": _iso_to_ms}
        expected = {"int": "expected an integer timestamp, like the first row's",
                    "float": "expected a numeric timestamp, like the first row's",
                    "iso": TIME_HELP}[self.kind]
        values = _convert(self, chunk, array, converters[self.kind], expected).to_numpy(zero_copy_only=False)
        if values.dtype.kind == "f" and not np.isfinite(values).all():  # "nan", "inf" in a text file
            index = int(np.flatnonzero(~np.isfinite(values))[0])
            raise self.fail(chunk, index, array[index].as_py(), "a time must be a finite number")
        self.blocks.append(_own(values, keep))

    def finish(self) -> np.ndarray:
        return _stack(self.blocks, np.int64)


def _own(values: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """A numpy-owned copy of the kept rows, so the block's Arrow buffers are freed right away."""
    return values.copy() if keep is None else values[keep]


def _stack(blocks: list[np.ndarray], dtype) -> np.ndarray:
    """Concatenate and empty ``blocks``, freeing each block once copied (peak: result + one block)."""
    if not blocks:
        return np.zeros(0, dtype=dtype)
    out = np.empty(sum(len(b) for b in blocks), dtype=blocks[0].dtype)
    start = 0
    while blocks:
        block = blocks.pop(0)
        out[start: start + len(block)] = block
        start += len(block)
    return out


def _as_integers(array: pa.Array) -> np.ndarray | None:
    if pa.types.is_integer(array.type):
        return array.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if not pa.types.is_string(array.type) or not pc.all(pc.match_substring_regex(array, INTEGER)).as_py():
        return None
    return pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False)


def _time_kind(array: pa.Array) -> str:
    if pa.types.is_integer(array.type):
        return "int"
    if pa.types.is_floating(array.type):
        return "float"
    if pa.types.is_temporal(array.type):
        return "iso"
    first = pc.utf8_trim_whitespace(array.slice(0, 1))  # the first row sets the kind for the file
    if pc.all(pc.match_substring_regex(first, INTEGER)).as_py():
        return "int"
    if pc.all(pc.match_substring_regex(first, NUMBER)).as_py():
        return "float"
    return "iso"


def _to_int64(array: pa.Array) -> pa.Array:
    if pa.types.is_integer(array.type):
        return array.cast(pa.int64())
    return pc.cast(pc.utf8_trim_whitespace(array), pa.int64())


def _to_float64(array: pa.Array) -> pa.Array:
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        return array.cast(pa.float64())
    return pc.cast(pc.utf8_trim_whitespace(array), pa.float64())


def _iso_to_ms(array: pa.Array) -> pa.Array:
    """ISO dates/times to epoch milliseconds; naive times are taken as UTC, offsets are honoured."""
    if pa.types.is_temporal(array.type):
        return pc.cast(array, pa.timestamp("ms", tz=getattr(array.type, "tz", None))).cast(pa.int64())
    array = pc.utf8_trim_whitespace(array)
    zoned = pc.match_substring_regex(array, ZONE)
    if not pc.any(zoned).as_py():
        return pc.cast(array, pa.timestamp("ms")).cast(pa.int64())
    if pc.all(zoned).as_py():
        return pc.cast(array, pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    out = np.empty(len(array), dtype=np.int64)  # a mix of zoned and naive times: convert each kind
    mask = zoned.to_numpy(zero_copy_only=False)
    out[mask] = _iso_to_ms(array.filter(zoned)).to_numpy()
    out[~mask] = _iso_to_ms(array.filter(pc.invert(zoned))).to_numpy()
    return pa.array(out)


def _convert(column: Column, chunk: Chunk, array: pa.Array,
             convert: Callable[[pa.Array], pa.Array], expected: str) -> pa.Array:
    try:
        return convert(array)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        index = _first_failure(array, convert)
        raise column.fail(chunk, index, array[index].as_py(), expected) from None


def _first_failure(array: pa.Array, convert: Callable[[pa.Array], pa.Array]) -> int:
    """Index of the first value ``convert`` rejects, by bisection (a few conversions, not one per row)."""
    lo, hi = 0, len(array)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(array.slice(lo, mid - lo))
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo
