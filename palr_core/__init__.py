"""palr: LLM-ranked sequential recommendation (PALR) as a plugin framework.

This module is the public API a plugin uses; nothing here knows a concrete model.
"""

from .components import (
    KINDS,
    Dataset,
    ProfileGenerator,
    Ranker,
    RankRequest,
    Retriever,
    RunContext,
    TrainingData,
)
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
from .hookspecs import hookimpl
from .instructions import InstructionConfig, InstructionExample, InteractionGraph, build_instructions
from .llm import (
    LanguageModel,
    ModelNotInstalled,
    chat_prompt_ids,
    load_causal_lm,
    resolve_dtype,
    resolve_language_model,
)
from .metrics import (
    DEFAULT_KS,
    complete_ranking,
    mask_history,
    metrics_from_ranks,
    rank_from_lists,
    rank_from_scores,
)
from .plugins import (
    ComponentConfigError,
    DuplicateComponentError,
    PluginError,
    Registry,
    UnknownComponentError,
    load_registry,
)
from .prompts import PromptError, build_prompt, check_templates, default_templates, render_item, render_items
from .training import TrainerConfig, make_trainer

__version__ = "0.1.0"

#: public names of palr_core.sequential, imported on first use (it imports Lightning)
_SEQUENTIAL = ("RetrieverConfig", "RetrieverModule", "TrainedRetriever", "TransformerEncoder",
               "left_pad", "trim_padding", "top_k_unseen")


def __getattr__(name: str):
    if name in _SEQUENTIAL:
        from . import sequential

        return getattr(sequential, name)
    raise AttributeError(f"module 'palr_core' has no attribute {name!r}")


__all__ = [
    "KINDS", "Dataset", "ProfileGenerator", "Ranker", "RankRequest", "Retriever", "RunContext",
    "TrainingData", "DataError", "DatasetStats", "InteractionLog", "ItemCatalog", "RawDataset",
    "SequenceData", "Split", "iterative_k_core", "leave_one_out_split", "preprocess", "hookimpl",
    "DEFAULT_KS", "complete_ranking", "mask_history", "metrics_from_ranks", "rank_from_lists", "rank_from_scores",
    "ComponentConfigError", "DuplicateComponentError", "PluginError", "Registry",
    "UnknownComponentError", "load_registry", "TrainerConfig", "make_trainer", "__version__",
    "InstructionConfig", "InstructionExample", "InteractionGraph", "build_instructions",
    "LanguageModel", "ModelNotInstalled", "chat_prompt_ids", "load_causal_lm", "resolve_dtype",
    "resolve_language_model",
    "PromptError", "build_prompt", "check_templates", "default_templates", "render_item", "render_items",
    *_SEQUENTIAL,
]
