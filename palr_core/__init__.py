"""palr: LLM-ranked sequential recommendation (PALR) as a plugin framework.

``palr_core`` is the framework: the plugin contract (hooks, component interfaces, the registry,
the plugin-API version), the run configuration, the data model with preprocessing and the split,
the metrics, the pipeline, experiment tracking (``tracking``), the command line and the Python API
(``api``, which ``import palr`` re-exports). It knows no concrete model and imports neither torch
nor any plugin. ``palr_core.kit`` is the toolkit that plugins share (trained-retriever
machinery, Lightning trainer, language-model loading, prompts, instruction data, file and table
readers); ``palr_core.testing`` gives a plugin's own tests tiny data and a run context.

Who may import whom: ``palr_core`` modules import only ``palr_core`` modules; ``palr_core.kit``
imports ``palr_core`` and itself; plugins import both; nothing imports a plugin.
"""

from __future__ import annotations

import importlib
import warnings

from .components import (
    KINDS,
    Dataset,
    LanguageModel,
    ModelNotInstalled,
    ProfileGenerator,
    Ranker,
    RankRequest,
    Retriever,
    RunContext,
    TrainingData,
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

__version__ = "0.2.0"

#: names plugin API 1 imported from ``palr_core`` that now live in the toolkit (old name -> module)
_MOVED_TO_KIT = {
    **dict.fromkeys(["RetrieverConfig"], "palr_core.kit.configs"),
    **dict.fromkeys(["RetrieverModule", "TrainedRetriever", "TransformerEncoder", "left_pad", "trim_padding",
                     "top_k_unseen", "mask_history", "rank_from_scores"], "palr_core.kit.retrievers"),
    **dict.fromkeys(["make_trainer"], "palr_core.kit.training"),
    **dict.fromkeys(["InstructionConfig", "InstructionExample", "InteractionGraph", "build_instructions"],
                    "palr_core.kit.instructions"),
    **dict.fromkeys(["chat_prompt_ids", "load_causal_lm", "resolve_dtype", "resolve_language_model"],
                    "palr_core.kit.llm"),
    **dict.fromkeys(["PromptError", "build_prompt", "check_templates", "default_templates", "render_item",
                     "render_items"], "palr_core.kit.prompts"),
}


def __getattr__(name: str):
    """Plugin API 1 names that moved to ``palr_core.kit``: still importable, with a warning."""
    if name in _MOVED_TO_KIT:
        module = _MOVED_TO_KIT[name]
        warnings.warn(f"palr_core.{name} moved to {module} in palr plugin API 2; import it from there",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'palr_core' has no attribute {name!r}")


__all__ = [
    "KINDS", "Dataset", "ProfileGenerator", "Ranker", "RankRequest", "Retriever", "RunContext",
    "TrainingData", "LanguageModel", "ModelNotInstalled",
    "TrainerConfig", "PalrConfig", "PreprocessConfig", "EvalConfig", "option", "OptionError",
    "DataError", "DatasetStats", "InteractionLog", "ItemCatalog", "RawDataset",
    "SequenceData", "Split", "iterative_k_core", "leave_one_out_split", "preprocess",
    "PLUGIN_API", "hookimpl",
    "DEFAULT_KS", "complete_ranking", "metrics_from_ranks", "rank_from_lists",
    "ComponentConfigError", "DuplicateComponentError", "PluginError", "Registry",
    "UnknownComponentError", "load_registry", "__version__",
]
