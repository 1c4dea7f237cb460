"""Ranking data-parallel over CPU processes (``eval.rank_processes``).

Ranking is embarrassingly parallel over users: each request is ranked on its own. With ``N``
processes the requests are cut into ``N`` contiguous shards, each ranked by a forked copy of the
fitted ranker (the fork shares its weights copy-on-write: nothing is pickled but the requests'
answers), and the answers are put back together in the requests' order. A ranker whose answer for
a user depends only on that user's request gives exactly the one-process rankings; torch's threads
are split between the processes, so ``N`` processes use the cores one process would.

Forking is a CPU technique: a process that has already used CUDA cannot fork safely, so there
``eval.rank_processes`` must stay 1 (one process per GPU is Lightning's ``trainer.devices``, for
training). Windows and macOS default to ``spawn``, where a fitted ranker would have to be pickled:
there the option is refused by name too.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence

from .components import RankRequest, RunContext

__all__ = ["rank_in_processes", "check_rank_processes"]

#: what the forked workers read: set just before the pool forks, cleared after
_SHARED: dict = {}


def check_rank_processes(processes: int) -> None:
    """Refuse ``eval.rank_processes`` > 1 where forking a fitted ranker is unsafe, in one line."""
    if processes <= 1:
        return
    if "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError(f"eval.rank_processes={processes} needs processes started by fork, which this platform "
                         "lacks; set eval.rank_processes=1")
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        raise ValueError(f"eval.rank_processes={processes} forks CPU processes, and this process has used CUDA, "
                         "which a forked process cannot; set eval.rank_processes=1 on a GPU")


def rank_in_processes(ranker, requests: Sequence[RankRequest], context: RunContext,
                      processes: int) -> list[list[int]]:
    """``ranker.rank(requests, context)``, computed in ``processes`` forked processes over
    contiguous shards of ``requests`` and concatenated in their order.

    Each process runs with ``torch.get_num_threads() // processes`` threads (at least one). An
    exception in a process is raised here, as ``ranker.rank`` would raise it.
    """
    import torch

    check_rank_processes(processes)
    processes = min(processes, len(requests))
    if processes <= 1:
        return ranker.rank(list(requests), context)
    bounds = [round(i * len(requests) / processes) for i in range(processes + 1)]
    _SHARED.update(ranker=ranker, context=context, requests=list(requests), bounds=bounds,
                   threads=max(1, torch.get_num_threads() // processes))
    fork = multiprocessing.get_context("fork")
    answers = fork.SimpleQueue()
    workers: list = []
    try:
        workers += [fork.Process(target=_rank_shard, args=(index, answers), daemon=True) for index in range(processes)]
        for worker in workers:
            worker.start()
        shards: dict[int, list] = {}
        while len(shards) < processes:
            if answers.empty():  # (liveness read first: a worker that answered and exited is seen)
                if not any(w.is_alive() for w in workers) and answers.empty():
                    lost = sorted(set(range(processes)) - set(shards))
                    raise RuntimeError(f"eval.rank_processes: the process ranking shard {lost[0]} of {processes} "
                                       f"ended without an answer (exit code {workers[lost[0]].exitcode})")
                time.sleep(0.01)
                continue
            index, failure, ranked = answers.get()
            if failure is not None:
                raise failure
            shards[index] = ranked
        for worker in workers:
            worker.join()
    finally:
        _SHARED.clear()
        for worker in workers:
            if worker.is_alive():
                worker.kill()
    return [order for index in range(processes) for order in shards[index]]


def _rank_shard(index: int, answers) -> None:
    """One forked process: rank its shard, put ``(index, exception or None, rankings)`` on ``answers``."""
    import torch

    try:
        torch.set_num_threads(_SHARED["threads"])
        start, stop = _SHARED["bounds"][index], _SHARED["bounds"][index + 1]
        ranked = _SHARED["ranker"].rank(_SHARED["requests"][start:stop], _SHARED["context"])
        answers.put((index, None, [[int(item) for item in order] for order in ranked]))
    except BaseException as exc:  # noqa: BLE001  (the caller re-raises it)
        try:
            answers.put((index, exc, None))
        except Exception:  # an exception that does not pickle: its text does
            answers.put((index, RuntimeError(f"{type(exc).__name__}: {exc}"), None))
