"""palr's preprocessing for logs too large to hold raw (``dataset.engine=duckdb``): DuckDB does the
heavy part out of core.

:func:`palr_core.preprocess` holds the raw log as numpy columns and sorts it in memory, over 100
bytes per event at its peak: fine for ML-20M, not for a few hundred million events.
:func:`preprocess_relation` gives the same :class:`~palr_core.SequenceData` (same users, items,
order and numbering) from any DuckDB relation of the log, with DuckDB's memory limit on the
dedup, the k-core rounds, the numbering and the sort (it spills into its working folder beyond
it); only the result comes back to numpy, 16 bytes per kept interaction.

The relation needs the columns ``uid``, ``iid``, ``rn`` (file order, unique) and, when the log
has times, ``ts``; :mod:`.large` writes that ``SELECT`` over the table's file and returns the
result from the dataset's ``load_sequences`` (:class:`palr_core.PreprocessesItself`).

DuckDB is an optional dependency (``pip install duckdb``, in ``palr[large]``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from palr_core import DataError, ItemCatalog, SequenceData
from palr_core.cache import cached
from palr_core.data import load_sequences, save_sequences
from palr_core.kit.files import FileHashes

__all__ = ["OutOfCoreLog", "cached_sequences", "connect", "preprocess_relation", "sequence_data"]

log = logging.getLogger("palr.outofcore")


@dataclass
class OutOfCoreLog:
    """The preprocessed log, flat: user ``u``'s items are ``items[offsets[u]:offsets[u + 1]]``.

    :param user_ids: raw user id per user code (sorted, as :func:`numpy.unique` orders them).
    :param item_ids: raw item id per item code (first appearance in user-then-time order).
    :param offsets: ``len(user_ids) + 1`` start positions into ``items``.
    :param items: item codes, per user in time order (ties in file order).
    :param timestamps: the time of each entry of ``items``; ``None`` when the log had none.
    :param counts: rows read, after dedup, after the k-core, and the k-core rounds.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None
    counts: dict


def connect(work_dir: str | os.PathLike | None = None, memory_limit: str = "4GB", threads: int | None = None):
    """A DuckDB connection held to ``memory_limit``.

    With ``work_dir``, its tables live in a database file there and spill beyond the limit into
    it, so the log may be larger than memory; the caller removes the folder when done.
    """
    try:
        import duckdb
    except ImportError as exc:  # optional dependency
        raise DataError("preprocessing out of core needs DuckDB: pip install duckdb (or palr[large])") from exc
    database = ":memory:"
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        database = str(Path(work_dir) / "palr.duckdb")
    con = duckdb.connect(database)
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute(f"SET threads = {int(threads or os.cpu_count() or 1)}")
    con.execute("SET preserve_insertion_order = false")  # every result below is ordered explicitly
    try:
        con.execute("SET TimeZone = 'UTC'")  # text times without an offset are UTC, as palr's reader takes them
    except duckdb.Error:  # a DuckDB without time zones (no ICU) takes them as UTC already
        pass
    if work_dir is not None:
        con.execute(f"SET temp_directory = '{(Path(work_dir) / 'spill').as_posix()}'")
    return con


def preprocess_relation(con, relation: str, k_core: int, has_time: bool, name: str = "dataset",
                        batch_rows: int = 1 << 22) -> OutOfCoreLog:
    """Dedup (a user's repeated item keeps its earliest event, time ties in file order), iterative
    ``k_core``, numbering and chronological order of :func:`palr_core.preprocess`, in DuckDB.

    :param relation: a ``SELECT`` with columns ``uid``, ``iid``, ``rn`` and, if ``has_time``, ``ts``.
    :param batch_rows: rows per Arrow batch when the result is copied into numpy.
    """
    started = time.perf_counter()
    rows, null_users, null_items = con.execute(
        f"SELECT count(*), count(*) - count(uid), count(*) - count(iid) FROM ({relation})").fetchone()
    for column, nulls in (("user", null_users), ("item", null_items)):
        if nulls:
            raise DataError(f"dataset {name!r}: {nulls:,} rows have no {column} id (an empty or null {column} column)")
    if rows == 0:
        raise DataError(f"dataset {name!r} has no interactions")
    # per-user dedup: the earliest (time, file row) of each (user, item), straight from the scan
    first = "min({'t': ts, 'r': rn})" if has_time else "min({'r': rn})"
    con.execute(f"CREATE OR REPLACE TABLE palr_kept AS SELECT uid, iid, {'k.t AS t, ' if has_time else ''}k.r AS r "
                f"FROM (SELECT uid, iid, {first} AS k FROM ({relation}) GROUP BY uid, iid)")
    deduplicated = con.execute("SELECT count(*) FROM palr_kept").fetchone()[0]
    log.info("%s: %s rows, %s after dedup (%.1f s)", name, f"{rows:,}", f"{deduplicated:,}",
             time.perf_counter() - started)
    rounds, kept = 0, deduplicated
    while k_core > 1:  # iterative k-core: drop users and items under k until none is
        rounds += 1
        removed = con.execute(
            f"DELETE FROM palr_kept WHERE uid IN (SELECT uid FROM palr_kept GROUP BY uid HAVING count(*) < {k_core}) "
            f"OR iid IN (SELECT iid FROM palr_kept GROUP BY iid HAVING count(*) < {k_core})").fetchone()[0]
        kept -= removed
        log.info("%s: %d-core round %d removed %s rows, %s left", name, k_core, rounds, f"{removed:,}", f"{kept:,}")
        if removed == 0 or kept == 0:
            break
    if kept == 0:
        raise DataError(f"dataset {name!r}: nothing left after {k_core}-core filtering")
    # users in sorted raw-id order; items in order of first appearance in (user, time, file row) order
    con.execute("CREATE OR REPLACE TABLE palr_users AS SELECT uid, "
                "(row_number() OVER (ORDER BY uid) - 1)::INTEGER AS u, n FROM "
                "(SELECT uid, count(*) AS n FROM palr_kept GROUP BY uid)")
    order = "t, r" if has_time else "r"  # time, then file row: palr's chronological order
    earliest = "{'u': u, 't': t, 'r': r}" if has_time else "{'u': u, 'r': r}"
    con.execute(f"CREATE OR REPLACE TABLE palr_coded AS SELECT u, iid, {order} FROM palr_kept JOIN palr_users USING (uid)")
    con.execute("DROP TABLE palr_kept")
    con.execute("CREATE OR REPLACE TABLE palr_items AS SELECT iid, "
                "(row_number() OVER (ORDER BY first) - 1)::INTEGER AS i FROM "
                f"(SELECT iid, min({earliest}) AS first FROM palr_coded GROUP BY iid)")
    user_ids, counts = _column_pair(con, "SELECT uid, n FROM palr_users ORDER BY u")
    item_ids = _column_pair(con, "SELECT iid, i FROM palr_items ORDER BY i")[0]
    offsets = np.zeros(len(user_ids) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    items = np.empty(kept, dtype=np.int64)
    times = None
    # a relation (con.sql), not con.execute: DuckDB 2's DB-API reader did not keep the ORDER BY
    ordered = con.sql(f"SELECT i{', t' if has_time else ''} FROM palr_coded JOIN palr_items USING (iid) "
                      f"ORDER BY u, {order}")
    reader = (ordered.to_arrow_reader if hasattr(ordered, "to_arrow_reader")  # DuckDB 2; 1.x's name below
              else ordered.fetch_arrow_reader)(batch_rows)
    at = 0
    for batch in reader:  # copied batch by batch: the peak is the result plus one batch
        n = batch.num_rows
        items[at:at + n] = batch.column(0).to_numpy(zero_copy_only=False)
        if has_time:
            column = batch.column(1).to_numpy(zero_copy_only=False)
            if times is None:
                times = np.empty(kept, dtype=column.dtype)
            times[at:at + n] = column
        at += n
    con.execute("DROP TABLE palr_coded")
    if at != kept:
        raise RuntimeError(f"DuckDB returned {at} of {kept} kept rows")
    log.info("%s: %s users, %s items, %s interactions after %d-core (%.1f s)", name, f"{len(user_ids):,}",
             f"{len(item_ids):,}", f"{kept:,}", k_core, time.perf_counter() - started)
    return OutOfCoreLog(user_ids=user_ids, item_ids=item_ids, offsets=offsets, items=items,
                        timestamps=times if has_time else None,
                        counts={"rows": rows, "deduplicated": deduplicated, "kept": kept, "k_core_rounds": rounds})


def _column_pair(con, query: str) -> tuple[np.ndarray, np.ndarray]:
    result = con.sql(query)
    table = result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.arrow()
    return tuple(_numpy(table.column(j)) for j in range(2))


def _numpy(column) -> np.ndarray:
    values = column.to_numpy()
    if values.dtype.kind == "O" or values.dtype.kind == "U":  # strings stay Python strings, as numpy.unique keeps them
        out = np.empty(len(values), dtype=object)
        out[:] = column.to_pylist()
        return out
    return values


def sequence_data(result: OutOfCoreLog, catalog: ItemCatalog, name: str) -> SequenceData:
    """The :class:`~palr_core.SequenceData` of ``result`` over ``catalog`` (one entry per item code),
    each user's sequence a view into the flat arrays."""
    cuts = result.offsets[1:-1]
    return SequenceData(
        sequences=np.split(result.items, cuts),
        user_ids=result.user_ids.tolist(),
        catalog=catalog,
        name=name,
        timestamps=None if result.timestamps is None else np.split(result.timestamps, cuts),
    )


def cached_sequences(cache_dir: str | os.PathLike, name: str, files: Sequence[str | os.PathLike], settings: dict,
                     build: Callable[[], SequenceData]) -> SequenceData:
    """``build()``'s sequences, from ``<cache_dir>/preprocessed`` while ``files`` (their sha256) and
    ``settings`` (JSON-serialisable: include the k-core and a reader version) are unchanged."""
    hashes = FileHashes(cache_dir)
    key = {"stage": "preprocess", "name": name, "settings": settings,
           "files": {Path(f).name: hashes.sha256(f) for f in files}}
    return cached(cache_dir, "preprocessed", name, key, build, save_sequences, load_sequences)
