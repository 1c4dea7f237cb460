"""Writes that stay in their folder and are never seen half done.

Every file palr writes for a run (results, metrics, rankings, the run's record, exports, reports)
goes through :func:`write_atomic`: the bytes go to a new temporary file beside the target, which
then replaces the target in one step (``os.replace``). A reader sees the old file or the new one,
never a part; a kill leaves the old file whole. A symbolic link at the target is replaced, not
followed, and a target whose folder leads outside the folder it must stay in is refused, so a link
planted in a run folder cannot make palr overwrite a file elsewhere.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["OutsideFolderError", "write_atomic", "write_with", "check_inside"]


class OutsideFolderError(ValueError):
    """A write whose target (through a symbolic link) lies outside the folder it belongs to."""


def check_inside(path: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """``path``'s folder, resolved, must be ``folder`` or below it; returns ``path`` with that folder."""
    path, folder = Path(path), Path(folder)
    real_parent, real_folder = path.parent.resolve(), folder.resolve()
    if real_parent != real_folder and real_folder not in real_parent.parents:
        raise OutsideFolderError(f"{path}: its folder leads to {real_parent} (a symbolic link?), outside {folder}; "
                                 "palr writes only inside it: remove the link")
    return real_parent / path.name


def write_with(path: str | os.PathLike, write: Callable[[Path], None], inside: str | os.PathLike | None = None) -> Path:
    """Have ``write(temporary_path)`` write the file, then move it to ``path`` in one step.

    :param inside: the folder the file must stay in (default: ``path``'s own folder, which then
        only has to exist); a folder that resolves outside it is refused.
    """
    path = Path(path)
    target = check_inside(path, inside) if inside is not None else path
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")  # O_EXCL: no link followed
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make results unreadable to others
    try:
        write(Path(tmp))
        os.replace(tmp, target)  # replaces a link at the target; never writes through it
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: str | bytes, inside: str | os.PathLike | None = None) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically (see :func:`write_with`)."""
    payload = data.encode() if isinstance(data, str) else data
    return write_with(path, lambda tmp: tmp.write_bytes(payload), inside)
