"""A cache of computed data on disk, checked by content, in formats that cannot run code when read back.

An entry is a folder ``<cache_dir>/<kind>/<name>-<key>/`` whose files the caller writes and
reads (palr's own entries are ``.npz`` read with ``allow_pickle=False``, and JSON). ``key`` is the
sha256 of a JSON document of everything the result depends on, so a changed input or setting
never reuses an old result. An entry is written into a temporary folder and renamed into place
when complete, with a ``manifest.json`` that records the size and sha256 of each of its files:
a killed write leaves no entry (its temporary folder is removed by the next process that looks),
two processes writing one entry leave one whole entry, and an entry that is stale in any way
(no or a damaged manifest, a file missing, truncated or edited even to the same size, a file
``load`` cannot read) is rebuilt with one log line saying why, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

__all__ = ["cached", "cache_key"]

log = logging.getLogger("palr")
T = TypeVar("T")
#: bump when palr's own entry layout changes
FORMAT = 3
MANIFEST = "manifest.json"


class StaleEntry(Exception):
    """A cache entry that must not be used; the message says why, in a few words."""


def cache_key(key: dict) -> str:
    """The sha256 of ``key`` as canonical JSON (with the cache format)."""
    document = json.dumps({"format": FORMAT, **key}, sort_keys=True, default=str)
    return hashlib.sha256(document.encode()).hexdigest()


def cached(cache_dir: str | os.PathLike, kind: str, name: str, key: dict, build: Callable[[], T],
           save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
    """``load(entry)`` when a sound entry for ``key`` exists, else ``build()``, saved with ``save(value, folder)``.

    A folder ``cache_dir`` cannot be written into costs the caching, not the result: ``build()``'s
    value is returned with a warning.

    :param kind: the cache's subfolder (``parsed``, ``preprocessed``...).
    :param name: a readable prefix for the entry (``movielens-ml-1m``).
    :param key: JSON-serialisable description of every input and setting the result depends on.
    """
    root = Path(cache_dir).expanduser() / kind
    digest = cache_key(key)
    entry = root / f"{name}-{digest[:20]}"
    _remove_abandoned(root, entry.name)
    if os.path.lexists(entry):
        try:
            check_entry(entry, digest)
            value = load(entry)
            log.info("%s: read from cache %s", name, entry)
            return value
        except Exception as exc:  # any unsound entry is rebuilt, never trusted
            reason = str(exc) if isinstance(exc, StaleEntry) else f"{type(exc).__name__}: {exc}"
            log.warning("cache entry %s is stale (%s); rebuilding it", entry, " ".join(reason.split()))
            _discard(entry)
    value = build()
    try:
        _write_entry(root, entry, digest, key, value, save)
    except OSError as exc:
        log.warning("%s: not cached: cannot write %s (%s)", name, entry, exc.strerror or exc)
    return value


def check_entry(entry: Path, digest: str) -> None:
    """Raise :class:`StaleEntry` unless ``entry`` is a folder whose manifest is for ``digest`` and
    whose every listed file has the recorded size and sha256."""
    if not entry.is_dir():
        raise StaleEntry("it is not a folder")
    try:
        text = (entry / MANIFEST).read_text()
    except FileNotFoundError:
        raise StaleEntry(f"it has no {MANIFEST}: an interrupted write, or files removed by hand") from None
    try:
        manifest = json.loads(text)
    except ValueError:
        raise StaleEntry(f"its {MANIFEST} is not valid JSON (truncated?)") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(_is_record(name, record) for name, record in files.items()):
        raise StaleEntry(f"its {MANIFEST} does not list files with their size and sha256")
    if manifest.get("key") != digest:
        raise StaleEntry(f"its {MANIFEST} belongs to other inputs")
    for file, record in files.items():
        path = entry / file
        if not path.is_file():
            raise StaleEntry(f"{file} is missing")
        size = path.stat().st_size
        if size != record["bytes"]:
            raise StaleEntry(f"{file} has {size} bytes, its manifest records {record['bytes']}")
        if _sha256(path) != record["sha256"]:
            raise StaleEntry(f"{file} does not have the sha256 its manifest records (edited after it was written)")


def _is_record(name: object, record: object) -> bool:
    """A manifest line: a relative path inside the entry with an int size and a sha256 string."""
    if not isinstance(name, str) or not name or name == MANIFEST:
        return False
    parts = PurePosixPath(name).parts
    return (not PurePosixPath(name).is_absolute() and ".." not in parts and isinstance(record, dict)
            and isinstance(record.get("bytes"), int) and isinstance(record.get("sha256"), str))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _write_entry(root: Path, entry: Path, digest: str, key: dict, value, save) -> None:
    """Write into a temporary folder, record every file's size and sha256, rename it into place."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.{os.getpid()}.", suffix=".tmp", dir=root))
    try:
        save(value, tmp)
        files = {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"key": digest, "files": files, "inputs": key},
                                               indent=1, default=str))
        for attempt in range(2):
            try:
                tmp.rename(entry)  # atomic: readers see no entry or a whole one
                return
            except OSError:
                try:  # another process wrote the same entry meanwhile: keep theirs if it is sound
                    check_entry(entry, digest)
                    return
                except StaleEntry:
                    if attempt:
                        raise
                    _discard(entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _discard(entry: Path) -> None:
    """Move a stale entry out of the way in one step (a reader never sees it half deleted), then delete it."""
    trash = entry.with_name(f".{entry.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        os.rename(entry, trash)
    except FileNotFoundError:  # another process discarded it first
        return
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)


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
