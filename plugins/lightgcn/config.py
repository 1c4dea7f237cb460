"""The ``lightgcn`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig


@dataclass
class LightGCNConfig(RetrieverConfig):
    """LightGCN hyperparameters. ``lr``, ``reg`` and ``layers`` are the best of a 10-trial Optuna search
    on ML-100K's validation items (docs/retrievers.md; Adam's 1e-3 of the LightGCN paper, with its
    1,000 epochs, stopped early here at popularity's level).

    :param layers: propagation layers (the final embedding is the mean of layers 0..layers).
    :param reg: L2 penalty on the batch's layer-0 embeddings.
    :param maxlen: most recent items used to fold in a history of an unknown user.
    """

    layers: int = option(3, min=1)
    lr: float = option(0.014, above=0)
    reg: float = option(4.3e-5, min=0)
    batch_size: int = option(2048, min=1)
    dropout: float = option(0.0, choices=(0.0,))  # LightGCN has no dropout
    max_epochs: int | None = option(300, min=1)
