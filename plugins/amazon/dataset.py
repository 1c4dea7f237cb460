"""Amazon product reviews (McAuley, UCSD) as a palr Dataset: 2014 and 2018 releases, any category.

Every review (or rating) is one implicit interaction; items are products shown in prompts as
``"ASIN (title)"`` as in the PALR paper, with brand and categories as attributes. Files are read
from ``root`` or downloaded from the UCSD mirror into ``<cache_dir>/datasets``; the parsed result
is cached, keyed by the files' sha256.

Accepted layouts for category ``C`` (``format: auto`` takes the first one present; see
docs/datasets.md):

- ``reviews`` (official): 2014 ``reviews_C_5.json.gz``, 2018 ``C_5.json.gz`` (JSON lines).
- ``ratings`` (official): 2014 ``ratings_C.csv`` (user,item,rating,time), 2018 ``C.csv`` (item,user,...).
  Both take titles, brand and categories from ``meta_C.json.gz`` when it is there.
- ``tsv`` (derived): ``c_5core_interactions.tsv`` (lower-case category; raw ids, review day).
- ``s3rec`` (derived): S3-Rec's ``C.txt`` + P5's ``datamaps.json``; file order is time.
  Both derived layouts take titles from ``item_titles.json`` when it is there.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path

from palr_core import DataError, InteractionLog, ItemCatalog, RawDataset, RunContext
from palr_core.kit.datasets import cached_raw
from palr_core.kit.files import MissingDataError, fetch, missing_files_message
from palr_core.kit.tables import BadLines

from . import formats
from .config import CATEGORIES, FORMATS, UCSD, AmazonConfig

log = logging.getLogger("palr")
LOADER_VERSION = 2


class AmazonReviews:
    """Dataset plugin: ``palr-run dataset=amazon-beauty dataset.root=<dir>`` (``dataset.category=...``)."""

    def __init__(self, **params) -> None:
        self.config = AmazonConfig(**params)
        cfg = self.config
        if cfg.category == "???":
            raise DataError("Amazon needs a category: dataset.category=<name as in the file names, e.g. Beauty> "
                            "(or the preset dataset=amazon-beauty)")
        if cfg.release not in CATEGORIES:
            raise DataError(f"Amazon release {cfg.release!r} is unknown; choose 2014 or 2018")
        if cfg.format not in FORMATS:
            raise DataError(f"Amazon format {cfg.format!r} is unknown; choose one of {', '.join(FORMATS)}")
        BadLines(cfg.on_bad_lines)
        #: what the last load read: format, files, skipped lines, products without a title, cache use
        self.report: dict = {}

    # -- files ----------------------------------------------------------------------------
    def layouts(self) -> dict[str, tuple[list[str], list[str]]]:
        """Accepted layouts: name -> (required files, optional text files)."""
        c, meta = self.config.category, [f"meta_{self.config.category}.json.gz"]
        official = ({"reviews": ([f"reviews_{c}_5.json.gz"], meta), "ratings": ([f"ratings_{c}.csv"], meta)}
                    if self.config.release == "2014" else
                    {"reviews": ([f"{c}_5.json.gz"], meta), "ratings": ([f"{c}.csv"], meta)})
        derived = {"tsv": ([f"{c.lower()}_5core_interactions.tsv"], ["item_titles.json"]),
                   "s3rec": ([f"{c}.txt", "datamaps.json"], ["item_titles.json"])}
        return {**official, **derived}

    def _detect(self, directory: Path) -> tuple[str, list[Path], list[Path]] | None:
        for name, (required, optional) in self.layouts().items():
            if self.config.format not in ("auto", name):
                continue
            found = [_find(directory, f) for f in required]
            if all(found):
                return name, found, [p for p in (_find(directory, f) for f in optional) if p]
        return None

    def locate(self, cache_dir: Path) -> tuple[str, list[Path], list[Path]]:
        """The format and the files to read; downloads the official 5-core files into
        ``<cache_dir>/datasets`` when ``root`` is unset."""
        cfg = self.config
        if cfg.root is not None:
            root = Path(cfg.root).expanduser()
            found = self._detect(root)
            if found is None:
                raise MissingDataError(self._unknown_category_hint() + self._help(root))
            return found
        directory = Path(cache_dir).expanduser() / "datasets" / f"amazon-{cfg.release}"
        found = self._detect(directory)
        if found is None:
            hint = self._unknown_category_hint()
            if hint:
                raise MissingDataError(hint + self._help(directory))
            for url, checksum in self._remotes():
                if not (directory / url.rsplit("/", 1)[-1]).is_file():
                    fetch(url, directory, self._help(directory), checksum=checksum, progress=cfg.progress)
            found = self._detect(directory)
        if found is None:
            raise MissingDataError(self._help(directory))
        return found

    def _remotes(self) -> list[tuple[str, str | None]]:
        """``(url, checksum)`` of the official 5-core reviews and the metadata."""
        c, cfg = self.config.category, self.config
        override = cfg.url.rstrip("/") if cfg.url else None
        if cfg.release == "2014":
            base = override or f"{UCSD}/amazon/productGraph/categoryFiles"
            urls = [f"{base}/reviews_{c}_5.json.gz", f"{base}/meta_{c}.json.gz"]
        else:
            urls = [f"{override or UCSD + '/amazon_v2/categoryFilesSmall'}/{c}_5.json.gz",
                    f"{override or UCSD + '/amazon_v2/metaFiles2'}/meta_{c}.json.gz"]
        return [(u, cfg.checksums.get(u.rsplit("/", 1)[-1])) for u in urls]

    def _help(self, directory: Path) -> str:
        layouts = {name: req + [f"optional {o}" for o in opt] for name, (req, opt) in self.layouts().items()}
        return missing_files_message(f"Amazon {self.config.release} {self.config.category}", directory,
                                     layouts, [url for url, _ in self._remotes()])

    def _unknown_category_hint(self) -> str:
        known = CATEGORIES[self.config.release]
        if self.config.category in known:
            return ""
        close = difflib.get_close_matches(self.config.category, known, n=3, cutoff=0.5)
        return (f"Amazon category {self.config.category!r} is not a {self.config.release} category"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + f"; {self.config.release} categories: {', '.join(known)}. ")

    # -- loading --------------------------------------------------------------------------
    def load(self, context: RunContext) -> RawDataset:
        fmt, required, optional = self.locate(context.cache_dir)
        cfg = self.config
        settings = {"loader": LOADER_VERSION, "category": cfg.category, "release": cfg.release,
                    "format": fmt, "on_bad_lines": cfg.on_bad_lines, "missing_title": cfg.missing_title,
                    "files": [p.name for p in required + optional]}
        name = f"amazon-{cfg.release}-{cfg.category.lower()}"
        raw, report, from_cache = cached_raw(context.cache_dir, name, required + optional, settings,
                                             lambda: self._parse(fmt, required, optional))
        self.report = {**report, "files": [str(p) for p in required + optional], "from_cache": from_cache}
        log.info("%s: %s layout in %s (%s events, %s products)", name, fmt, required[0].parent,
                 f"{report['events']:,}", f"{report['catalog_items']:,}")
        if report["skipped_lines"]:
            log.warning("%s: skipped %s malformed lines (on_bad_lines=skip)", name, report["skipped_lines"])
        if report["items_without_title"]:
            log.warning("%s: %s of %s products have no title; shown as %r", name,
                     report["items_without_title"], report["catalog_items"], cfg.missing_title)
        return raw

    def _parse(self, fmt: str, required: list[Path], optional: list[Path]) -> tuple[RawDataset, dict]:
        cfg, bad = self.config, BadLines(self.config.on_bad_lines)
        if fmt == "reviews":
            users, items, times = formats.read_reviews_json(required[0], bad, cfg.progress)
        elif fmt == "ratings":
            users, items, times = formats.read_ratings_csv(required[0], cfg.release, bad)
        elif fmt == "tsv":
            users, items, times = formats.read_interactions_tsv(required[0], bad)
        else:
            users, items, times = formats.read_s3rec(required[0], required[1], bad)
        asins = list(dict.fromkeys(items.tolist()))
        text: dict[str, formats.ItemText] = {}
        for path in optional:
            text = (formats.read_titles_json(path) if path.name == "item_titles.json"
                    else formats.read_meta(path, set(asins), bad, cfg.progress))
        catalog = _catalog(asins, text, cfg.missing_title)
        untitled = sum(1 for a in asins if not (a in text and text[a].title))
        raw = RawDataset(InteractionLog(users, items, times), catalog,
                         name=f"amazon-{cfg.category.lower()}")
        report = {"format": fmt, "files": [str(p) for p in required + optional],
                  "skipped_lines": bad.total, "skipped_by_file": dict(bad.skipped),
                  "examples": bad.examples, "events": len(users), "catalog_items": len(asins),
                  "items_without_title": untitled}
        return raw, report


def _find(directory: Path, name: str) -> Path | None:
    """``name`` in ``directory``, also accepting it gunzipped (``x.json`` for ``x.json.gz``)."""
    for candidate in (name, name.removesuffix(".gz")):
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def _catalog(asins: list[str], text: dict[str, formats.ItemText], missing_title: str) -> ItemCatalog:
    empty = formats.ItemText()
    info = [text.get(a, empty) for a in asins]
    return ItemCatalog(
        ids=asins,
        titles=[t.title or missing_title for t in info],
        attributes={"brand": [[t.brand] if t.brand else [] for t in info],
                    "categories": [list(t.categories) for t in info]},
        domain="products",
        show_id=True,
    )

