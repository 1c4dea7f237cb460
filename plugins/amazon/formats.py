"""Readers for the Amazon review files: official 2014/2018 releases and two widely used derived layouts.

Each reader returns plain columns (raw reviewer ids, ASINs, optional unix times) or a
``{asin: ItemText}`` map; :mod:`palr.plugins.amazon.dataset` picks the readers for the files present.
"""

from __future__ import annotations

import ast
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from palr_core import DataError
from palr_core.kit.files import open_binary, read_text
from palr_core.kit.tables import BadLines, read_delimited


@dataclass
class ItemText:
    """What the catalogue shows for one product."""

    title: str = ""
    brand: str = ""
    categories: list[str] = field(default_factory=list)


def clean_title(text: object) -> str:
    """HTML entities unescaped (the raw titles carry ``&amp;``), whitespace (incl. tabs/newlines) collapsed."""
    return " ".join(html.unescape(str(text or "")).split())


def _lines(path: Path, progress: bool):
    """(line number, decoded line) for a (gzipped) text file, with a progress bar on large files."""
    from tqdm.auto import tqdm

    with open_binary(path) as f:
        for lineno, raw in enumerate(tqdm(f, desc=f"reading {path.name}", unit=" lines",
                                          disable=None if progress else True, mininterval=1.0), start=1):
            yield lineno, raw.decode("utf-8", errors="replace")


def read_reviews_json(path: Path, bad: BadLines, progress: bool = True):
    """Review JSON lines (2014 ``reviews_<C>_5.json.gz``, 2018 ``<C>_5.json.gz``): reviewerID, asin, unixReviewTime."""
    users, items, times = [], [], []
    for lineno, line in _lines(path, progress):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            user, item, when = record["reviewerID"], record["asin"], int(record["unixReviewTime"])
        except (ValueError, KeyError, TypeError) as exc:
            bad(path, lineno, f"expected a JSON object with reviewerID, asin and unixReviewTime "
                              f"({type(exc).__name__}: {exc}); got {line[:80]!r}")
            continue
        users.append(str(user))
        items.append(str(item))
        times.append(when)
    if not users and not bad.total:
        raise DataError(f"{path} is empty; expected one JSON review per line")
    return np.array(users), np.array(items), np.array(times, dtype=np.int64)


def read_ratings_csv(path: Path, release: str, bad: BadLines):
    """Ratings-only CSV without header: 2014 ``user,item,rating,time``; 2018 ``item,user,rating,time``."""
    first, second = ("user", "item") if release == "2014" else ("item", "user")
    cols = read_delimited(path, [(first, "str"), (second, "str"), ("rating", "float"), ("time", "int")],
                          ",", bad_lines=bad)
    return cols["user"], cols["item"], cols["time"]


def read_interactions_tsv(path: Path, bad: BadLines):
    """Derived ``<category>_5core_interactions.tsv``: header ``user_id item_id timestamp`` (raw ids, day resolution)."""
    with open_binary(path) as f:
        header = f.readline().decode("utf-8", errors="replace").strip()
    if not header:
        raise DataError(f"{path} is empty; expected a header 'user_id<TAB>item_id<TAB>timestamp' and rows")
    if header.split("\t") != ["user_id", "item_id", "timestamp"]:
        raise DataError(f"{path}, line 1: expected the header 'user_id<TAB>item_id<TAB>timestamp', "
                        f"got {header[:80]!r}")
    cols = read_delimited(path, [("user", "str"), ("item", "str"), ("time", "int")], "\t",
                          header=True, bad_lines=bad)
    return cols["user"], cols["item"], cols["time"]


def read_s3rec(sequences: Path, datamaps: Path, bad: BadLines):
    """Derived S3-Rec ``<Category>.txt`` (``user item item ...``, time order) mapped to raw ids by P5's ``datamaps.json``."""
    maps = _read_json(datamaps)
    try:
        id2user, id2item = maps["id2user"], maps["id2item"]
    except (KeyError, TypeError):
        raise DataError(f"{datamaps}: expected a JSON object with 'id2user' and 'id2item' maps") from None
    users, items = [], []
    text = read_text(sequences)
    if not text.strip():
        raise DataError(f"{sequences} is empty; expected lines 'user_id item_id item_id ...'")
    for lineno, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        unknown = [t for t in tokens[1:] if t not in id2item]
        if len(tokens) < 2 or tokens[0] not in id2user or unknown:
            bad(sequences, lineno, "expected 'user_id item_id ...' with ids known to "
                                   f"{datamaps.name} (unknown: {(unknown or tokens[:1])[:3]})")
            continue
        users += [id2user[tokens[0]]] * (len(tokens) - 1)
        items += [id2item[t] for t in tokens[1:]]
    return np.array(users), np.array(items), None


def read_titles_json(path: Path) -> dict[str, ItemText]:
    """Derived ``item_titles.json``: one JSON object ``{ASIN: title}``."""
    titles = _read_json(path)
    if not isinstance(titles, dict):
        raise DataError(f"{path}: expected one JSON object mapping ASIN to title")
    return {str(asin): ItemText(title=clean_title(title)) for asin, title in titles.items()}


_ASIN = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")


def read_meta(path: Path, wanted: set[str], bad: BadLines, progress: bool = True) -> dict[str, ItemText]:
    """``meta_<C>.json.gz``: 2014 lines are Python dict literals (parsed with ``ast.literal_eval``,
    never ``eval``), 2018 lines are JSON. Only products in ``wanted`` are parsed (the rest are
    skipped by a regex on the ASIN), which keeps a 260k-line file fast."""
    out: dict[str, ItemText] = {}
    for lineno, line in _lines(path, progress):
        match = _ASIN.search(line)
        if match is None:
            if line.strip():
                bad(path, lineno, f"expected a product record with an 'asin' field, got {line[:80]!r}")
            continue
        if match.group(1) not in wanted:
            continue
        record = _parse_record(line)
        if not isinstance(record, dict):
            bad(path, lineno, f"expected a JSON object or Python dict literal, got {line[:80]!r}")
            continue
        out[match.group(1)] = ItemText(title=clean_title(record.get("title")),
                                       brand=clean_title(record.get("brand")),
                                       categories=_categories(record))
    return out


def _parse_record(line: str) -> object:
    try:
        return json.loads(line)
    except ValueError:
        pass
    try:
        return ast.literal_eval(line.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _categories(record: dict) -> list[str]:
    """2014 ``categories`` is a list of category paths, 2018 ``category`` a flat list; unique, in order."""
    raw = record.get("categories", record.get("category", [])) or []
    flat = [c for path in raw for c in (path if isinstance(path, list) else [path])]
    return list(dict.fromkeys(clean_title(c) for c in flat if clean_title(c)))


def _read_json(path: Path) -> object:
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path} is empty; expected a JSON object")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
