"""The ``sasrec`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig

LOSSES = ("ce", "bce")


@dataclass
class SASRecConfig(RetrieverConfig):
    """SASRec hyperparameters; shared ones in RetrieverConfig.

    :param blocks: self-attention blocks.
    :param heads: attention heads per block.
    :param loss: ``ce`` (full-catalogue softmax) or ``bce`` (one sampled negative per position).
    """

    maxlen: int = option(200, min=1)
    blocks: int = option(2, min=1)
    heads: int = option(2, min=1)
    loss: str = option("ce", choices=LOSSES)

    def __post_init__(self) -> None:
        """What option() cannot say alone: ``loss`` is checked by its option() rule, not here."""
        if self.heads >= 1 and self.hidden % self.heads:
            raise ValueError(f"retriever sasrec: hidden ({self.hidden}) must be divisible by heads "
                             f"({self.heads})")
