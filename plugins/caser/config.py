"""The ``caser`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig


@dataclass
class CaserConfig(RetrieverConfig):
    """Caser hyperparameters; shared ones (``hidden``, ``lr``, ...) in RetrieverConfig.

    :param maxlen: Caser's ``L``: the most recent items whose embeddings form the ``L x hidden``
        "image" the convolutions read (shorter histories are padded with zeros).
    :param n_h: horizontal filters per height ``1..maxlen`` (each max-pooled over time).
    :param n_v: vertical filters (each a weighted sum of the ``L`` rows).
    :param targets: Caser's ``T``: each training window learns to predict each of its next
        ``targets`` items (softmax cross-entropy over the catalogue, averaged over them); 1: the next item only.
    :param user_embedding: add a per-user embedding (the paper's ``P_u``) to the output layer's
        input; a history that is not a training user's gets the mean user embedding.
        ``false``: the variant without it (purely sequential, the same for every user).
    :param dropout: dropout on the concatenated convolution outputs (the paper: 0.5).
    :param weight_decay: Adam weight decay (the paper's L2: 1e-6).
    :param batch_size: training windows per batch (one window per training interaction).
    """

    maxlen: int = option(5, min=1, max=50)
    n_h: int = option(16, min=0)
    n_v: int = option(4, min=0)
    targets: int = option(1, min=1)
    user_embedding: bool = True
    dropout: float = option(0.5, min=0, below=1)
    weight_decay: float = option(1e-6, min=0)
    batch_size: int = option(512, min=1)

    def __post_init__(self) -> None:
        if not isinstance(self.user_embedding, bool):
            raise ValueError(f"retriever caser: user_embedding must be true or false, got {self.user_embedding!r}")
        if self.n_h == 0 and self.n_v == 0:
            raise ValueError("retriever caser: n_h and n_v are both 0, so there is no convolution; "
                             "set at least one of them above 0")
