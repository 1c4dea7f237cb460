"""Progress that shows where output goes: a bar on a terminal, log lines in a file or a pipe.

A run whose output goes to a file (a sweep, a cluster job, ``nohup``) gets no bars: a bar redraws
itself, which a file records as one line per refresh. It gets a log line instead, every tenth of a
long loop (:func:`progress`) and every training epoch (:class:`palr_core.kit.training.EpochLog`),
in the console and ``palr.log``. ``trainer.enable_progress_bar=false`` turns both off.
"""

from __future__ import annotations

import logging
import math
import sys
import time

log = logging.getLogger("palr")

__all__ = ["on_terminal", "log_lines", "progress", "LogProgress", "duration"]


def on_terminal() -> bool:
    """Whether both output streams are a terminal (where a redrawn bar reads as one line)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def log_lines(enabled: bool = True) -> bool:
    """Whether progress is written as log lines: when it is wanted and there is no terminal."""
    return enabled and not on_terminal()


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"2 h 07 min"``."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class LogProgress:
    """A log line each time ``every`` more items are done, and when the last one is: what, how
    many of how many, the time so far and the estimated time left. Used as tqdm is (``update``,
    a context manager)."""

    def __init__(self, total: int, desc: str, unit: str = "user", every: int | None = None) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.every = every or max(1, math.ceil(total / 10))
        self.done, self.start, self._next = 0, time.perf_counter(), self.every

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.done >= self._next or self.done >= self.total:
            while self._next <= self.done:
                self._next += self.every
            elapsed = time.perf_counter() - self.start
            left = elapsed / self.done * (self.total - self.done) if self.done else 0.0
            log.info("%s: %d/%d %ss, %s elapsed, ETA %s", self.desc, self.done, self.total, self.unit,
                     duration(elapsed), duration(left))

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None


def progress(total: int, desc: str, enabled: bool = True, unit: str = "user"):
    """A progress reporter for a loop over ``total`` items: tqdm's bar on a terminal, a
    :class:`LogProgress` otherwise, and one that shows nothing when ``enabled`` is false (pass
    ``context.trainer.enable_progress_bar``). Call ``update(n)`` after each batch of ``n``."""
    if log_lines(enabled):
        return LogProgress(total, desc, unit)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled)
