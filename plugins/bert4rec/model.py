"""BERT4Rec (Sun et al. 2019): a bidirectional encoder trained to fill in masked items (cloze).

Training masks a random ``mask_prob`` share of each sequence's items (and, for a
``last_mask_prob`` share of sequences, only the last item, the situation at inference) and
applies softmax cross-entropy over the catalogue at the masked positions (``loss=ce``, exact, in
chunks of bounded memory; ``loss=sampled``: against ``negatives`` sampled items, logQ-corrected).
To score a history,
a mask token is appended and its representation is matched against every item embedding.
"""

from __future__ import annotations

import math

import torch
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

from .config import BERT4RecConfig


class BERT4RecModule(RetrieverModule):
    """Item ids ``1..N`` (0: padding, N+1: mask), bidirectional attention over non-padding items."""

    def __init__(self, num_items: int, config: BERT4RecConfig) -> None:
        super().__init__(num_items, config.lr, config.weight_decay)
        self.config = config
        self.mask_id = num_items + 1
        self.items = nn.Embedding(num_items + 2, config.hidden, padding_idx=0)
        self.positions = nn.Embedding(config.maxlen, config.hidden)
        self.encoder = TransformerEncoder(config.hidden, config.heads, config.blocks, config.dropout)
        self.dropout = nn.Dropout(config.dropout)
        self.output_bias = nn.Parameter(torch.zeros(num_items))
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        # log-probability of drawing each item as a negative (loss=sampled); set from the training data
        self.register_buffer("log_q", torch.full((num_items,), -math.log(max(num_items, 1))), persistent=False)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(self.config.maxlen - seq.shape[1], self.config.maxlen, device=seq.device)
        x = self.dropout(self.items(seq) + self.positions(positions)[None])
        allowed = (seq != 0)[:, None, :] | torch.eye(seq.shape[1], dtype=torch.bool, device=seq.device)[None]
        return self.encoder(x, allowed[:, None])

    def output_weight(self) -> torch.Tensor:
        """The catalogue's output embeddings ``[num_items, hidden]`` (tied to the input ones)."""
        return self.items.weight[1:self.num_items + 1]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.output_weight().T + self.output_bias

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        # drop the oldest item and append the mask token: "what comes next?"
        seq = torch.cat([queries[:, 1:], torch.full_like(queries[:, :1], self.mask_id)], dim=1)
        return self.logits(self.encode(trim_padding(seq)[0])[:, -1])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (seq,) = trim_padding(batch[0])
        real = seq > 0
        masked = (torch.rand(seq.shape, device=seq.device) < self.config.mask_prob) & real
        last_only = torch.rand(len(seq), device=seq.device) < self.config.last_mask_prob
        masked[last_only] = False
        masked[last_only, -1] = True
        inputs = seq.masked_fill(masked, self.mask_id)
        hidden = self.encode(inputs)[masked]
        targets = seq[masked] - 1
        if self.config.loss == "sampled":
            loss = sampled_softmax(hidden, self.output_weight(), targets, self.log_q, self.config.negatives,
                                   bias=self.output_bias)
        else:
            loss = full_cross_entropy(hidden, self.output_weight(), targets, bias=self.output_bias)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(seq))
        return loss


class BERT4RecRetriever(TrainedRetriever):
    """``palr-run retriever=bert4rec``: one training row per user, masks drawn anew every epoch."""

    config_class = BERT4RecConfig

    log_q: torch.Tensor | None = None

    def prepare(self, data: TrainingData) -> None:
        if self.config.loss == "sampled":
            self.log_q = training_log_q(data.train, data.num_items)

    def build_module(self, num_items: int) -> BERT4RecModule:
        module = BERT4RecModule(num_items, self.config)
        if self.log_q is not None:
            module.log_q.copy_(self.log_q)
        return module

    def training_dataset(self, data: TrainingData, context: RunContext) -> torch.utils.data.Dataset:
        return torch.utils.data.TensorDataset(left_pad(data.train, self.config.maxlen))

    def row_lengths(self, dataset: torch.utils.data.TensorDataset) -> torch.Tensor:
        return (dataset.tensors[0] != PAD).sum(1)  # length-bucketed batches, trimmed to their longest row
