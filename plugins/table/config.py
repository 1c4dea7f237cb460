"""The ``table`` dataset's options (kept apart from the reader so that listing plugins imports no pyarrow)."""

from __future__ import annotations

from dataclasses import dataclass, field

from palr_core import option


@dataclass
class TableConfig:
    """Where the files are and which columns mean what.

    :param interactions: the log: ``.csv``/``.tsv``/any text table (plain, ``.gz`` or one-file
        ``.zip``) or Parquet, with a header row. Format and compression are detected from content.
    :param items: optional item file (same formats) with one row per item; without it, titles are ids.
    :param user: column of the log holding user ids.
    :param item: column of the log holding item ids.
    :param timestamp: column of the log holding times (integers, e.g. seconds or milliseconds, or
        ISO 8601 strings); ``null`` means file order is time order.
    :param rating: optional rating column; only rows with ``rating >= rating_threshold`` count.
    :param rating_threshold: the smallest rating that counts as an interaction (needs ``rating``).
    :param item_id: id column of the items file (default: the same name as ``item``).
    :param title: title column of the items file (``null``: titles are item ids).
    :param attributes: further items-file columns (e.g. ``[category, brand]``) that become item labels.
    :param label_separator: splits an attribute cell into several labels (``"Comedy|Drama"``).
    :param log_columns: names for the log's columns when it has no header row (in order; the
        first line is then data). Unnamed trailing fields are called ``column_<n>``.
    :param item_columns: the same for the items file.
    :param separator: field separator of text files (``null``: detected from the header line).
    :param encoding: text encoding (``null``: UTF-8, checked; e.g. ``latin-1`` for older files).
    :param domain: ``movies`` or ``products``: selects prompt wording.
    :param show_id: render items as ``"<id> (<title>)"`` in prompts (useful when titles repeat).
    :param engine: ``memory`` reads the log into numpy and palr preprocesses it there (about 100
        bytes per row at the peak); ``duckdb`` reads, deduplicates, k-cores and orders it in DuckDB
        out of core, for logs too large for that (hundreds of millions of rows: ``pip install
        duckdb``). Both give the same users, items and sequences. ``duckdb`` reads Parquet and
        plain or gzip text, integer, float or date/time timestamps (as epoch milliseconds).
    :param memory_limit: DuckDB's memory limit with ``engine=duckdb`` (it spills to disk beyond it).
    """

    interactions: str = "???"
    items: str | None = None
    user: str = "user_id"
    item: str = "item_id"
    timestamp: str | None = "timestamp"
    rating: str | None = None
    rating_threshold: float | None = None
    item_id: str | None = None
    title: str | None = "title"
    attributes: list = field(default_factory=list)
    label_separator: str | None = "|"
    log_columns: list = field(default_factory=list)
    item_columns: list = field(default_factory=list)
    separator: str | None = None
    encoding: str | None = None
    domain: str = option("products", choices=("movies", "products"))
    show_id: bool = False
    engine: str = option("memory", choices=("memory", "duckdb"))
    memory_limit: str = option("4GB", pattern=r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)",
                               hint="a size such as 4GB or 512MB")
