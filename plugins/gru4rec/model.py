"""GRU4Rec (Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016)
as a palr Retriever, in its modern full-softmax form.

An item embedding feeds one or more GRU layers; the hidden state after each position is matched
against every item's embedding (the input embedding itself when ``tied``, GRU4Rec's "constrained
embedding"; otherwise a separate output embedding with a bias) and trained with softmax
cross-entropy over the whole catalogue to predict the next item, at every position of each user's
training prefix (``loss=ce``, exact, in chunks of bounded memory; ``loss=sampled``: against
``negatives`` sampled items, logQ-corrected). This follows the later reproducibility work on GRU4Rec (Hidasi & Czapp, RecSys
2023), whose best setting is a cross-entropy loss over (here: all) items, rather than the 2016
paper's session-parallel mini-batches with BPR/TOP1 over in-batch negatives.

Rows are right-padded and packed (``pack_padded_sequence``), so the GRU never reads padding: a
user's scores do not depend on how long the other histories in its batch are. To score a history,
the final hidden state after its most recent item (the last ``maxlen``) is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from palr_core import RunContext, TrainingData
from palr_core.kit.losses import full_cross_entropy, sampled_softmax, training_log_q
from palr_core.kit.retrievers import PAD, RetrieverModule, TrainedRetriever, right_pad

from .config import GRU4RecConfig


class GRU4RecModule(RetrieverModule):
    """Embedding -> GRU -> catalogue scores; item ids in tensors are shifted by +1 (0: padding)."""

    def __init__(self, num_items: int, config: GRU4RecConfig) -> None:
        super().__init__(num_items, config.lr, config.weight_decay)
        self.config = config
        self.items = nn.Embedding(num_items + 1, config.hidden, padding_idx=PAD)
        self.gru = nn.GRU(config.hidden, config.hidden, config.layers, batch_first=True,
                          dropout=config.dropout if config.layers > 1 else 0.0)
        self.dropout = nn.Dropout(config.dropout)
        nn.init.normal_(self.items.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[PAD].zero_()
        if not config.tied:
            self.output = nn.Embedding(num_items, config.hidden)
            self.output_bias = nn.Parameter(torch.zeros(num_items))
            nn.init.normal_(self.output.weight, std=0.02)
        # log-probability of drawing each item as a negative (loss=sampled); set from the training data
        self.register_buffer("log_q", torch.full((num_items,), -math.log(max(num_items, 1))), persistent=False)

    def _packed(self, seq: torch.Tensor, lengths: torch.Tensor):
        """Right-padded ``seq`` ``[B, L]`` with real ``lengths`` (0 allowed: read as one padding step),
        run through the GRU: ``(packed outputs, final hidden state [layers, B, hidden])``."""
        embedded = self.dropout(self.items(seq))
        packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        return self.gru(packed)

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The top layer's output after every position, ``[B, L, hidden]`` (zeros past each length)."""
        outputs, _ = self._packed(seq, lengths)
        return nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=seq.shape[1])[0]

    def output_weights(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The catalogue's output embeddings ``[num_items, hidden]`` and bias (``None`` when tied)."""
        if self.config.tied:
            return self.items.weight[1:], None
        return self.output.weight, self.output_bias

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over the catalogue ``[..., num_items]`` for GRU outputs ``[..., hidden]``."""
        weight, bias = self.output_weights()
        logits = self.dropout(hidden) @ weight.T
        return logits if bias is None else logits + bias

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        """A query row is ``[length, item, ..., item, PAD, ...]`` (:meth:`GRU4RecRetriever.queries`)."""
        lengths, seq = queries[:, 0], queries[:, 1:]
        seq = seq[:, :max(1, int(lengths.max()))]
        _, final = self._packed(seq, lengths)
        return self.logits(final[-1])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        seq, lengths = batch  # maxlen + 1 items per row: inputs are all but the last, targets all but the first
        seq = seq[:, :max(2, int(lengths.max()))]  # drop the columns that are padding in every row
        hidden = self.encode(seq[:, :-1], lengths - 1)
        targets = seq[:, 1:]
        real = targets != PAD
        hidden, targets = self.dropout(hidden[real]), targets[real] - 1
        weight, bias = self.output_weights()
        if self.config.loss == "sampled":
            loss = sampled_softmax(hidden, weight, targets, self.log_q, self.config.negatives, bias=bias)
        else:
            loss = full_cross_entropy(hidden, weight, targets, bias=bias)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(seq))
        return loss


class GRU4RecRetriever(TrainedRetriever):
    """``palr-run retriever=gru4rec``: one training row per user (its last ``maxlen + 1`` items)."""

    config_class = GRU4RecConfig

    log_q: torch.Tensor | None = None

    def prepare(self, data: TrainingData) -> None:
        if self.config.loss == "sampled":
            self.log_q = training_log_q(data.train, data.num_items)

    def build_module(self, num_items: int) -> GRU4RecModule:
        module = GRU4RecModule(num_items, self.config)
        if self.log_q is not None:
            module.log_q.copy_(self.log_q)
        return module

    def training_dataset(self, data: TrainingData, context: RunContext) -> torch.utils.data.Dataset:
        return torch.utils.data.TensorDataset(*right_pad(data.train, self.config.maxlen + 1))

    def row_lengths(self, dataset: torch.utils.data.TensorDataset) -> torch.Tensor:
        return dataset.tensors[1]  # batches of similar length: little padding after trimming

    def queries(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        seq, lengths = right_pad(histories, self.config.maxlen)
        return torch.cat([lengths[:, None], seq], dim=1)
