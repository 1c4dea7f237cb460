"""From users to ranked lists: the retriever's candidates, the profiles, the ranker's order, checked.

The pipeline's test users, a ranker's validation users (``tune``) and ``palr recommend`` all go
through these two functions, so the three build their requests and read a ranker's answer the same
way. A ranker's answer is checked before any metric reads it: one list per request, each holding
only that request's candidates, none twice. A list may leave candidates out; they follow in the
retriever's order, so every row of a results table ranks the same items.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from .components import RankRequest, RunContext
from .metrics import complete_ranking

__all__ = ["RankingError", "candidate_count", "candidate_requests", "rank_candidates"]


class RankingError(ValueError):
    """A ranker's answer that breaks the :class:`~palr_core.Ranker` contract (named in the message)."""


def candidate_count(eval_config) -> int:
    """How many candidates the retriever hands the ranker: ``eval.candidates``, and at least the
    largest cut-off of ``eval.ks``, so that every metric ranks a full list."""
    return max(eval_config.candidates, max(eval_config.ks))


def _unstaged(name: str) -> AbstractContextManager:
    return nullcontext()


def candidate_requests(users: Sequence[int], histories: Sequence[np.ndarray], retriever, profile,
                       context: RunContext, n_candidates: int,
                       stage: Callable[[str], AbstractContextManager] = _unstaged) -> list[RankRequest]:
    """One :class:`RankRequest` per user: the retriever's top ``n_candidates`` for the history (best
    first, with their scores) and the profile generator's text for the user (``None`` when empty).

    :param stage: wraps the ``"retrieve"`` and ``"profiles"`` steps (the pipeline seeds and times
        each as a stage of its own).
    """
    with stage("retrieve"):
        ids, scores = retriever.retrieve(list(histories), n_candidates)
    with stage("profiles"):
        profiles = profile.generate(list(users), list(histories), context)
    if len(profiles) != len(users):
        raise RankingError(f"the profile generator returned {len(profiles)} profiles for {len(users)} users; "
                           "ProfileGenerator.generate must return one string per user")
    return [RankRequest(user=int(u), history=h, candidates=np.asarray(c), candidate_scores=np.asarray(s),
                        profile=p or None)
            for u, h, c, s, p in zip(users, histories, ids, scores, profiles)]


def rank_candidates(ranker, requests: Sequence[RankRequest], context: RunContext,
                    name: str = "ranker", processes: int = 1) -> list[list[int]]:
    """The ranker's order of each request's candidates, checked and completed in retriever order.

    :param name: the ranker's registered name, for the error message.
    :param processes: rank in this many forked CPU processes, a contiguous shard of the requests
        each (``eval.rank_processes``; :func:`palr_core.parallel.rank_in_processes`).
    :raises RankingError: a list count that differs from the requests', an item that is not one of
        its request's candidates, or an item listed twice.
    """
    if processes > 1:
        from .parallel import rank_in_processes

        ranked = rank_in_processes(ranker, requests, context, processes)
    else:
        ranked = ranker.rank(list(requests), context)
    if len(ranked) != len(requests):
        raise RankingError(f"ranker {name!r} returned {len(ranked)} ranked lists for {len(requests)} requests; "
                           "Ranker.rank must return one list per request, in the requests' order")
    return [complete_ranking(_checked(order, request, name), request.candidates)
            for order, request in zip(ranked, requests)]


def _checked(order, request: RankRequest, name: str) -> list[int]:
    items = [int(i) for i in order]
    allowed = set(request.candidates.tolist())
    stray = [i for i in items if i not in allowed]
    if stray:
        raise RankingError(f"ranker {name!r} ranked item {stray[0]} for user {request.user}, which is not one of "
                           f"its {len(allowed)} candidates; Ranker.rank may only order the candidates it is given")
    if len(set(items)) != len(items):
        twice = next(i for i in items if items.count(i) > 1)
        raise RankingError(f"ranker {name!r} listed item {twice} more than once for user {request.user}; "
                           "each candidate may appear once")
    return items
