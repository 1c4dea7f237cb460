"""Dataset plugin ``table``: a user's own interaction log (CSV, TSV or Parquet) and item file, as they are.

``palr-run dataset=table dataset.interactions=log.csv dataset.items=items.csv`` with a column
mapping in config. The log is streamed in blocks, so only the user, item, timestamp (and rating)
columns are held, at about 8 bytes per row each. Items in the log without a row in the items
file get their id as title; item rows never interacted with stay in the catalogue (preprocessing
drops them). Both are counted and reported (printed, and on :attr:`TableDataset.report`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from palr_core import DataError, InteractionLog, ItemCatalog, RawDataset, RunContext, SequenceData
from palr_core.kit.tables import TableSource, first_repeat, inspect, read_chunks

from .columns import IdColumn, NumberColumn, TimeColumn
from .config import TableConfig

log = logging.getLogger("palr.table")


@dataclass
class TableReport:
    """What loading found: row counts and the gaps between the log and the items file."""

    rows_read: int = 0
    rows_kept: int = 0
    ratings_missing: int = 0
    users: int = 0
    items_logged: int = 0
    users_with_one_interaction: int = 0
    item_rows: int = 0
    items_without_row: int = 0
    item_rows_never_interacted: int = 0
    empty_titles: int = 0
    examples: dict = field(default_factory=dict)

    def summary(self, name: str) -> str:
        """A few lines for the console."""
        lines = [f"table {name}: {self.rows_read:,} rows read, {self.rows_kept:,} kept; "
                 f"{self.users:,} users, {self.items_logged:,} items"]
        for key, text in [("ratings_missing", "rows without a rating (NaN or empty: dropped by the rating filter)"),
                          ("items_without_row", "logged items without a row in the items file (titled by id)"),
                          ("item_rows_never_interacted", "item rows never interacted with (preprocessing drops them)"),
                          ("empty_titles", "item rows with an empty title (titled by id)"),
                          ("users_with_one_interaction",
                           "users with a single interaction (preprocess.k_core >= 2 drops them)")]:
            if getattr(self, key):
                example = self.examples.get(key)
                lines.append(f"  {getattr(self, key):,} {text}" + (f", e.g. {example}" if example else ""))
        return "\n".join(lines)


class TableDataset:
    """Dataset plugin: ``palr-run dataset=table dataset.interactions=... [dataset.items=...]``."""

    def __init__(self, **params) -> None:
        self.config = TableConfig(**params)
        self.report = TableReport()

    def load(self, context: RunContext | None = None) -> RawDataset:
        cfg = self.config
        self.report = TableReport()
        source, wanted = self._log_source()
        users, items, times = self._read_log(source, wanted)
        self._count_users(users)
        if cfg.items is not None:
            catalog, as_strings = self._catalog_from_file(items.distinct)
            item_ids = _as_strings(items.values) if as_strings else items.values
        else:
            item_ids, catalog = items.values, self._catalog_from_ids(items.distinct)
        print(self.report.summary(source.path.name))
        return RawDataset(log=InteractionLog(users.values, item_ids, times), catalog=catalog,
                          name=source.path.name)

    def load_sequences(self, k_core: int, context: RunContext | None = None) -> SequenceData | None:
        """With ``engine=duckdb``, the preprocessed sequences straight from DuckDB (cached under
        ``context.cache_dir`` by the file's sha256); with ``engine=memory``, ``None``: palr loads
        the log with :meth:`load` and preprocesses it in memory."""
        if self.config.engine != "duckdb":
            return None
        from .large import load_sequences

        return load_sequences(self, k_core, context)

    def _log_source(self) -> tuple[TableSource, dict[str, str]]:
        """The log file and the columns read from it (option -> column), checked against its header;
        both engines start here."""
        cfg = self.config
        if cfg.rating_threshold is not None and cfg.rating is None:
            raise DataError("dataset.rating_threshold is set but dataset.rating names no column")
        source = inspect(cfg.interactions, cfg.separator, cfg.encoding, cfg.log_columns)
        wanted = {"user": cfg.user, "item": cfg.item, "timestamp": cfg.timestamp,
                  "rating": cfg.rating if cfg.rating_threshold is not None else None}  # no threshold: no filter
        wanted = {option: column for option, column in wanted.items() if column is not None}
        source.require(wanted, hints={"timestamp": "set dataset.timestamp=null to take file order as time order"})
        return source, wanted

    def _read_log(self, source: TableSource, wanted: dict[str, str]) -> tuple[IdColumn, IdColumn, np.ndarray | None]:
        cfg = self.config
        users, items = IdColumn(source, cfg.user, "user"), IdColumn(source, cfg.item, "item")
        times = TimeColumn(source, cfg.timestamp, "timestamp") if "timestamp" in wanted else None
        best_rating = self._stream_log(source, wanted, users, items, times)
        if self.report.rows_read == 0:
            raise DataError(f"{source.path}: the file has a header ({source.columns}) but no data rows")
        users.finish()
        if len(users.values) == 0:
            largest = (f"all {self.report.rows_read:,} ratings are NaN or empty"
                       if self.report.ratings_missing == self.report.rows_read else f"the largest rating is {best_rating}")
            raise DataError(f"{source.path}: no row has column {cfg.rating!r} (dataset.rating) >= "
                            f"{cfg.rating_threshold} (dataset.rating_threshold); {largest}")
        self.report.rows_kept = len(users.values)
        items.finish()
        return users, items, times.finish() if times is not None else None

    def _stream_log(self, source: TableSource, wanted: dict[str, str], users: IdColumn, items: IdColumn,
                    times: TimeColumn | None) -> float:
        """Feed every block to the column builders, keeping rows that pass the rating filter.

        Returns the largest rating seen (for the message when no row passes).
        """
        cfg = self.config
        ratings = NumberColumn(source, cfg.rating, "rating") if "rating" in wanted else None
        builders = [(cfg.user, users), (cfg.item, items)] + ([(cfg.timestamp, times)] if times else [])
        best_rating = -np.inf
        with tqdm(desc=f"reading {source.path.name}", unit=" rows", unit_scale=True, disable=None) as bar:
            for chunk in read_chunks(source, list(wanted.values())):
                block = chunk.arrays
                keep = None
                if ratings is not None:
                    values = ratings.read(chunk, block[cfg.rating])
                    missing = np.isnan(values)
                    self.report.ratings_missing += int(missing.sum())
                    if not missing.all():
                        best_rating = max(best_rating, float(np.nanmax(values)))
                    keep = values >= cfg.rating_threshold  # NaN compares False: dropped, and counted
                for column, builder in builders:
                    builder.add(chunk, block[column], keep)
                self.report.rows_read += len(block[cfg.user])
                bar.update(len(block[cfg.user]))
        return best_rating

    def _catalog_from_ids(self, ids: np.ndarray) -> ItemCatalog:
        """The catalogue of ``ids`` without an items file: each titled by its id."""
        self.report.items_logged = len(ids)
        self.report.items_without_row = len(ids)
        return ItemCatalog(ids=ids.tolist(), titles=[str(x) for x in ids.tolist()],
                           domain=self.config.domain, show_id=self.config.show_id)

    def _catalog_from_file(self, logged_ids: np.ndarray) -> tuple[ItemCatalog, bool]:
        """The catalogue (every row of the items file, then the ``logged_ids`` without a row, titled
        by id) and whether its ids are strings made from the log's (the two files disagree on type:
        the log's ids then need :func:`_as_strings` too)."""
        cfg = self.config
        source = inspect(cfg.items, cfg.separator, cfg.encoding, cfg.item_columns)
        ids, titles, attributes, rows = self._read_items(source)
        as_strings = ids.dtype != logged_ids.dtype  # e.g. integer ids in the log, "B00X" ids in the items file
        if as_strings:
            ids, logged_ids = _as_strings(ids), _as_strings(logged_ids)
        _check_unique(ids, rows, source, cfg.item_id or cfg.item)
        missing = logged_ids[~np.isin(logged_ids, ids)]
        self._report_items(ids, logged_ids, missing, titles)
        titles = [title or str(item) for title, item in zip(titles, ids.tolist())]
        catalog = ItemCatalog(
            ids=ids.tolist() + missing.tolist(),
            titles=titles + [str(x) for x in missing.tolist()],
            attributes={name: labels + [[] for _ in range(len(missing))] for name, labels in attributes.items()},
            domain=cfg.domain,
            show_id=cfg.show_id,
        )
        return catalog, as_strings

    def _report_items(self, ids: np.ndarray, logged_ids: np.ndarray, missing: np.ndarray,
                      titles: list[str]) -> None:
        unused = ~np.isin(ids, logged_ids)
        empty = [i for i, t in enumerate(titles) if not t]
        report = self.report
        report.item_rows, report.items_logged = len(ids), len(logged_ids)
        report.items_without_row, report.item_rows_never_interacted = len(missing), int(unused.sum())
        report.empty_titles = len(empty)
        report.examples.update(items_without_row=missing[:3].tolist(),
                               item_rows_never_interacted=ids[unused][:3].tolist(),
                               empty_titles=ids[empty[:3]].tolist())

    def _read_items(self, source: TableSource):
        cfg = self.config
        id_column = cfg.item_id or cfg.item
        wanted = {"item_id": id_column, **({"title": cfg.title} if cfg.title is not None else {}),
                  **{f"attributes[{i}]": name for i, name in enumerate(cfg.attributes)}}
        source.require(wanted, hints={"title": "set dataset.title=null to title items by their ids"})
        ids = IdColumn(source, id_column, "item_id")
        titles: list[str] = []
        attributes: dict[str, list[list[str]]] = {name: [] for name in cfg.attributes}
        rows: list[str] = []  # where each row is, for messages
        for chunk in read_chunks(source, list(wanted.values())):
            block = chunk.arrays
            ids.add(chunk, block[id_column])
            n = len(block[id_column])
            rows += [f"line {line}" for line in chunk.lines.tolist()] if chunk.lines is not None else [
                f"data row {chunk.first_row + i + 1}" for i in range(n)]
            titles += [_text(v) for v in block[cfg.title].to_pylist()] if cfg.title is not None else [""] * n
            for name in cfg.attributes:
                attributes[name] += [_labels(v, cfg.label_separator) for v in block[name].to_pylist()]
        if not rows:
            raise DataError(f"{source.path}: the items file has a header ({source.columns}) but no rows")
        return ids.finish(), titles, attributes, rows

    def _count_users(self, users: IdColumn) -> None:
        self.report.users = len(users.distinct)
        single = users.counts == 1
        self.report.users_with_one_interaction = int(single.sum())
        self.report.examples["users_with_one_interaction"] = users.distinct[single][:3].tolist()


def _check_unique(ids: np.ndarray, rows: list[str], source: TableSource, column: str) -> None:
    """Two rows for one item would leave one title silently unused: name both rows instead."""
    repeat = first_repeat(ids)
    if repeat is not None:
        at, earlier = repeat
        raise DataError(f"{source.path}, {rows[at]}: item id {ids[at:at + 1].tolist()[0]!r} (column {column!r}, dataset.item_id) "
                        f"repeats {rows[earlier]}; each item needs exactly one row")


def _as_strings(values: np.ndarray) -> np.ndarray:
    uniq, inverse = np.unique(values, return_inverse=True)
    strings = np.empty(len(uniq), dtype=object)
    strings[:] = [str(x) for x in uniq.tolist()]
    return strings[inverse]


def _text(value) -> str:
    return "" if value is None else " ".join(str(value).split())


def _labels(value, separator: str | None) -> list[str]:
    text = _text(value)
    parts = text.split(separator) if separator else [text]
    return [p.strip() for p in parts if p.strip()]
