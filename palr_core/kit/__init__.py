"""The toolkit plugins share: what several components need, none of which the framework needs.

==========================  ===================================================================
module                      what it gives a plugin
==========================  ===================================================================
``kit.configs``             :class:`RetrieverConfig` (no torch: a plugin's config dataclass extends it)
``kit.retrievers``          :class:`TrainedRetriever` + :class:`RetrieverModule` (Lightning training,
                            early stopping, save/load, batched top-K), padding helpers,
                            :class:`LengthBucketSampler`, :class:`TransformerEncoder`, torch metrics
``kit.training``            :func:`make_trainer`: the ``trainer`` config group as a Lightning Trainer
``kit.llm``                 causal LMs from a registered name, a folder or a GGUF file; chat prompts
``kit.files``               download + checksum + unzip (pooch), file hashes, compressed files
``kit.datasets``            :func:`cached_raw`: a parsed dataset cached by its files' sha256
``kit.tables``              the CSV/TSV/Parquet reader (pyarrow) with line-level errors
==========================  ===================================================================

Rule: ``palr_core.kit`` imports ``palr_core`` and itself, never a plugin; ``palr_core`` never
imports ``palr_core.kit``. Every name below is also importable from ``palr_core.kit`` itself,
on first use, so that importing the kit costs nothing until something is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "configs": ["RetrieverConfig"],
    "retrievers": ["PAD", "left_pad", "right_pad", "trim_padding", "mask_history", "rank_from_scores",
                   "LengthBucketSampler", "RetrieverModule", "TrainedRetriever", "top_k_unseen",
                   "TransformerEncoder"],
    "training": ["make_trainer", "epoch_budget", "fit", "resumable_loader", "claim_folder", "FolderInUse",
                 "RandomStateCheckpoint", "MovableCheckpoint"],
    "llm": ["load_causal_lm", "resolve_language_model", "resolve_dtype", "convert_gguf", "chat_prompt_ids"],
    "files": ["MissingDataError", "ChecksumError", "FileHashes", "fetch", "file_sha256",
              "missing_files_message", "open_binary", "read_text"],
    "datasets": ["cached_raw"],
    "tables": ["BadLines", "TableSource", "Chunk", "inspect", "read_chunks", "read_delimited"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'palr_core.kit' has no attribute {name!r}")


__all__ = sorted(_WHERE)
