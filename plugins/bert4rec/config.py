"""The ``bert4rec`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig


@dataclass
class BERT4RecConfig(RetrieverConfig):
    """BERT4Rec hyperparameters.

    :param blocks: transformer blocks.
    :param heads: attention heads.
    :param mask_prob: share of items replaced by the mask token in training.
    :param last_mask_prob: share of training sequences in which only the last item is masked.
    """

    maxlen: int = option(200, min=1)
    blocks: int = option(2, min=1)
    heads: int = option(2, min=1)
    dropout: float = option(0.1, min=0, below=1)
    mask_prob: float = option(0.2, above=0, below=1)
    last_mask_prob: float = option(0.1, min=0, max=1)
