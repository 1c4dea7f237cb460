"""The ``bert4rec`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig

LOSSES = ("ce", "sampled")


@dataclass
class BERT4RecConfig(RetrieverConfig):
    """BERT4Rec hyperparameters.

    :param blocks: transformer blocks.
    :param heads: attention heads.
    :param mask_prob: share of items replaced by the mask token in training.
    :param last_mask_prob: share of training sequences in which only the last item is masked.
    :param loss: ``ce`` (softmax over the whole catalogue, exact, computed in chunks of bounded
        memory) or ``sampled`` (softmax over the target and ``negatives`` items drawn per batch,
        logQ-corrected: for catalogues too large for ``ce``).
    :param negatives: items drawn per training batch for ``loss=sampled``.
    """

    maxlen: int = option(200, min=1)
    blocks: int = option(2, min=1)
    heads: int = option(2, min=1)
    dropout: float = option(0.1, min=0, below=1)
    mask_prob: float = option(0.2, above=0, below=1)
    last_mask_prob: float = option(0.1, min=0, max=1)
    loss: str = option("ce", choices=LOSSES)
    negatives: int = option(256, min=1)
