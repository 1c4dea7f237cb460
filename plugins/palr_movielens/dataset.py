"""MovieLens (GroupLens) as a palr Dataset: 100K, 1M, 20M and 25M in their published formats.

Every rating is one implicit interaction (the paper's setting); the catalogue holds each movie's
title (with year, as published) and genres. Files are read from ``root`` or downloaded from
files.grouplens.org into ``cache_dir``; the parsed result is cached, keyed by the files' sha256.

Accepted layouts (``format: auto`` picks the first one present):

- ``official``: ``u.data`` + ``u.item`` (100K, tab / ``|``, latin-1); ``ratings.dat`` +
  ``movies.dat`` (1M, ``::``, latin-1); ``ratings.csv`` + ``movies.csv`` (20M/25M, UTF-8, header).
- ``chrono``: ``<variant>_user_item_chrono.txt`` (``user item`` per line, no rating and no
  timestamp, each user's lines in time order, e.g. the ML-1M copy in ``../shared/data``) plus the
  official item file; file order is the time order.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from palr_core import DataError, InteractionLog, ItemCatalog, RawDataset
from palr_core.datafiles import (
    BadLines,
    MissingDataError,
    Remote,
    cache_key,
    cached,
    fetch,
    missing_files_message,
    read_delimited,
    read_text,
)

log = logging.getLogger("palr")
BASE_URL = "https://files.grouplens.org/datasets/movielens"
#: bump when the parsed RawDataset changes for the same files and settings
LOADER_VERSION = 1
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]


@dataclass(frozen=True)
class Variant:
    """One MovieLens release: its archive, published MD5 (GroupLens' ``.md5`` sidecar) and files."""

    folder: str
    checksum: str
    ratings: str
    items: str

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.folder}.zip"


VARIANTS = {
    "ml-100k": Variant("ml-100k", "md5:0e33842e24a9c977be4e0107933c0723", "u.data", "u.item"),
    "ml-1m": Variant("ml-1m", "md5:c4d9eecfca2ab87c1945afe126590906", "ratings.dat", "movies.dat"),
    "ml-20m": Variant("ml-20m", "md5:cd245b17a1ae2cc31bb14903e1204af3", "ratings.csv", "movies.csv"),
    "ml-25m": Variant("ml-25m", "md5:6b51fb2759a8657d3bfcbfc42b592ada", "ratings.csv", "movies.csv"),
}
FORMATS = ("auto", "official", "chrono")


@dataclass
class MovieLensConfig:
    """Where the MovieLens files are and how to read them.

    :param variant: ``ml-100k``, ``ml-1m``, ``ml-20m`` or ``ml-25m``.
    :param root: directory holding the files; ``None`` downloads into ``cache_dir``.
    :param cache_dir: downloads and the parsed-data cache.
    :param format: ``auto`` (detect from the files in ``root``), ``official`` or ``chrono``.
    :param on_bad_lines: ``error`` (stop at the first malformed line) or ``skip`` (skip and count).
    :param url: archive URL (default: the GroupLens URL of ``variant``); any urllib URL, incl. ``file://``.
    :param checksum: ``md5:<hex>``/``sha256:<hex>`` of the archive (default: GroupLens' published
        MD5 when ``url`` is the default, else none); ``""`` disables the check.
    :param progress: show a progress bar while downloading.
    """

    variant: str = "ml-1m"
    root: str | None = None
    cache_dir: str = "~/.cache/palr/datasets"
    format: str = "auto"
    on_bad_lines: str = "error"
    url: str | None = None
    checksum: str | None = None
    progress: bool = True


class MovieLens:
    """Dataset plugin: ``palr-run dataset=ml-1m dataset.root=<dir>`` (also ``ml-100k``, ``ml-20m``, ``ml-25m``)."""

    def __init__(self, **params) -> None:
        self.config = MovieLensConfig(**params)
        cfg = self.config
        if cfg.variant not in VARIANTS:
            raise DataError(f"MovieLens variant {cfg.variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
        if cfg.format not in FORMATS:
            raise DataError(f"MovieLens format {cfg.format!r} is unknown; choose one of {', '.join(FORMATS)}")
        BadLines(cfg.on_bad_lines)  # validates the option before any file is touched
        self.variant = VARIANTS[cfg.variant]
        #: what the last load read: format, files, skipped lines, from_cache, and cache_key (a
        #: fingerprint of files + settings that a preprocessing cache can build on)
        self.report: dict = {}

    # -- files ----------------------------------------------------------------------------
    def layouts(self) -> dict[str, list[str]]:
        """Accepted file sets by format name."""
        v = self.variant
        return {"official": [v.ratings, v.items],
                "chrono": [f"{self.config.variant}_user_item_chrono.txt", v.items]}

    def _detect(self, directory: Path) -> str | None:
        wanted = self.layouts() if self.config.format == "auto" else {
            self.config.format: self.layouts()[self.config.format]}
        for name, files in wanted.items():
            if all((directory / f).is_file() for f in files):
                return name
        return None

    def locate(self) -> tuple[Path, str]:
        """The directory with the files and their format; downloads when ``root`` is unset."""
        cfg = self.config
        if cfg.root is not None:
            root = Path(cfg.root).expanduser()
            for directory in (root, root / self.variant.folder):
                found = self._detect(directory)
                if found:
                    return directory, found
            raise MissingDataError(self._help(root))
        directory = Path(cfg.cache_dir).expanduser() / self.variant.folder
        found = self._detect(directory)
        if found is None:
            url = cfg.url or self.variant.url
            checksum = cfg.checksum if cfg.checksum is not None else (
                self.variant.checksum if cfg.url is None else None)
            fetch([Remote(url, checksum or None, unpack=True)], directory.parent, self._help(directory),
                  progress=cfg.progress)
            found = self._detect(directory)
            if found is None:
                raise MissingDataError(f"the archive from {url} did not contain the expected files. "
                                       + self._help(directory))
        return directory, found

    def _help(self, directory: Path) -> str:
        url = self.config.url or self.variant.url
        return missing_files_message(f"MovieLens {self.config.variant}", directory, self.layouts(), [url])

    # -- loading --------------------------------------------------------------------------
    def load(self) -> RawDataset:
        directory, fmt = self.locate()
        files = [directory / f for f in self.layouts()[fmt]]
        settings = {"loader": LOADER_VERSION, "variant": self.config.variant, "format": fmt,
                    "on_bad_lines": self.config.on_bad_lines}
        built = []

        def build():
            built.append(True)
            return self._parse(files, fmt)

        name = f"movielens-{self.config.variant}"
        raw, report = cached(self.config.cache_dir, name, files, settings, build)
        self.report = {**report, "files": [str(f) for f in files], "from_cache": not built,
                       "cache_key": cache_key(self.config.cache_dir, name, files, settings)}
        log.info("MovieLens %s: %s layout in %s (%s events, %s catalogue items)", self.config.variant,
                 fmt, directory, f"{report['events']:,}", f"{report['catalog_items']:,}")
        if report["skipped_lines"]:
            log.warning("MovieLens %s: skipped %s malformed lines (on_bad_lines=skip)",
                        self.config.variant, report["skipped_lines"])
        return raw

    def _parse(self, files: list[Path], fmt: str) -> tuple[RawDataset, dict]:
        bad = BadLines(self.config.on_bad_lines)
        ratings_file, items_file = files
        users, items, stamps = _read_ratings(ratings_file, fmt, bad)
        catalog = _read_items(items_file, bad)
        raw = RawDataset(log=InteractionLog(users, items, stamps), catalog=catalog, name=self.config.variant)
        report = {"format": fmt, "files": [str(f) for f in files], "skipped_lines": bad.total,
                  "skipped_by_file": dict(bad.skipped), "examples": bad.examples,
                  "events": len(users), "catalog_items": len(catalog)}
        return raw, report


def _read_ratings(path: Path, fmt: str, bad: BadLines):
    if fmt == "chrono":
        cols = read_delimited(path, [("user", "int"), ("item", "int")], " ", bad_lines=bad)
        return cols["user"], cols["item"], None
    ratings = [("user", "int"), ("item", "int"), ("rating", "float"), ("timestamp", "int")]
    if path.name == "u.data":
        cols = read_delimited(path, ratings, "\t", bad_lines=bad)
    elif path.suffix == ".dat":
        cols = read_delimited(path, ratings, "::", bad_lines=bad)
    else:
        _expect_header(path, "userId,movieId,rating,timestamp")
        cols = read_delimited(path, ratings, ",", header=True, bad_lines=bad)
    return cols["user"], cols["item"], cols["timestamp"]


def _read_items(path: Path, bad: BadLines) -> ItemCatalog:
    if path.name == "u.item":
        columns = [("id", "int"), ("title", "str"), ("release", "str"), ("video", "str"), ("url", "str")]
        columns += [(f"g{j}", "int") for j in range(len(GENRES_100K))]
        cols = read_delimited(path, columns, "|", encoding="latin-1", bad_lines=bad)
        flags = np.stack([cols[f"g{j}"] for j in range(len(GENRES_100K))], axis=1)
        genres = [[GENRES_100K[j] for j in np.flatnonzero(row) if j > 0] for row in flags]
        ids, titles = cols["id"].tolist(), cols["title"].tolist()
    elif path.suffix == ".dat":
        cols = read_delimited(path, [("id", "int"), ("title", "str"), ("genres", "str")], "::",
                              encoding="latin-1", bad_lines=bad)
        ids, titles = cols["id"].tolist(), cols["title"].tolist()
        genres = [_split_genres(g) for g in cols["genres"].tolist()]
    else:
        ids, titles, genres = _read_movies_csv(path, bad)
    titles = [t.strip() or f"MovieLens movie {i}" for i, t in zip(ids, titles)]
    return ItemCatalog(ids=ids, titles=titles, attributes={"genres": genres}, domain="movies")


def _split_genres(text: str) -> list[str]:
    return [g for g in text.split("|") if g and g != "(no genres listed)"]


def _read_movies_csv(path: Path, bad: BadLines):
    """``movies.csv`` (20M/25M): quoted titles may contain commas, so the csv module reads it."""
    _expect_header(path, "movieId,title,genres")
    ids, titles, genres = [], [], []
    reader = csv.reader(io.StringIO(read_text(path, "utf-8")))
    next(reader)
    for row in reader:
        if not row:
            continue
        if len(row) != 3 or not row[0].isdigit():
            bad(path, reader.line_num, f"expected 3 comma-separated fields (movieId, title, genres), got {row!r}")
            continue
        ids.append(int(row[0]))
        titles.append(row[1])
        genres.append(_split_genres(row[2]))
    return ids, titles, genres


def _expect_header(path: Path, header: str) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    if not first:
        raise DataError(f"{path} is empty; expected a header line {header!r} and then data")
    if first != header:
        raise DataError(f"{path}, line 1: expected the header {header!r}, got {first[:80]!r}")
