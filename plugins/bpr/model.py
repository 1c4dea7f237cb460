"""BPR-MF (Rendle et al. 2009, "BPR: Bayesian Personalized Ranking from Implicit Feedback").

Matrix factorisation: a user embedding ``p_u`` and an item embedding ``q_i`` (plus, by default, an
item bias ``b_i``) score ``x_ui = p_u . q_i + b_i``. Training maximises ``log sigmoid(x_ui - x_uj)``
over triples of a user, an item of the user's training prefix and a negative ``j`` drawn uniformly
from the items the user has **not** interacted with in training (rejection sampling against the
sorted ``user * num_items + item`` keys of the training interactions, redrawn until no negative
is a positive; after :data:`palr_core.kit.retrievers.MAX_REDRAWS` rounds, vanishingly rare, a leftover collision is kept),
with an L2 penalty ``reg`` on the batch's parameters. One triple per training interaction and
epoch, fresh negatives every step; Adam; the rest (early stopping on validation NDCG@10,
checkpoints, save/load, batched full-catalogue top-K) is :class:`TrainedRetriever`'s.

BPR-MF is transductive: it has an embedding per training user. :meth:`BPRRetriever.retrieve`
recognises a history as a training user's when it equals that user's training prefix, optionally
followed by one more item (the validation item at test time); any other history is folded in as
the mean of the embeddings of its last ``maxlen`` items (so ``x_uj`` becomes the mean item-item
similarity ``q_i . q_j`` plus ``b_j``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from palr_core import RunContext, TrainingData
from palr_core.kit.retrievers import RetrieverModule, UserRetriever, interaction_keys, sample_unseen

from .config import BPRConfig


class BPRModule(RetrieverModule):
    """Embeddings, biases and the BPR loss; ``score`` takes ``[user or -1, left-padded history...]`` rows."""

    def __init__(self, num_users: int, num_items: int, keys: torch.Tensor, config: BPRConfig) -> None:
        super().__init__(num_items, config.lr, config.weight_decay)
        self.config = config
        self.users = nn.Embedding(num_users, config.hidden)
        self.items = nn.Embedding(num_items, config.hidden)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        self.bias = nn.Parameter(torch.zeros(num_items)) if config.item_bias else None
        # not a buffer (DDP would broadcast it every step); moved to the device on use
        self._keys = keys

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        users, positives = batch
        if self._keys.device != positives.device:
            self._keys = self._keys.to(positives.device)
        negatives = sample_unseen(users, self._keys, self.num_items, tuple(positives.shape))
        u, i, j = self.users(users), self.items(positives), self.items(negatives)
        margin = (u * (i - j)).sum(-1)
        penalty = u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()
        if self.bias is not None:
            margin = margin + self.bias[positives] - self.bias[negatives]
            penalty = penalty + self.bias[positives].pow(2).sum() + self.bias[negatives].pow(2).sum()
        loss = -F.logsigmoid(margin).mean() + self.config.reg * penalty / (2 * len(users))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(users))
        return loss

    def user_vectors(self, queries: torch.Tensor) -> torch.Tensor:
        """``[B, hidden]``: the user's embedding, or for ``-1`` the mean embedding of the history's items."""
        known = queries[:, 0] >= 0
        history = queries[:, 1:]
        present = (history > 0).to(self.items.weight.dtype)
        folded = (self.items.weight[(history - 1).clamp(min=0)] * present[..., None]).sum(1)
        folded = folded / present.sum(1, keepdim=True).clamp(min=1)
        return torch.where(known[:, None], self.users(queries[:, 0].clamp(min=0)), folded)

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        scores = self.user_vectors(queries) @ self.items.weight.T
        return scores + self.bias if self.bias is not None else scores


class BPRRetriever(UserRetriever):
    """``palr-run retriever=bpr``: one BPR triple per training interaction and epoch."""

    config_class = BPRConfig

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._keys = torch.zeros(0, dtype=torch.long)

    def index_users(self, train: Sequence[np.ndarray], num_items: int) -> None:
        super().index_users(train, num_items)
        self._keys = interaction_keys(self.train_prefixes, num_items)

    def build_module(self, num_items: int) -> BPRModule:
        return BPRModule(self.num_users, num_items, self._keys, self.config)

    def training_dataset(self, data: TrainingData, context: RunContext) -> torch.utils.data.Dataset:
        return self.interaction_dataset(data)
