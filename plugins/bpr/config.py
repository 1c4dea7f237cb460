"""The ``bpr`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig


@dataclass
class BPRConfig(RetrieverConfig):
    """BPR-MF hyperparameters; shared ones (hidden, lr, batch_size, max_epochs, patience...) in
    RetrieverConfig.

    :param reg: L2 penalty on the batch's user and item embeddings (and item biases), per example.
    :param item_bias: add a learned per-item bias to the user-item dot product.
    :param maxlen: most recent items averaged to fold in the history of an unknown user.
    :param dropout: unused (BPR-MF has no dropout); only 0.0 is accepted.
    :param lr: Adam learning rate.
    :param batch_size: training (user, positive, negative) triples per batch.
    :param max_epochs: most training epochs (one triple per training interaction each); early
        stopping on validation NDCG@10 usually ends training long before.
    """

    reg: float = option(1e-2, min=0)
    item_bias: bool = True
    dropout: float = option(0.0, choices=(0.0,))
    lr: float = option(5e-3, above=0)
    batch_size: int = option(1024, min=1)
    max_epochs: int | None = option(300, min=1)

    def __post_init__(self) -> None:
        if not isinstance(self.item_bias, bool):
            raise ValueError(f"retriever bpr: item_bias must be true or false, got {self.item_bias!r}")
