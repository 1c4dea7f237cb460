"""A store of trained stages, keyed by what determines them, so that sweeps never train one thing twice.

A stage (today: the retriever's training) is keyed by the sha256 of a canonical JSON document of
everything its result depends on: the component's :meth:`~palr_core.components.Storable.stage_key`
(for palr's trained retrievers: the model, its settings, the training data, the seed and the
trainer settings that change results) plus palr's store format. Options that cannot change a
trained stage are left out where they are declared (:attr:`palr_core.config.PalrConfig.OUTSIDE_STAGE_KEYS`,
:attr:`palr_core.config.TrainerConfig.OBSERVATION`, ``RetrieverConfig.OUTSIDE_STAGE_KEY``), so a
sweep over evaluation users, candidates or the ranker reads the retriever its first job trained.

An entry is the folder ``<store>/<kind>/<key>/`` holding what the component's ``save(folder)``
wrote, and ``manifest.json`` (each file's size and sha256, the key's document, how long the
training took, when it was stored). It is written into a temporary folder and renamed into place,
so a killed trainer leaves no entry (its temporary folder is removed by the next process that
looks); it is checked against its manifest before every use, so a damaged entry is refused in one
line naming it and trained again. One lock file per key (``fcntl.flock``) makes parallel jobs that
need the same stage train it once: the others wait and then read it. palr's own entries hold
tensors read with ``torch.load(weights_only=True)`` and JSON: nothing in the store runs code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .cache import MANIFEST, StaleEntry, _discard, _sha256, check_entry
from .components import Persistent, RunContext, Storable, TrainingData
from .config import writable_folder

__all__ = ["StageStore", "StoredEntry", "stage_digest", "fit_stage", "open_store", "default_store_dir",
           "store_command"]

log = logging.getLogger("palr")

#: bump when the layout of an entry changes: older entries are then never read
FORMAT = 1
#: the store's folder under the cache folder when ``store.dir`` is unset
SUBFOLDER = "stages"


def stage_digest(document: dict) -> str:
    """The sha256 of ``document`` (with the store's format) as canonical JSON: the stage's key."""
    text = json.dumps({"store_format": FORMAT, **document}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StoredEntry:
    """One entry as ``palr store list`` shows it."""

    kind: str
    key: str
    path: Path
    bytes: int
    seconds: float | None
    created: float | None
    what: str


class StageStore:
    """The entries under ``root``: ``<root>/<kind>/<key>/``, a lock file ``<kind>/<key>.lock`` each."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold the key's lock: a second process asking for it waits until the first releases it
        (or dies: the kernel releases a dead process's locks)."""
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{key}.lock", "a+") as handle:
            try:
                import fcntl
            except ImportError:  # no advisory locks on this platform: parallel jobs may train twice
                yield
                return
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("store: another job is training %s %s; waiting for it", kind, key[:12])
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def lookup(self, kind: str, key: str) -> dict | None:
        """The manifest of a sound entry for ``key``, or ``None``. A damaged entry is refused in one
        log line naming it and what is wrong, and removed (the caller trains the stage again).
        Call it holding the key's :meth:`lock`: temporary folders of this key are then a killed
        writer's (a live one would hold the lock), on this machine or another, and are removed."""
        self._remove_abandoned(kind, key)
        entry = self.entry(kind, key)
        if not os.path.lexists(entry):
            return None
        try:
            check_entry(entry, key)
            return json.loads((entry / MANIFEST).read_text())
        except StaleEntry as exc:
            log.warning("store: refused %s: %s; training it again", entry, exc)
            _discard(entry)
            return None

    def put(self, kind: str, key: str, document: dict, save, seconds: float) -> Path | None:
        """Write an entry: ``save(folder)`` fills a temporary folder, the manifest records each
        file's size and sha256, and one rename makes it visible. A store that cannot be written
        costs the storing, not the run (one warning line)."""
        entry = self.entry(kind, key)
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.{os.getpid()}.", suffix=".tmp", dir=entry.parent))
        except OSError as exc:
            log.warning("store: %s %s not stored: cannot write %s (%s)", kind, key[:12], entry.parent,
                        exc.strerror or exc)
            return None
        try:
            save(tmp)
            files = {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {"key": key, "kind": kind, "files": files, "inputs": document,
                        "seconds": round(seconds, 3), "created": time.time()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
            if os.path.lexists(entry):
                _discard(entry)  # under the key's lock: only a damaged or foreign entry gets here
            os.replace(tmp, entry)  # atomic: readers see no entry or a whole one
            return entry
        except OSError as exc:
            log.warning("store: %s %s not stored: cannot write %s (%s)", kind, key[:12], entry,
                        exc.strerror or exc)
            return None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def entries(self) -> list[StoredEntry]:
        """Every entry with a readable manifest, oldest first."""
        found = []
        for manifest_file in self.root.glob(f"*/*/{MANIFEST}"):
            entry = manifest_file.parent
            if entry.name.startswith("."):
                continue
            try:
                manifest = json.loads(manifest_file.read_text())
            except (OSError, ValueError):
                manifest = {}
            inputs = manifest.get("inputs") if isinstance(manifest.get("inputs"), dict) else {}
            size = sum(p.stat().st_size for p in entry.rglob("*") if p.is_file())
            found.append(StoredEntry(entry.parent.name, entry.name, entry, size, manifest.get("seconds"),
                                     manifest.get("created"), str(inputs.get("model", inputs.get("what", "")))))
        return sorted(found, key=lambda e: (e.created or 0, e.key))

    def remove(self, key_prefix: str) -> list[StoredEntry]:
        """Remove the entries whose key starts with ``key_prefix`` (at least 6 characters)."""
        if len(key_prefix) < 6:
            raise ValueError(f"store rm {key_prefix}: give at least 6 characters of a key (palr store list)")
        chosen = [e for e in self.entries() if e.key.startswith(key_prefix)]
        for e in chosen:
            _discard(e.path)
        return chosen

    def prune(self, older_than_days: float) -> list[StoredEntry]:
        """Remove the entries stored more than ``older_than_days`` days ago."""
        cutoff = time.time() - older_than_days * 86400
        chosen = [e for e in self.entries() if (e.created or 0) < cutoff]
        for e in chosen:
            _discard(e.path)
        return chosen

    def _remove_abandoned(self, kind: str, key: str) -> None:
        """Delete this key's temporary folders, left by a killed writer (the caller holds the key's
        lock, so no writer of it is alive; a process id says nothing across cluster nodes)."""
        for tmp in (self.root / kind).glob(f".{key}.*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)


def default_store_dir(store_dir: str | os.PathLike | None, cache_dir: Path) -> Path:
    """``store.dir`` if set, else ``<cache_dir>/stages`` (so ``PALR_CACHE_DIR`` moves both)."""
    return Path(store_dir).expanduser() if store_dir else Path(cache_dir) / SUBFOLDER


def open_store(settings, cache_dir: Path) -> StageStore | None:
    """The run's store from the ``store`` config section, ``None`` when ``store.enabled=false``.

    A folder that is a file, or cannot be created or written, is one :class:`ValueError` line
    naming ``store.dir``, before any stage is trained."""
    if not settings.enabled:
        return None
    root = default_store_dir(settings.dir, cache_dir)
    setting = f"store.dir={settings.dir}" if settings.dir else f"the store's default folder {root} (store.dir unset)"
    expected = "expected a folder palr can write (or create) for trained stages; or store.enabled=false"
    return StageStore(writable_folder(root, setting, expected, name_itself=True))


def fit_stage(component, kind: str, data: TrainingData, context: RunContext, store: StageStore | None,
              upstream: dict | None = None) -> str | None:
    """``component.fit(data, context)``, or its trained state read from ``store`` when the store
    holds its key; a fresh fit is stored. Components that are not :class:`Storable`, a store that
    is off, and a run folder that already holds the training (a resumed run, ``load_from``,
    ``ranker.adapter``) fit as before.

    :param upstream: what the stage's inputs come from (the ranker's: the retriever's key), part of its key.
    :returns: the stage's key, or ``None`` when it has none (not Storable, or the store is off).
    """
    if store is None or not isinstance(component, Storable):
        component.fit(data, context)
        return None
    document = {"kind": kind, **component.stage_key(data, context), **({"upstream": upstream} if upstream else {})}
    key = stage_digest(document)
    if isinstance(component, Persistent) and component.is_trained(context):
        component.fit(data, context)
        return key
    with store.lock(kind, key):
        manifest = store.lookup(kind, key)
        if manifest is not None:
            entry = store.entry(kind, key)
            component.restore(entry, context)
            log.info("%s: read from the store, key %s, entry %s (its training took %.1f s; nothing trained)",
                     kind, key, entry, manifest.get("seconds") or 0.0)
            return key
        started = time.perf_counter()
        component.fit(data, context)
        seconds = time.perf_counter() - started
        if isinstance(component, Persistent) and not component.is_trained(context):
            log.info("%s: not stored: its training did not finish (interrupted or a dev run)", kind)
            return key
        if store.put(kind, key, document, component.save, seconds) is not None:
            log.info("%s: stored in the store, key %s (training took %.1f s)", kind, key, seconds)
        return key


def store_command(action: str, store_dir: str | None, key: str | None = None, older_than: float | None = None) -> int:
    """``palr store list | du | rm KEY | prune --older-than DAYS`` (``store_dir``: ``--dir``, else
    the default store under the cache folder); prints what it found or removed, returns the exit status."""
    from .config import default_cache_dir

    try:
        store = StageStore(default_store_dir(store_dir, default_cache_dir(None) if not store_dir else Path()))
        if action == "list":
            found = store.entries()
            for e in found:
                created = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.created)) if e.created else "?"
                took = f"{e.seconds:.1f} s" if e.seconds is not None else "?"
                print(f"{e.kind:9} {e.key}  {_size(e.bytes):>9}  trained in {took:>9}  stored {created}  {e.what}")
            print(f"{len(found)} entries in {store.root}")
        elif action == "du":
            found = store.entries()
            print(f"{_size(sum(e.bytes for e in found))} in {len(found)} entries in {store.root}")
        else:
            removed = store.remove(key) if action == "rm" else store.prune(older_than)
            if action == "rm" and not removed:
                raise ValueError(f"store rm {key}: no entry's key starts with it in {store.root} (palr store list)")
            for e in removed:
                print(f"removed {e.kind} {e.key} ({_size(e.bytes)})")
            print(f"{len(removed)} entries removed from {store.root}")
    except ValueError as exc:
        print(f"palr: {exc}", file=sys.stderr)
        return 2
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
