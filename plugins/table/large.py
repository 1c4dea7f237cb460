"""``dataset.engine=duckdb``: the log read, deduplicated, k-cored and ordered in DuckDB, out of core.

The result is what ``engine=memory`` gives (the same users, items, numbering and sequences), but
the raw log never enters Python: DuckDB scans the file, holds its tables in a database file in a
temporary folder under ``cache_dir`` and keeps to ``dataset.memory_limit`` by spilling there.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from palr_core import DataError, ItemCatalog, RunContext, SequenceData
from palr_core.kit.tables import TableSource

from .dataset import _as_strings
from .outofcore import cached_sequences, connect, preprocess_relation, sequence_data

#: bump when the reading below changes what a cached result would hold
VERSION = 1
INTEGER_ID = "-?(0|[1-9][0-9]{0,17})"  # engine=memory's integer id: no leading zeros
INTEGER_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT")


def load_sequences(dataset, k_core: int, context: RunContext | None) -> SequenceData:
    cfg = dataset.config
    source, _ = dataset._log_source()
    if source.compression == "zip":
        raise DataError(f"{source.path}: dataset.engine=duckdb reads Parquet and plain or gzip text, not zip "
                        "archives; unzip it or use dataset.engine=memory")
    # every option but the files (hashed by content) and how the work is done (not what it gives)
    settings = {"version": VERSION, "k_core": k_core,
                **{name: value for name, value in dataclasses.asdict(cfg).items()
                   if name not in ("interactions", "items", "engine", "memory_limit")}}
    files = [source.path] + ([Path(cfg.items).expanduser()] if cfg.items is not None else [])
    cache_dir = context.cache_dir if context is not None else None

    def build() -> SequenceData:
        return _build(dataset, source, k_core, cache_dir)

    if cache_dir is None:
        return build()
    return cached_sequences(cache_dir, f"table-{source.path.stem}-{k_core}core", files, settings, build)


def _build(dataset, source: TableSource, k_core: int, cache_dir) -> SequenceData:
    cfg = dataset.config
    dataset.report = type(dataset.report)()  # this load's counts only, as engine=memory's load
    work = _work_folder(cache_dir)
    try:
        con = connect(work, cfg.memory_limit)  # first: without DuckDB, this is the one-line refusal
        import duckdb

        try:
            relation, rows_read = _relation(con, source, cfg)
            result = preprocess_relation(con, relation, k_core, has_time=cfg.timestamp is not None,
                                         name=source.path.name)
        except duckdb.Error as exc:
            raise DataError(f"{source.path}: DuckDB could not read it (dataset.engine=duckdb): "
                            f"{' '.join(str(exc).split())}") from None
        finally:
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = dataset.report
    report.rows_read, report.rows_kept = rows_read, result.counts["rows"]
    report.users, report.items_logged = len(result.user_ids), len(result.item_ids)
    print(f"table {source.path.name} (DuckDB): {rows_read:,} rows read, {result.counts['rows']:,} kept, "
          f"{result.counts['deduplicated']:,} "
          f"after dedup, {result.counts['kept']:,} after {k_core}-core; {len(result.user_ids):,} users, "
          f"{len(result.item_ids):,} items")
    return sequence_data(result, _catalog(dataset, result.item_ids), source.path.name)


def _work_folder(cache_dir) -> Path:
    """A new ``duckdb-<pid>-*`` folder for DuckDB's database and spill files, under ``cache_dir``
    (the system's temporary folder when it cannot be written). Folders left by processes that no
    longer run (a killed load) are removed first: they can hold gigabytes."""
    base = None
    if cache_dir is not None:
        base = Path(cache_dir).expanduser()
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError:
            base = None
    base = base or Path(tempfile.gettempdir())
    for left in base.glob("duckdb-*-*"):
        pid = left.name.split("-")[1]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(left, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"duckdb-{os.getpid()}-", dir=base))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _relation(con, source: TableSource, cfg) -> tuple[str, int]:
    """A ``SELECT uid, iid, rn[, ts]`` over the file's kept rows, and the file's row count; text
    files are loaded into a table first, in file order, so that ``rowid`` is the file row."""
    path = _literal(source.path.as_posix())
    if source.format == "parquet":
        scan, row = f"read_parquet({path}, file_row_number = true)", "file_row_number"
    else:
        options = [f"delim = {_literal(source.separator)}", f"header = {str(source.header).lower()}",
                   f"quote = {_literal(chr(34) if source.quoted else '')}",
                   f"compression = {_literal('gzip' if source.compression == 'gzip' else 'none')}",
                   # ids as text: the integer test below decides, as engine=memory does ("007" stays text)
                   "types = {" + ", ".join(f"{_literal(c)}: 'VARCHAR'" for c in (cfg.user, cfg.item)) + "}"]
        if not source.header:
            options.append("names = [" + ", ".join(_literal(c) for c in source.columns) + "]")
        if source.encoding not in (None, "utf-8", "utf8"):
            options.append(f"encoding = {_literal(source.encoding)}")
        con.execute("SET preserve_insertion_order = true")  # rowid below is the file's row order
        con.execute(f"CREATE OR REPLACE TABLE palr_text AS SELECT * FROM read_csv({path}, {', '.join(options)})")
        con.execute("SET preserve_insertion_order = false")
        scan, row = "palr_text", "rowid"
    types = {name: kind.upper() for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    columns = [f"{_id(con, scan, cfg.user, types[cfg.user])} AS uid",
               f"{_id(con, scan, cfg.item, types[cfg.item])} AS iid", f"{row} AS rn"]
    if cfg.timestamp is not None:
        columns.append(f"{_time(cfg.timestamp, types[cfg.timestamp], source)} AS ts")
    where = ""
    if cfg.rating_threshold is not None:
        rating = f"TRY_CAST({_quoted(cfg.rating)} AS DOUBLE)"
        where = f" WHERE {rating} >= {float(cfg.rating_threshold)!r} AND NOT isnan({rating})"
    rows_read = con.execute(f"SELECT count(*) FROM {scan}").fetchone()[0]  # Parquet: from its metadata
    return f"SELECT {', '.join(columns)} FROM {scan}{where}", rows_read


def _id(con, scan: str, column: str, kind: str) -> str:
    """Integer ids stay integers; text ids are trimmed, and become integers when every one is a
    plain integer without leading zeros (the rule of ``engine=memory``); an empty one is missing."""
    name = _quoted(column)
    if kind in INTEGER_TYPES or kind in ("FLOAT", "DOUBLE", "REAL") or kind.startswith("DECIMAL"):
        return f"CAST({name} AS BIGINT)"
    text = f"NULLIF(trim(CAST({name} AS VARCHAR)), '')"
    integers = con.execute(f"SELECT coalesce(bool_and(regexp_full_match({text}, '{INTEGER_ID}')), false) "
                           f"FROM {scan}").fetchone()[0]
    return f"CAST({text} AS BIGINT)" if integers else text


def _time(column: str, kind: str, source: TableSource) -> str:
    name = _quoted(column)
    if kind in INTEGER_TYPES:
        return f"CAST({name} AS BIGINT)"
    if kind in ("FLOAT", "DOUBLE", "REAL") or kind.startswith("DECIMAL"):
        return f"CAST({name} AS DOUBLE)"
    if kind == "VARCHAR":  # ISO 8601 text: an offset is honoured, a time without one is UTC
        return f"epoch_ms(CAST({name} AS TIMESTAMPTZ))"
    if kind.startswith(("TIMESTAMP", "DATE")):
        return f"epoch_ms(CAST({name} AS TIMESTAMP))"
    raise DataError(f"{source.path}: column {column!r} (dataset.timestamp) is {kind}; expected integers, "
                    "floats or dates/times")


def _catalog(dataset, item_ids: np.ndarray) -> ItemCatalog:
    """The catalogue of the kept items, in item-code order, made as ``engine=memory`` makes it."""
    if dataset.config.items is None:
        return dataset._catalog_from_ids(item_ids)
    catalog, as_strings = dataset._catalog_from_file(item_ids)
    row = {key: at for at, key in enumerate(catalog.ids)}
    return catalog.subset([row[key] for key in (_as_strings(item_ids) if as_strings else item_ids).tolist()])
