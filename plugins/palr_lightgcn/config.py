"""The ``lightgcn`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core.kit.configs import RetrieverConfig


@dataclass
class LightGCNConfig(RetrieverConfig):
    """LightGCN hyperparameters.

    :param layers: propagation layers (the final embedding is the mean of layers 0..layers).
    :param reg: L2 penalty on the batch's layer-0 embeddings.
    :param maxlen: most recent items used to fold in a history of an unknown user.
    """

    layers: int = 3
    reg: float = 1e-4
    batch_size: int = 2048
    lr: float = 1e-3
    dropout: float = 0.0
    max_epochs: int | None = 300
    patience: int | None = 10
