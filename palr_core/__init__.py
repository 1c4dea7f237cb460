"""palr: LLM-ranked sequential recommendation (PALR) as a plugin framework.

``palr_core`` is the framework: the plugin contract (hooks, component interfaces, the registry,
the plugin-API version), the run configuration, the data model with preprocessing and the split,
the metrics, the pipeline, experiment tracking (``tracking``), the command line and the Python API
(``api``, which ``import palr`` re-exports). It knows no concrete model and imports neither torch
nor any plugin. ``palr_core.kit`` is the toolkit that plugins share (trained-retriever
machinery, Lightning trainer, language-model loading, file and table readers); ``palr_core.testing``
gives a plugin's own tests tiny data and a run context.

Who may import whom: ``palr_core`` modules import only ``palr_core`` modules; ``palr_core.kit``
imports ``palr_core`` and itself; plugins import both; nothing imports a plugin.
"""

from __future__ import annotations

from .components import (
    KINDS,
    Checkable,
    Dataset,
    Labelled,
    LanguageModel,
    ModelNotInstalled,
    Persistent,
    PreprocessesItself,
    ProfileGenerator,
    Ranker,
    RankRequest,
    RestoresTuning,
    Retriever,
    RunContext,
    Storable,
    Summarised,
    TrainingData,
    Tunable,
)
from .config import EvalConfig, OptionError, PalrConfig, PreprocessConfig, TrainerConfig, option
from .data import (
    DataError,
    DatasetStats,
    InteractionLog,
    ItemCatalog,
    RawDataset,
    SequenceData,
    Split,
    iterative_k_core,
    leave_one_out_split,
    preprocess,
)
from .hookspecs import PLUGIN_API, hookimpl
from .metrics import DEFAULT_KS, complete_ranking, metrics_from_ranks, rank_from_lists
from .plugins import (
    ComponentConfigError,
    DuplicateComponentError,
    PluginError,
    Registry,
    UnknownComponentError,
    load_registry,
)

__version__ = "0.3.0"

__all__ = [
    "KINDS", "Dataset", "ProfileGenerator", "Ranker", "RankRequest", "Retriever", "RunContext",
    "TrainingData", "LanguageModel", "ModelNotInstalled",
    "Checkable", "Tunable", "RestoresTuning", "Summarised", "Labelled", "Persistent", "Storable", "PreprocessesItself",
    "TrainerConfig", "PalrConfig", "PreprocessConfig", "EvalConfig", "option", "OptionError",
    "DataError", "DatasetStats", "InteractionLog", "ItemCatalog", "RawDataset",
    "SequenceData", "Split", "iterative_k_core", "leave_one_out_split", "preprocess",
    "PLUGIN_API", "hookimpl",
    "DEFAULT_KS", "complete_ranking", "metrics_from_ranks", "rank_from_lists",
    "ComponentConfigError", "DuplicateComponentError", "PluginError", "Registry",
    "UnknownComponentError", "load_registry", "__version__",
]
