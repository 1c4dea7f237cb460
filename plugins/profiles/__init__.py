"""Built-in plugin: profile generators ``none``, ``keywords`` and ``llm`` (paper, Figure 2)."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from palr_core import RunContext, hookimpl

from .generators import KeywordProfiles, KeywordsConfig, LlmProfileConfig, LlmProfiles

PALR_PLUGIN_API = 3


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
    register("keywords", KeywordProfiles, config=KeywordsConfig)
    register("llm", LlmProfiles, config=LlmProfileConfig)
