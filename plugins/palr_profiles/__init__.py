"""Built-in plugin: profile generators (``none`` here; see the ranker issue for the others)."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from palr_core import RunContext, hookimpl


@dataclass
class NoProfileConfig:
    """``profile=none`` has no parameters."""


class NoProfile:
    """Writes no profile: prompts go without one."""

    def generate(self, users: Sequence[int], histories: Sequence[np.ndarray], context: RunContext) -> list[str]:
        return [""] * len(users)


@hookimpl
def register_profile_generators(register):
    register("none", NoProfile, config=NoProfileConfig)
