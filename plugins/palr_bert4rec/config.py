"""The ``bert4rec`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core.kit.configs import RetrieverConfig


@dataclass
class BERT4RecConfig(RetrieverConfig):
    """BERT4Rec hyperparameters.

    :param blocks: transformer blocks.
    :param heads: attention heads.
    :param mask_prob: share of items replaced by the mask token in training.
    :param last_mask_prob: share of training sequences in which only the last item is masked.
    """

    maxlen: int = 200
    blocks: int = 2
    heads: int = 2
    dropout: float = 0.1
    mask_prob: float = 0.2
    last_mask_prob: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"retriever bert4rec: mask_prob must be in (0, 1), got {self.mask_prob}")
