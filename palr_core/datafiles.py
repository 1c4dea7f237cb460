"""Getting dataset files onto disk and reading them fast: download, checksum, extract, cache, parse.

A public helper module for Dataset plugins (built-in or third-party); nothing here knows a
concrete dataset.

- getting files: :func:`fetch` / :func:`download` (tqdm bar, ``sha256:``/``md5:`` checksum, moved
  into place only when complete), :func:`extract` (no member escapes the target), and
  :class:`MissingDataError`, whose message names the expected files, the folder and the URL;
- :func:`cached`: a parsed result keyed by the source files' sha256 (:class:`FileHashes`
  re-hashes a file only when its size or mtime changed) and the settings; corrupt: rebuilt;
- :func:`read_delimited`: separated text to numpy columns, vectorised, with bad lines reported
  by file, line number and what was expected, or skipped and counted (:class:`BadLines`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import pickle
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from .data import DataError

__all__ = [
    "MissingDataError", "ChecksumError", "BadLines", "file_sha256", "verify_checksum", "FileHashes",
    "download", "extract", "Remote", "fetch", "missing_files_message", "cached", "cache_key",
    "open_bytes",
    "read_delimited", "read_text",
]

log = logging.getLogger("palr")
T = TypeVar("T")
_CHUNK = 1 << 20
_RACY_NS = 2_000_000_000
#: bump when the pickled layout written by :func:`cached` changes
CACHE_FORMAT = 1


class MissingDataError(DataError):
    """Dataset files are absent and could not be downloaded (the message says what, where, from where)."""


class ChecksumError(DataError):
    """A downloaded or given file does not have the expected checksum."""


# -- checksums -----------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file, read in 1 MiB chunks."""
    return _digest(Path(path), "sha256")


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: str | Path, expected: str) -> None:
    """Raise :class:`ChecksumError` unless ``path`` matches ``expected``.

    :param expected: ``"sha256:<hex>"`` or ``"md5:<hex>"`` (a bare hex string means sha256).
    """
    algorithm, _, value = expected.rpartition(":")
    algorithm = algorithm.lower() or "sha256"
    if algorithm not in ("sha256", "md5"):
        raise ValueError(f"checksum {expected!r}: algorithm must be sha256 or md5")
    actual = _digest(Path(path), algorithm)
    if actual != value.lower():
        raise ChecksumError(
            f"{path}: {algorithm} is {actual}, expected {value.lower()}; the file is incomplete or "
            "not the published one: delete it and download again"
        )


class FileHashes:
    """sha256 of files, remembered in ``<cache_dir>/file_hashes.json`` by path, size and mtime.

    Hashing a 10 MB file takes tens of milliseconds; a warm start should not pay that for every
    file, yet a file replaced in place (new size or mtime) must be hashed again, and so is a file
    that was hashed less than 2 s after its last modification.
    """

    def __init__(self, cache_dir: str | Path) -> None:
        self.path = Path(cache_dir).expanduser() / "file_hashes.json"
        try:
            self._memo: dict = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._memo = {}

    def sha256(self, file: str | Path) -> str:
        """The file's sha256, re-hashed only if its size or mtime changed since last time."""
        file = Path(file).resolve()
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        entry = self._memo.get(str(file))
        if (isinstance(entry, dict) and entry.get("stamp") == stamp and entry.get("settled")
                and isinstance(entry.get("sha256"), str)):
            return entry["sha256"]
        digest = file_sha256(file)
        # a file modified within the mtime granularity of its hashing could change again without
        # a new mtime ("racy" in git's terms): such a digest is stored but never trusted later
        settled = time.time_ns() - st.st_mtime_ns > _RACY_NS
        self._memo[str(file)] = {"stamp": stamp, "sha256": digest, "settled": settled}
        _atomic_write(self.path, json.dumps(self._memo, indent=0).encode())
        return digest


# -- download and extraction ---------------------------------------------------------------
def download(url: str, dest: str | Path, checksum: str | None = None, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` with a progress bar; verify ``checksum`` before moving into place.

    :raises urllib.error.URLError: when the URL cannot be reached (callers turn this into a
        :class:`MissingDataError` that says what to download by hand).
    :raises ChecksumError: when the downloaded bytes do not match ``checksum``.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}",
                  disable=not progress) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                bar.update(len(block))
    if checksum:
        try:
            verify_checksum(partial, checksum)
        except ChecksumError:
            partial.unlink()
            raise ChecksumError(f"download of {url} does not match checksum {checksum}; try again "
                                "or check that the URL serves the published file") from None
    os.replace(partial, dest)
    return dest


def extract(archive: str | Path, dest_dir: str | Path) -> None:
    """Unpack a zip or tar archive into ``dest_dir``; members that would land outside it are refused."""
    archive, dest_dir = Path(archive), Path(dest_dir).resolve()
    dest_dir.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            _check_members(archive, dest_dir, names)
            zf.extractall(dest_dir)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            _check_members(archive, dest_dir, tf.getnames())
            # the "data" filter (Python >= 3.10.12 / 3.11.4) also refuses links and special files
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(dest_dir, **kwargs)
    else:
        raise DataError(f"{archive}: not a zip or tar archive")


def _check_members(archive: Path, dest_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        target = (dest_dir / name).resolve()
        if target != dest_dir and dest_dir not in target.parents:
            raise DataError(f"{archive}: member {name!r} would be extracted outside {dest_dir}")


@dataclass(frozen=True)
class Remote:
    """One file to download: its URL, published checksum, and whether to unpack it after download."""

    url: str
    checksum: str | None = None
    unpack: bool = False

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def fetch(remotes: Sequence[Remote], dest_dir: str | Path, help_text: str, progress: bool = True) -> None:
    """Download (and unpack) every remote into ``dest_dir``.

    :param help_text: what to do by hand (see :func:`missing_files_message`); it becomes the
        message of the :class:`MissingDataError` raised when a URL cannot be reached (offline).
    """
    dest_dir = Path(dest_dir).expanduser()
    for remote in remotes:
        target = dest_dir / remote.filename
        if not target.exists():
            try:
                download(remote.url, target, remote.checksum, progress=progress)
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise MissingDataError(f"{help_text}\n(download of {remote.url} failed: {reason})") from None
        if remote.unpack:
            extract(target, dest_dir)
            target.unlink()  # the extracted files are what is read; the archive would double the disk use


def missing_files_message(dataset: str, directory: str | Path, layouts: dict[str, Sequence[str]],
                          urls: Sequence[str], root_option: str = "dataset.root") -> str:
    """A message that says which files were expected where, and where to get them.

    :param layouts: accepted file sets by name, e.g. ``{"official": ["ratings.dat", "movies.dat"]}``.
    """
    accepted = "; or ".join(f"{name}: {', '.join(files)}" for name, files in layouts.items())
    unpack = ", unpack it," if any(u.endswith((".zip", ".tar", ".tar.gz", ".tgz")) for u in urls) else ""
    return (f"{dataset}: the data files are not in {directory}. Expected ({accepted}). "
            f"Download {' and '.join(urls)}{unpack} and set {root_option}=<the folder that holds "
            f"the files>; or leave {root_option} unset to download into the cache when online.")


# -- parsed-data cache ---------------------------------------------------------------------
def cached(cache_dir: str | Path, name: str, files: Sequence[str | Path], settings: dict,
           build: Callable[[], T]) -> T:
    """``build()``'s result, from ``<cache_dir>/parsed/`` when the inputs are unchanged.

    The key is the sha256 of the JSON of ``settings`` (plus :data:`CACHE_FORMAT`) and of every
    file's sha256 (through :class:`FileHashes`), so an edited file or a changed setting never
    reuses an old result. The payload's own sha256 is stored beside it; a truncated or corrupt
    payload is reported, rebuilt and overwritten.

    :param name: a readable prefix for the cache files (e.g. ``"ml-1m"``).
    :param settings: JSON-serialisable parse settings that change the result.
    """
    cache_dir = Path(cache_dir).expanduser()
    key, key_doc = _key(cache_dir, name, files, settings)
    payload_path = cache_dir / "parsed" / f"{name}-{key[:20]}.pkl"
    meta_path = payload_path.with_suffix(".json")
    if payload_path.exists() and meta_path.exists():
        result = _read_cached(payload_path, meta_path, key)
        if result is not None:
            log.info("%s: parsed data from cache %s", name, payload_path)
            return result[0]
    value = build()
    payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    _atomic_write(payload_path, payload)
    meta = {"key": key, "sha256": hashlib.sha256(payload).hexdigest(), **key_doc}
    _atomic_write(meta_path, json.dumps(meta, indent=2, default=str).encode())
    return value


def cache_key(cache_dir: str | Path, name: str, files: Sequence[str | Path], settings: dict) -> str:
    """The key :func:`cached` uses for these inputs: a fingerprint of the data a later stage can
    fold into its own cache key (e.g. preprocessing settings on top of the parsed data)."""
    return _key(Path(cache_dir).expanduser(), name, files, settings)[0]


def _key(cache_dir: Path, name: str, files: Sequence[str | Path], settings: dict) -> tuple[str, dict]:
    hashes = FileHashes(cache_dir)
    key_doc = {"format": CACHE_FORMAT, "name": name, "settings": settings,
               "files": {Path(f).name: hashes.sha256(f) for f in files}}
    return hashlib.sha256(json.dumps(key_doc, sort_keys=True, default=str).encode()).hexdigest(), key_doc


def _read_cached(payload_path: Path, meta_path: Path, key: str) -> tuple | None:
    try:
        meta = json.loads(meta_path.read_text())
        payload = payload_path.read_bytes()
        if meta.get("key") != key or hashlib.sha256(payload).hexdigest() != meta.get("sha256"):
            raise ValueError("checksum mismatch")
        return (pickle.loads(payload),)
    except Exception as exc:  # any unreadable cache is rebuilt, never trusted
        warnings.warn(f"parsed-data cache {payload_path} is corrupt ({exc}); rebuilding it", stacklevel=3)
        return None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# -- parsing -------------------------------------------------------------------------------
class BadLines:
    """What to do with a malformed line: ``"error"`` (raise, naming file and line) or ``"skip"`` (count).

    One instance per load; ``skipped`` maps file name to the number of lines skipped, and
    ``examples`` keeps the first few messages for the log.
    """

    def __init__(self, on_bad_lines: str = "error") -> None:
        if on_bad_lines not in ("error", "skip"):
            raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
        self.mode = on_bad_lines
        self.skipped: dict[str, int] = {}
        self.examples: list[str] = []

    def __call__(self, path: str | Path, lineno: int, problem: str) -> None:
        """Report line ``lineno`` (1-based) of ``path``: raise in ``error`` mode, else count it."""
        message = f"{path}, line {lineno}: {problem}"
        if self.mode == "error":
            raise DataError(message + " (set on_bad_lines: skip to skip such lines)")
        self.skipped[Path(path).name] = self.skipped.get(Path(path).name, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(message)

    @property
    def total(self) -> int:
        return sum(self.skipped.values())


def open_bytes(path: str | Path):
    """Open a file for binary reading, transparently gunzipping ``*.gz``."""
    path = Path(path)
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


_KINDS = {"int": np.int64, "float": np.float64, "str": None}
_SEPARATOR_NAMES = {"\t": "tab", ",": "comma", "::": "'::'", "|": "'|'", " ": "space", ";": "semicolon"}


def read_delimited(path: str | Path, columns: Sequence[tuple[str, str]], sep: str, *,
                   encoding: str = "utf-8", header: bool = False, bad_lines: BadLines | None = None,
                   block_bytes: int = 32 << 20) -> dict[str, np.ndarray]:
    """Read a separated text file into one numpy array per column.

    :param columns: ``(name, kind)`` for every field, kind ``"int"``, ``"float"`` or ``"str"``;
        a line must have exactly this many fields.
    :param sep: the field separator (``"\\t"``, ``","``, ``"::"``, ...); quoting is not supported.
    :param header: skip the first line.
    :param bad_lines: policy for malformed lines (default: raise on the first one).
    :raises DataError: for an empty file, and for a bad line in ``error`` mode (file, line number,
        what was expected, and a hint when another separator would fit).

    Blocks of complete lines are parsed vectorised; only a block that contains a problem is
    re-read line by line, to find the line number (or to skip the bad lines).
    """
    path, bad_lines = Path(path), bad_lines or BadLines()
    parts: list[dict[str, np.ndarray]] = []
    first_line = 2 if header else 1
    seen_any = False
    for block, start in _line_blocks(path, header, block_bytes):
        seen_any = seen_any or bool(block.strip())
        parsed = _parse_block_fast(block, columns, sep, encoding)
        if parsed is None:
            parsed = _parse_block_slow(path, block, start + first_line - 1, columns, sep, encoding, bad_lines)
        parts.append(parsed)
    if not seen_any:
        raise DataError(f"{path} is empty; expected lines of {_expected(columns, sep)}")
    return {name: np.concatenate([p[name] for p in parts]) for name, _ in columns}


def _line_blocks(path: Path, header: bool, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines (``\\n``-terminated, ``\\r`` removed) and the 1-based index of their first line."""
    line_index = 1
    with open_bytes(path) as f:
        if header:
            f.readline()
        rest = b""
        while True:
            chunk = f.read(block_bytes)
            if not chunk:
                break
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            block, rest = data[:cut], data[cut:]
            if block:
                yield block.replace(b"\r\n", b"\n"), line_index
                line_index += block.count(b"\n")
        if rest:
            yield rest.replace(b"\r\n", b"\n").rstrip(b"\r") + b"\n", line_index


def _parse_block_fast(block: bytes, columns, sep: str, encoding: str) -> dict[str, np.ndarray] | None:
    sep_b = sep.encode()
    mark = sep_b if len(sep_b) == 1 else b"\x1f"
    body = block if len(sep_b) == 1 else block.replace(sep_b, mark)
    buf = np.frombuffer(body, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    separators = np.flatnonzero(buf == mark[0])
    per_line = np.diff(np.searchsorted(separators, newlines), prepend=0)
    if (per_line != len(columns) - 1).any():
        return None
    tokens = np.array(body.replace(b"\n", mark).split(mark)[:-1]).reshape(-1, len(columns))
    out = {}
    try:
        for j, (name, kind) in enumerate(columns):
            out[name] = _convert(tokens[:, j], kind, encoding)
    except (ValueError, UnicodeDecodeError):
        return None
    return out


def _convert(values: np.ndarray, kind: str, encoding: str) -> np.ndarray:
    if kind not in _KINDS:
        raise ValueError(f"column kind must be one of {sorted(_KINDS)}, got {kind!r}")
    if kind == "str":
        return np.char.decode(values, encoding) if values.size else values.astype(str)
    if values.size and (values == b"").any():
        raise ValueError("empty field")
    return values.astype(_KINDS[kind])


def _parse_block_slow(path: Path, block: bytes, first_line: int, columns, sep: str, encoding: str,
                      bad_lines: BadLines) -> dict[str, np.ndarray]:
    rows: list[list] = []
    for offset, raw in enumerate(block.split(b"\n")[:-1]):
        lineno = first_line + offset
        if not raw.strip():
            continue  # blank lines carry no event
        try:
            line = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            bad_lines(path, lineno, f"cannot decode as {encoding} ({exc.reason})")
            continue
        row = _parse_line(line, columns, sep)
        if isinstance(row, str):
            bad_lines(path, lineno, row)
        else:
            rows.append(row)
    out = {}
    for j, (name, kind) in enumerate(columns):
        dtype = _KINDS[kind] if kind != "str" else str
        out[name] = np.array([r[j] for r in rows], dtype=dtype)
    return out


def _parse_line(line: str, columns, sep: str) -> list | str:
    """The converted fields, or a message saying what was expected."""
    fields = line.split(sep)
    if len(fields) != len(columns):
        hint = ""
        for other, other_name in _SEPARATOR_NAMES.items():
            if other != sep and other.strip() and len(line.split(other)) == len(columns):
                hint = f"; the line splits into {len(columns)} fields on {other_name} — wrong separator?"
                break
        return (f"expected {_expected(columns, sep)}, got {len(fields)} field(s): "
                f"{line[:80]!r}{hint}")
    row = []
    for (name, kind), value in zip(columns, fields):
        if kind == "str":
            row.append(value)
            continue
        try:
            row.append(int(value) if kind == "int" else float(value))
        except ValueError:
            return f"field {name!r} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
    return row


def _expected(columns, sep: str) -> str:
    names = ", ".join(name for name, _ in columns)
    return f"{len(columns)} {_SEPARATOR_NAMES.get(sep, repr(sep))}-separated fields ({names})"


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """A whole (possibly gzipped) text file, with a :class:`DataError` naming it if it cannot be decoded."""
    with open_bytes(path) as f:
        data = f.read()
    try:
        return data.decode(encoding).replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: cannot decode as {encoding} at byte {exc.start} "
                        f"({exc.reason}); is the file in another encoding?") from None
