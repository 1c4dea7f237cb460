"""Amazon product reviews (McAuley, UCSD) as a palr Dataset: 2014 and 2018 releases, any category.

Every review (or rating) is one implicit interaction; items are products shown in prompts as
``"ASIN (title)"`` as in the PALR paper, with brand and categories as attributes. Files are read
from ``root`` or downloaded from the UCSD mirror into ``cache_dir``; the parsed result is cached,
keyed by the files' sha256.

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
from dataclasses import dataclass, field
from pathlib import Path

from palr_core import DataError, InteractionLog, ItemCatalog, RawDataset
from palr_core.datafiles import (
    BadLines,
    MissingDataError,
    Remote,
    cache_key,
    cached,
    fetch,
    missing_files_message,
)

from . import formats

log = logging.getLogger("palr")
LOADER_VERSION = 1
UCSD = "https://datarepo.eng.ucsd.edu/mcauley_group/data"
CATEGORIES = {
    "2014": ["Amazon_Instant_Video", "Apps_for_Android", "Automotive", "Baby", "Beauty", "Books",
             "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry",
             "Digital_Music", "Electronics", "Grocery_and_Gourmet_Food", "Health_and_Personal_Care",
             "Home_and_Kitchen", "Kindle_Store", "Movies_and_TV", "Musical_Instruments",
             "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies", "Sports_and_Outdoors",
             "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games"],
    "2018": ["AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive",
             "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry",
             "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food",
             "Home_and_Kitchen", "Industrial_and_Scientific", "Kindle_Store", "Luxury_Beauty",
             "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments", "Office_Products",
             "Patio_Lawn_and_Garden", "Pet_Supplies", "Prime_Pantry", "Software",
             "Sports_and_Outdoors", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games"],
}
FORMATS = ("auto", "reviews", "ratings", "tsv", "s3rec")


@dataclass
class AmazonConfig:
    """Which Amazon category and release, where the files are and how to read them.

    :param category: e.g. ``Beauty`` (2014) or ``All_Beauty`` (2018), as in the file names.
    :param release: ``"2014"`` or ``"2018"``.
    :param root: directory holding the files; ``None`` downloads into ``cache_dir``.
    :param cache_dir: downloads and the parsed-data cache.
    :param format: ``auto``, ``reviews``, ``ratings``, ``tsv`` or ``s3rec`` (see the module doc).
    :param on_bad_lines: ``error`` (stop at the first malformed line) or ``skip`` (skip and count).
    :param missing_title: title shown for a product without one (counted in ``report``).
    :param url: base URL the files are downloaded from (default: the UCSD mirror of ``release``).
    :param checksums: ``{file name: "sha256:<hex>"}`` to verify downloads (none are published).
    :param progress: progress bars while downloading and reading large files.
    """

    category: str = "Beauty"
    release: str = "2014"
    root: str | None = None
    cache_dir: str = "~/.cache/palr/datasets"
    format: str = "auto"
    on_bad_lines: str = "error"
    missing_title: str = "unknown title"
    url: str | None = None
    checksums: dict = field(default_factory=dict)
    progress: bool = True


class AmazonReviews:
    """Dataset plugin: ``palr-run dataset=amazon-beauty dataset.root=<dir>`` (``dataset.category=...``)."""

    def __init__(self, **params) -> None:
        self.config = AmazonConfig(**params)
        cfg = self.config
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

    def locate(self) -> tuple[str, list[Path], list[Path]]:
        """The format and the files to read; downloads the official 5-core files when ``root`` is unset."""
        cfg = self.config
        if cfg.root is not None:
            root = Path(cfg.root).expanduser()
            found = self._detect(root)
            if found is None:
                raise MissingDataError(self._unknown_category_hint() + self._help(root))
            return found
        directory = Path(cfg.cache_dir).expanduser() / f"amazon-{cfg.release}"
        found = self._detect(directory)
        if found is None:
            hint = self._unknown_category_hint()
            if hint:
                raise MissingDataError(hint + self._help(directory))
            fetch(self._remotes(), directory, self._help(directory), progress=cfg.progress)
            found = self._detect(directory)
        if found is None:
            raise MissingDataError(self._help(directory))
        return found

    def _remotes(self) -> list[Remote]:
        c, cfg = self.config.category, self.config
        override = cfg.url.rstrip("/") if cfg.url else None
        if cfg.release == "2014":
            base = override or f"{UCSD}/amazon/productGraph/categoryFiles"
            urls = [f"{base}/reviews_{c}_5.json.gz", f"{base}/meta_{c}.json.gz"]
        else:
            urls = [f"{override or UCSD + '/amazon_v2/categoryFilesSmall'}/{c}_5.json.gz",
                    f"{override or UCSD + '/amazon_v2/metaFiles2'}/meta_{c}.json.gz"]
        return [Remote(u, cfg.checksums.get(u.rsplit("/", 1)[-1])) for u in urls]

    def _help(self, directory: Path) -> str:
        layouts = {name: req + [f"optional {o}" for o in opt] for name, (req, opt) in self.layouts().items()}
        return missing_files_message(f"Amazon {self.config.release} {self.config.category}", directory,
                                     layouts, [r.url for r in self._remotes()])

    def _unknown_category_hint(self) -> str:
        known = CATEGORIES[self.config.release]
        if self.config.category in known:
            return ""
        close = difflib.get_close_matches(self.config.category, known, n=3, cutoff=0.5)
        return (f"Amazon category {self.config.category!r} is not a {self.config.release} category"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + f"; {self.config.release} categories: {', '.join(known)}. ")

    # -- loading --------------------------------------------------------------------------
    def load(self) -> RawDataset:
        fmt, required, optional = self.locate()
        cfg = self.config
        settings = {"loader": LOADER_VERSION, "category": cfg.category, "release": cfg.release,
                    "format": fmt, "on_bad_lines": cfg.on_bad_lines, "missing_title": cfg.missing_title,
                    "files": [p.name for p in required + optional]}
        built = []

        def build():
            built.append(True)
            return self._parse(fmt, required, optional)

        name = f"amazon-{cfg.release}-{cfg.category.lower()}"
        raw, report = cached(cfg.cache_dir, name, required + optional, settings, build)
        self.report = {**report, "files": [str(p) for p in required + optional], "from_cache": not built,
                       "cache_key": cache_key(cfg.cache_dir, name, required + optional, settings)}
        log.info("%s: %s layout in %s (%s events, %s products)", name, fmt, required[0].parent,
                 f"{report['events']:,}", f"{report['catalog_items']:,}")
        if report["skipped_lines"]:
            log.warning("%s: skipped %s malformed lines (on_bad_lines=skip)", name, report["skipped_lines"])
        if report["items_without_title"]:
            log.info("%s: %s of %s products have no title; shown as %r", name,
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

