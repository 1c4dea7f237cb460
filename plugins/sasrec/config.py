"""The ``sasrec`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig

LOSSES = ("ce", "bce", "sampled")


@dataclass
class SASRecConfig(RetrieverConfig):
    """SASRec hyperparameters; shared ones in RetrieverConfig.

    :param blocks: self-attention blocks.
    :param heads: attention heads per block.
    :param loss: ``ce`` (full-catalogue softmax, exact, computed in chunks of bounded memory),
        ``bce`` (one sampled negative per position) or ``sampled`` (softmax over the target and
        ``negatives`` items drawn per batch, logQ-corrected: for catalogues too large for ``ce``).
    :param negatives: items drawn per training batch for ``loss=sampled``.
    """

    maxlen: int = option(200, min=1)
    blocks: int = option(2, min=1)
    heads: int = option(2, min=1)
    loss: str = option("ce", choices=LOSSES)
    negatives: int = option(256, min=1)

    def __post_init__(self) -> None:
        """What option() cannot say alone: ``loss`` is checked by its option() rule, not here."""
        if self.heads >= 1 and self.hidden % self.heads:
            raise ValueError(f"retriever sasrec: hidden ({self.hidden}) must be divisible by heads "
                             f"({self.heads})")
