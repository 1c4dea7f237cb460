"""Built-in plugin: the ``identity`` ranker, which keeps the retriever's order."""

from collections.abc import Sequence
from dataclasses import dataclass

from palr_core import RankRequest, RunContext, TrainingData, hookimpl

PALR_PLUGIN_API = 3


@dataclass
class IdentityConfig:
    """The identity ranker has no parameters."""


class IdentityRanker:
    """Returns the candidates in the order the retriever gave them: the reference every ranker must beat."""

    def fit(self, data: TrainingData, context: RunContext) -> None:
        """Nothing to learn."""

    def rank(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[int]]:
        return [[int(c) for c in request.candidates] for request in requests]


@hookimpl
def register_rankers(register):
    register("identity", IdentityRanker, config=IdentityConfig)
