"""SASRec (Kang & McAuley 2018): causal self-attention over the item sequence, as a palr Retriever.

Three losses, selected by ``loss``: ``ce`` (softmax cross-entropy over the whole catalogue at every
position, the stronger one and the default, in chunks of bounded memory), ``bce`` (the paper's
binary cross-entropy with one sampled negative per position) and ``sampled`` (softmax over the
target and ``negatives`` sampled items, logQ-corrected, for large catalogues).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from palr_core import RunContext, TrainingData
from palr_core.kit.losses import full_cross_entropy, sampled_softmax, training_log_q
from palr_core.kit.retrievers import (
    PAD,
    RetrieverModule,
    TrainedRetriever,
    TransformerEncoder,
    left_pad,
    trim_padding,
)

from .config import SASRecConfig


def causal_padding_mask(seq: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B, 1, L, L]`` (True = may attend): earlier or same position, never a padding key.

    Each position may always attend to itself, so left-padding rows never become all-blocked
    (which would give NaN).
    """
    length = seq.shape[1]
    past = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
    allowed = past[None] & (seq != 0)[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool, device=seq.device)[None]
    return allowed[:, None]


class SASRecModule(RetrieverModule):
    """The network and its loss; ``score`` reads the representation at the last position."""

    def __init__(self, num_items: int, config: SASRecConfig) -> None:
        super().__init__(num_items, config.lr, config.weight_decay)
        self.config = config
        self.items = nn.Embedding(num_items + 1, config.hidden, padding_idx=0)
        self.positions = nn.Embedding(config.maxlen, config.hidden)
        self.encoder = TransformerEncoder(config.hidden, config.heads, config.blocks, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        # log-probability of drawing each item as a negative (loss=sampled); set from the training data
        self.register_buffer("log_q", torch.full((num_items,), -math.log(max(num_items, 1))), persistent=False)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, hidden]`` for left-padded item sequences ``[B, L]``."""
        # position maxlen-1 is always the most recent item, however much padding was trimmed
        positions = torch.arange(self.config.maxlen - seq.shape[1], self.config.maxlen, device=seq.device)
        x = self.dropout(self.items(seq) + self.positions(positions)[None])
        return self.encoder(x, causal_padding_mask(seq))

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        return self.encode(trim_padding(queries)[0])[:, -1] @ self.items.weight[1:].T

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (seq,) = batch
        inputs, targets = trim_padding(seq[:, :-1], seq[:, 1:])
        hidden = self.encode(inputs)
        real = targets > 0
        hidden, targets = hidden[real], targets[real]
        if self.config.loss == "ce":
            loss = full_cross_entropy(hidden, self.items.weight[1:], targets - 1)
        elif self.config.loss == "sampled":
            loss = sampled_softmax(hidden, self.items.weight[1:], targets - 1, self.log_q, self.config.negatives)
        else:
            negatives = torch.randint(1, self.num_items + 1, targets.shape, device=targets.device)
            pos = (hidden * self.items(targets)).sum(-1)
            neg = (hidden * self.items(negatives)).sum(-1)
            loss = F.binary_cross_entropy_with_logits(torch.cat([pos, neg]),
                                                      torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(seq))
        return loss


class SASRecRetriever(TrainedRetriever):
    """``palr-run retriever=sasrec``: trains on each user's training prefix (one row per user)."""

    config_class = SASRecConfig

    log_q: torch.Tensor | None = None

    def prepare(self, data: TrainingData) -> None:
        if self.config.loss == "sampled":
            self.log_q = training_log_q(data.train, data.num_items)

    def build_module(self, num_items: int) -> SASRecModule:
        module = SASRecModule(num_items, self.config)
        if self.log_q is not None:
            module.log_q.copy_(self.log_q)
        return module

    def training_dataset(self, data: TrainingData, context: RunContext) -> torch.utils.data.Dataset:
        # maxlen + 1 columns: inputs are the first maxlen, next-item targets the last maxlen
        return torch.utils.data.TensorDataset(left_pad(data.train, self.config.maxlen + 1))

    def row_lengths(self, dataset: torch.utils.data.TensorDataset) -> torch.Tensor:
        return (dataset.tensors[0] != PAD).sum(1)
