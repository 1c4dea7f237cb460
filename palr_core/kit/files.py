"""Getting dataset and model files onto disk and opening them: download, checksum, unpack, hash.

For Dataset plugins (built-in or third-party) and the language-model loader; nothing here knows
a concrete dataset. Downloads, checksums and unpacking are pooch's (:func:`fetch`); this module
adds what a palr user needs around them: an offline or failed download becomes a
:class:`MissingDataError` that says which files to put where, and :class:`FileHashes` remembers
the sha256 of large local files so a warm start does not hash them again.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .. import atomic
from ..data import DataError

__all__ = ["MissingDataError", "ChecksumError", "file_sha256", "FileHashes", "fetch", "write_atomic",
           "missing_files_message", "compression_of", "open_binary", "read_text"]

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
_RACY_NS = 2_000_000_000


class MissingDataError(DataError):
    """Dataset files are absent and could not be downloaded (the message says what, where, from where)."""


class ChecksumError(DataError):
    """A downloaded file does not have the published checksum."""


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file (pooch's hash, read in chunks)."""
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


class FileHashes:
    """sha256 of files, remembered in ``<cache_dir>/file_hashes.json``.

    A file is hashed again when anything in its stamp changed: size, modification time, status
    change time (which an edit that restores the old mtime still moves) or inode (a file replaced
    by another). A digest taken less than 2 s after the file's last change is stored but never
    trusted later: the file could change again within the clock's granularity ("racy" in git's terms).
    """

    def __init__(self, cache_dir: str | os.PathLike) -> None:
        self.path = Path(cache_dir).expanduser() / "file_hashes.json"
        try:
            self._memo: dict = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self._memo = {}

    def sha256(self, file: str | os.PathLike) -> str:
        """The file's sha256, re-hashed only if its stamp changed since last time."""
        file = Path(file).resolve()
        st = file.stat()
        stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        entry = self._memo.get(str(file))
        if (isinstance(entry, dict) and entry.get("stamp") == stamp and entry.get("settled")
                and isinstance(entry.get("sha256"), str)):
            return entry["sha256"]
        digest = file_sha256(file)
        settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _RACY_NS
        self._memo[str(file)] = {"stamp": stamp, "sha256": digest, "settled": settled}
        try:
            write_atomic(self.path, json.dumps(self._memo, indent=0))
        except OSError:  # a cache folder palr cannot write costs the memo, not the digest
            pass
        return digest


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write a file so that it is either the old one or the new one, never half of it
    (:func:`palr_core.atomic.write_atomic`), creating its folder first."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_atomic(path, data)


def fetch(url: str, directory: str | os.PathLike, help_text: str, *, checksum: str | None = None,
          unpack: bool = False, progress: bool = True) -> Path:
    """Download ``url`` into ``directory`` (pooch: checksum verified, moved into place only when
    complete), and with ``unpack`` extract the zip there and delete the archive.

    :param checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"`` (``None``: not checked).
    :param help_text: what to do by hand (see :func:`missing_files_message`); it becomes the message
        of the :class:`MissingDataError` raised when the URL cannot be reached (offline, 404...).
    :returns: the downloaded file, or with ``unpack`` the directory it was extracted into.
    """
    import pooch
    import requests

    directory = Path(directory).expanduser()
    name = url.rstrip("/").rsplit("/", 1)[-1]
    processor = pooch.Unzip(extract_dir=str(directory)) if unpack else None
    try:
        pooch.retrieve(url, known_hash=checksum, fname=name, path=directory, processor=processor,
                       progressbar=progress)
    except requests.exceptions.RequestException as exc:
        raise MissingDataError(f"{help_text}\n(download of {url} failed: {_reason(exc)})") from None
    except ValueError as exc:
        if "hash" not in str(exc):
            raise
        (directory / name).unlink(missing_ok=True)
        raise ChecksumError(f"download of {url} does not match checksum {checksum}: {exc}; try again, "
                            "or check that the URL serves the published file") from None
    if unpack:
        (directory / name).unlink(missing_ok=True)  # the extracted files are what is read
        return directory
    return directory / name


def _reason(exc: Exception) -> str:
    """The useful part of a requests error (``[Errno -2] Name or service not known``, ``404 ...``)."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return errno.group(0) if errno else text[:200]


def missing_files_message(dataset: str, directory: str | os.PathLike, layouts: dict[str, Sequence[str]],
                          urls: Sequence[str], root_option: str = "dataset.root") -> str:
    """A message that says which files were expected where, and where to get them.

    :param layouts: accepted file sets by name, e.g. ``{"official": ["ratings.dat", "movies.dat"]}``.
    """
    accepted = "; or ".join(f"{name}: {', '.join(files)}" for name, files in layouts.items())
    unpack = ", unpack it," if any(u.endswith((".zip", ".tar", ".tar.gz", ".tgz")) for u in urls) else ""
    return (f"{dataset}: the data files are not in {directory}. Expected ({accepted}). "
            f"Download {' and '.join(urls)}{unpack} and set {root_option}=<the folder that holds "
            f"the files>; or leave {root_option} unset to download into the cache when online.")


def compression_of(path: str | os.PathLike) -> str:
    """``gzip``, ``zip`` or ``none``, from the file's first bytes (not its name)."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    return "gzip" if magic[:2] == GZIP_MAGIC else "zip" if magic == ZIP_MAGIC else "none"


def open_binary(path: str | os.PathLike, compression: str | None = None) -> IO[bytes]:
    """The decompressed bytes of ``path``: gzip, a zip holding exactly one file, or plain
    (``compression``: ``None`` detects it from the content)."""
    path = Path(path)
    compression = compression or compression_of(path)
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zip":
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if not m.endswith("/") and not m.startswith("__MACOSX")]
        if len(members) != 1:
            archive.close()
            raise DataError(f"{path}: a zip archive must contain exactly one file, found {members}")
        return archive.open(members[0])
    return open(path, "rb")


def read_text(path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """A whole (possibly compressed) text file, with a :class:`DataError` naming the file and line
    if it cannot be decoded."""
    with open_binary(path) as f:
        data = f.read()
    try:
        return data.decode(encoding).replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: cannot decode as {encoding} at byte {exc.start} "
                        f"({exc.reason}); is the file in another encoding?") from None
