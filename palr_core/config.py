"""The structured schema of ``conf/config.yaml``: typos in top-level keys fail at composition.

Component groups (``dataset``, ``retriever``, ``profile``, ``ranker``) are open here; each is
checked against its own plugin's config dataclass when the component is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from .training import TrainerConfig


@dataclass
class PreprocessConfig:
    k_core: int = 5  #: iterative k-core threshold for users and items


@dataclass
class EvalConfig:
    ks: list = field(default_factory=lambda: [5, 10, 20])  #: cut-offs for HR@K / NDCG@K
    candidates: int = 50  #: retriever top-K handed to the ranker
    max_users: int | None = None  #: evaluate a seeded sample of test users (None: all)


@dataclass
class PalrConfig:
    dataset: Any = MISSING
    retriever: Any = MISSING
    profile: Any = MISSING
    ranker: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 42
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cache_dir: str = "${oc.env:PALR_CACHE_DIR,'~/.cache/palr'}"


def store_schema() -> None:
    """Make the schema available to ``config.yaml``'s defaults list as ``palr_schema``."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="palr_schema", node=PalrConfig)
