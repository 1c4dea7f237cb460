"""MovieLens (GroupLens) as a palr Dataset: 100K, 1M, 20M and 25M in their published formats.

Every rating is one implicit interaction (the paper's setting); the catalogue holds each movie's
title (with year, as published) and genres. Files are read from ``root`` or downloaded from
files.grouplens.org into ``<cache_dir>/datasets``; the parsed result is cached, keyed by the
files' sha256.

Accepted layouts (``format: auto`` picks the first one present):

- ``official``: ``u.data`` + ``u.item`` (100K, tab / ``|``, latin-1); ``ratings.dat`` +
  ``movies.dat`` (1M, ``::``, latin-1); ``ratings.csv`` + ``movies.csv`` (20M/25M, UTF-8, header).
- ``chrono``: ``<variant>_user_item_chrono.txt`` (``user item`` per line, no rating and no
  timestamp, each user's lines in time order, e.g. the ML-1M copy in ``../shared/data``) plus the
  official item file; file order is the time order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from palr_core import DataError, InteractionLog, ItemCatalog, RawDataset, RunContext
from palr_core.kit.datasets import cached_raw
from palr_core.kit.files import MissingDataError, fetch, missing_files_message
from palr_core.kit.tables import BadLines, first_repeat, read_delimited

from .config import FORMATS, VARIANTS, MovieLensConfig

log = logging.getLogger("palr")
#: bump when the parsed RawDataset changes for the same files and settings
LOADER_VERSION = 3
GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
               "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
               "Romance", "Sci-Fi", "Thriller", "War", "Western"]


class MovieLens:
    """Dataset plugin: ``palr-run dataset=ml-1m dataset.root=<dir>`` (also ``ml-100k``, ``ml-20m``, ``ml-25m``)."""

    def __init__(self, **params) -> None:
        self.config = MovieLensConfig(**params)
        cfg = self.config
        if cfg.variant == "???":
            raise DataError(f"MovieLens needs a variant: dataset.variant={' | '.join(VARIANTS)} "
                            "(or a preset: dataset=ml-100k, dataset=ml-1m...)")
        if cfg.variant not in VARIANTS:
            raise DataError(f"MovieLens variant {cfg.variant!r} is unknown; choose one of {', '.join(VARIANTS)}")
        if cfg.format not in FORMATS:
            raise DataError(f"MovieLens format {cfg.format!r} is unknown; choose one of {', '.join(FORMATS)}")
        BadLines(cfg.on_bad_lines)  # validates the option before any file is touched
        self.variant = VARIANTS[cfg.variant]
        #: what the last load read: format, files, skipped lines, from_cache
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

    def locate(self, cache_dir: Path) -> tuple[Path, str]:
        """The directory with the files and their format; downloads into ``cache_dir/datasets``
        when ``root`` is unset."""
        cfg = self.config
        if cfg.root is not None:
            root = Path(cfg.root).expanduser()
            for directory in (root, root / self.variant.folder):
                found = self._detect(directory)
                if found:
                    return directory, found
            raise MissingDataError(self._help(root))
        directory = Path(cache_dir).expanduser() / "datasets" / self.variant.folder
        found = self._detect(directory)
        if found is None:
            url = cfg.url or self.variant.url
            checksum = cfg.checksum if cfg.checksum is not None else (
                self.variant.checksum if cfg.url is None else None)
            fetch(url, directory.parent, self._help(directory), checksum=checksum or None, unpack=True,
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
    def load(self, context: RunContext) -> RawDataset:
        directory, fmt = self.locate(context.cache_dir)
        files = [directory / f for f in self.layouts()[fmt]]
        settings = {"loader": LOADER_VERSION, "variant": self.config.variant, "format": fmt,
                    "on_bad_lines": self.config.on_bad_lines}
        raw, report, from_cache = cached_raw(context.cache_dir, f"movielens-{self.config.variant}", files,
                                             settings, lambda: self._parse(files, fmt))
        self.report = {**report, "files": [str(f) for f in files], "from_cache": from_cache}
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
        cols = read_delimited(path, columns, "|", encoding="latin-1", bad_lines=bad, line_numbers=True)
        flags = np.stack([cols[f"g{j}"] for j in range(len(GENRES_100K))], axis=1)
        genres = [[GENRES_100K[j] for j in np.flatnonzero(row) if j > 0] for row in flags]
        ids, titles = cols["id"].tolist(), cols["title"].tolist()
    elif path.suffix == ".dat":
        cols = read_delimited(path, [("id", "int"), ("title", "str"), ("genres", "str")], "::",
                              encoding="latin-1", bad_lines=bad, line_numbers=True)
        ids, titles = cols["id"].tolist(), cols["title"].tolist()
        genres = [_split_genres(g) for g in cols["genres"].tolist()]
    else:
        cols = _read_movies_csv(path, bad)
        ids, titles, genres = cols["id"].tolist(), cols["title"].tolist(), [_split_genres(g) for g in cols["genres"]]
    _refuse_repeated_ids(path, cols["id"], cols["line"])
    titles = [t.strip() or f"MovieLens movie {i}" for i, t in zip(ids, titles)]
    return ItemCatalog(ids=ids, titles=titles, attributes={"genres": genres}, domain="movies")


def _split_genres(text: str) -> list[str]:
    return [g for g in text.split("|") if g and g != "(no genres listed)"]


def _read_movies_csv(path: Path, bad: BadLines) -> dict:
    """``movies.csv`` (20M/25M): titles may be quoted and contain commas."""
    _expect_header(path, "movieId,title,genres")
    return read_delimited(path, [("id", "int"), ("title", "str"), ("genres", "str")], ",", header=True,
                          quoted=True, bad_lines=bad, line_numbers=True)


def _refuse_repeated_ids(path: Path, ids, lines) -> None:
    """Two lines for one movie would leave one title silently unused: name both lines instead."""
    repeat = first_repeat(ids)
    if repeat is not None:
        at, earlier = repeat
        raise DataError(f"{path}, line {lines[at]}: item id {ids[at]} repeats line {lines[earlier]}; each movie "
                        "needs exactly one line: remove or renumber one of them")


def _expect_header(path: Path, header: str) -> None:
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    if not first:
        raise DataError(f"{path} is empty; expected a header line {header!r} and then data")
    if first != header:
        raise DataError(f"{path}, line 1: expected the header {header!r}, got {first[:80]!r}")
