"""What Dataset plugins share beyond reading files: a cache of the parsed result.

Parsing a large log takes seconds to minutes; :func:`cached_raw` keeps the parsed
:class:`~palr_core.RawDataset` under ``<cache_dir>/parsed/``, keyed by the sha256 of every source
file (:class:`~palr_core.kit.files.FileHashes`) and the parse settings, in formats that cannot run
code when read back (:func:`palr_core.data.save_raw`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..cache import cached
from ..data import RawDataset, load_raw, save_raw
from .files import FileHashes

__all__ = ["cached_raw"]


def cached_raw(cache_dir: str | os.PathLike, name: str, files: Sequence[str | os.PathLike], settings: dict,
               build: Callable[[], tuple[RawDataset, dict]]) -> tuple[RawDataset, dict, bool]:
    """``build()``'s ``(raw dataset, report)``, from the cache while ``files`` and ``settings`` are unchanged.

    :param name: a readable prefix for the cache entry (``movielens-ml-1m``).
    :param settings: JSON-serialisable parse settings that change the result (include a loader
        version and bump it when the parser changes).
    :param build: parses the files; its report (a JSON-serialisable dict) is cached with the data.
    :returns: ``(raw, report, from_cache)``.
    """
    hashes = FileHashes(cache_dir)
    key = {"name": name, "settings": settings, "files": {Path(f).name: hashes.sha256(f) for f in files}}
    built: list[bool] = []

    def make() -> tuple[RawDataset, dict]:
        built.append(True)
        return build()

    def save(value: tuple[RawDataset, dict], folder: Path) -> None:
        save_raw(value[0], folder)
        (folder / "report.json").write_text(json.dumps(value[1], default=str))

    def load(folder: Path) -> tuple[RawDataset, dict]:
        return load_raw(folder), json.loads((folder / "report.json").read_text())

    raw, report = cached(cache_dir, "parsed", name, key, make, save, load)
    return raw, report, not built
