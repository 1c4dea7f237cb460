"""A cache of computed data on disk, in formats that cannot run code when read back.

An entry is a folder ``<cache_dir>/<kind>/<name>-<key>/`` whose files the caller writes and
reads (palr's own entries are ``.npz`` read with ``allow_pickle=False``, and JSON). ``key`` is the
sha256 of a JSON document of everything the result depends on, so a changed input or setting
never reuses an old result. An entry is written into a temporary folder and renamed into place
when complete, with a ``manifest.json`` that lists its files and sizes: a killed write leaves no
entry (and its temporary folder is removed by the next process that looks), and a truncated or
unreadable entry is rebuilt with a warning, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["cached", "cache_key"]

log = logging.getLogger("palr")
T = TypeVar("T")
#: bump when palr's own entry layout changes
FORMAT = 2


def cache_key(key: dict) -> str:
    """The sha256 of ``key`` as canonical JSON (with the cache format)."""
    document = json.dumps({"format": FORMAT, **key}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


def cached(cache_dir: str | os.PathLike, kind: str, name: str, key: dict, build: Callable[[], T],
           save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
    """``load(entry)`` when an entry for ``key`` exists, else ``build()``, saved with ``save(value, folder)``.

    :param kind: the cache's subfolder (``parsed``, ``preprocessed``...).
    :param name: a readable prefix for the entry (``movielens-ml-1m``).
    :param key: JSON-serialisable description of every input and setting the result depends on.
    """
    root = Path(cache_dir).expanduser() / kind
    digest = cache_key(key)
    entry = root / f"{name}-{digest[:20]}"
    _remove_abandoned(root, entry.name)
    if (entry / "manifest.json").is_file():
        try:
            _check_manifest(entry, digest)
            value = load(entry)
            log.info("%s: read from cache %s", name, entry)
            return value
        except Exception as exc:  # any unreadable entry is rebuilt, never trusted
            warnings.warn(f"cache entry {entry} is unreadable ({type(exc).__name__}: {exc}); rebuilding it",
                          stacklevel=2)
            shutil.rmtree(entry, ignore_errors=True)
    value = build()
    _write_entry(root, entry, digest, key, value, save)
    return value


def _write_entry(root: Path, entry: Path, digest: str, key: dict, value, save) -> None:
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.{os.getpid()}.", suffix=".tmp", dir=root))
    try:
        save(value, tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        (tmp / "manifest.json").write_text(json.dumps({"key": digest, "files": files, "inputs": key},
                                                      indent=1, default=str))
        try:
            tmp.rename(entry)
        except OSError:  # another process wrote the same entry meanwhile: keep theirs
            if not (entry / "manifest.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_manifest(entry: Path, digest: str) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    if manifest.get("key") != digest:
        raise ValueError("its manifest belongs to other inputs")
    for file, size in manifest["files"].items():
        if (entry / file).stat().st_size != size:
            raise ValueError(f"{file} has {(entry / file).stat().st_size} bytes, the manifest says {size}")


def _remove_abandoned(root: Path, entry_name: str) -> None:
    """Delete temporary folders of this entry left by processes that no longer run (killed writes)."""
    if not root.is_dir():
        return
    for tmp in root.glob(f".{entry_name}.*.tmp"):
        pid = tmp.name[len(entry_name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to someone else
        return True
    return True
