"""The ``lightgcn`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig


@dataclass
class LightGCNConfig(RetrieverConfig):
    """LightGCN hyperparameters.

    :param layers: propagation layers (the final embedding is the mean of layers 0..layers).
    :param reg: L2 penalty on the batch's layer-0 embeddings.
    :param maxlen: most recent items used to fold in a history of an unknown user.
    """

    layers: int = option(3, min=1)
    reg: float = option(1e-4, min=0)
    batch_size: int = option(2048, min=1)
    dropout: float = option(0.0, choices=(0.0,))  # LightGCN has no dropout
    max_epochs: int | None = option(300, min=1)
