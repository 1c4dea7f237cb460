"""Caser (Tang & Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence
Embedding", WSDM 2018) as a palr Retriever.

The embeddings of a user's last ``L`` items (``maxlen``, default 5) form an ``L x d`` "image".
Horizontal filters of every height ``h = 1..L`` (``n_h`` each, ReLU, max-pooled over time) capture
union-level patterns of ``h`` consecutive items; ``n_v`` vertical filters (``L x 1``, no activation)
are learned weighted sums of the ``L`` embeddings (point-level patterns). Their outputs are
concatenated, passed through dropout and a fully connected ReLU layer to ``d`` units, concatenated
with the user's embedding ``P_u`` and scored against a separate output embedding of every item
(``2d`` wide) plus a per-item bias, as in the paper.

Training: one window per training interaction (the ``L`` items before it, zero-padded at the
start of a sequence) and, unlike the paper's binary cross-entropy with 3 sampled negatives per
target, softmax cross-entropy over the whole catalogue, averaged over the window's next ``T``
items (``targets``; default 1, the next item only). Full-catalogue cross-entropy is the stronger
choice for the full-catalogue ranking palr evaluates (the same choice as palr's SASRec default).

Caser is partly transductive: ``P_u`` exists only for training users. :meth:`CaserRetriever.queries`
recognises a history as a training user's when it equals that user's training prefix, optionally
followed by one more item (the validation item at test time), as ``palr.plugins.lightgcn`` does; any
other history gets the mean of the training users' embeddings (the "average user"), so its scores
come from the sequence alone plus a user-independent offset. ``user_embedding=false`` drops
``P_u`` altogether (a purely sequential model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from palr_core import RunContext, TrainingData
from palr_core.kit.retrievers import PAD, RetrieverModule, UserRetriever

from .config import CaserConfig


def training_windows(train: Sequence[np.ndarray], window: int, targets: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per training interaction after a sequence's first: ``(users [N], windows [N, window],
    next items [N, targets])``, ids shifted by +1 with ``0`` for padding (before a sequence's start,
    or past its end in the targets)."""
    users, windows, nexts = [], [], []
    for user, seq in enumerate(train):
        n = len(seq)
        if n < 2:
            continue
        padded = np.concatenate([np.zeros(window, np.int64), np.asarray(seq, np.int64) + 1,
                                 np.zeros(targets - 1, np.int64)])
        # the item at sequence index t (t = 1..n-1) sits at padded[window + t]
        windows.append(np.lib.stride_tricks.sliding_window_view(padded[:window + n - 1], window)[1:])
        nexts.append(np.lib.stride_tricks.sliding_window_view(padded[window:], targets)[1:n])
        users.append(np.full(n - 1, user, np.int64))
    if not users:
        return np.zeros(0, np.int64), np.zeros((0, window), np.int64), np.zeros((0, targets), np.int64)
    return np.concatenate(users), np.concatenate(windows), np.concatenate(nexts)


class CaserModule(RetrieverModule):
    """Convolutions over the last ``L`` item embeddings; ``score`` takes ``[user or -1, window...]`` rows."""

    def __init__(self, num_users: int, num_items: int, config: CaserConfig) -> None:
        super().__init__(num_items, config.lr, config.weight_decay)
        self.config = config
        d, length = config.hidden, config.maxlen
        self.items = nn.Embedding(num_items + 1, d, padding_idx=PAD)
        self.users = nn.Embedding(max(num_users, 1), d) if config.user_embedding else None
        self.vertical = nn.Conv2d(1, config.n_v, (length, 1)) if config.n_v else None
        self.horizontal = nn.ModuleList(nn.Conv2d(1, config.n_h, (h, d)) for h in range(1, length + 1)
                                        if config.n_h)
        self.fc = nn.Linear(config.n_v * d + config.n_h * length, d)
        self.dropout = nn.Dropout(config.dropout)
        out = 2 * d if config.user_embedding else d
        self.output = nn.Embedding(num_items, out)
        self.output_bias = nn.Parameter(torch.zeros(num_items))
        # the paper's initialisation: N(0, 1/dim) embeddings, zero output bias
        nn.init.normal_(self.items.weight, std=1.0 / d)
        with torch.no_grad():
            self.items.weight[PAD].zero_()
        if self.users is not None:
            nn.init.normal_(self.users.weight, std=1.0 / d)
        nn.init.normal_(self.output.weight, std=1.0 / out)

    def represent(self, users: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """``[z; P_u]`` for user ids (``-1``: unknown) and left-padded windows ``[B, L]``."""
        image = self.items(windows)[:, None]  # [B, 1, L, d]
        parts = []
        if self.vertical is not None:
            parts.append(self.vertical(image).flatten(1))  # [B, n_v * d]
        for conv in self.horizontal:  # height h: [B, n_h, L - h + 1], max over time
            parts.append(F.relu(conv(image).squeeze(3)).amax(2))
        z = F.relu(self.fc(self.dropout(torch.cat(parts, 1))))
        if self.users is None:
            return z
        known = users >= 0
        user = self.users(users.clamp(min=0))
        if not bool(known.all()):  # the "average user" for a history that is no training user's
            user = torch.where(known[:, None], user, self.users.weight.mean(0)[None])
        return torch.cat([z, user], 1)

    def logits(self, users: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        return self.represent(users, windows) @ self.output.weight.T + self.output_bias

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        return self.logits(queries[:, 0], queries[:, 1:])

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        users, windows, targets = batch
        log_probs = F.log_softmax(self.logits(users, windows).float(), dim=-1)
        real = targets != PAD
        loss = -log_probs.gather(1, (targets - 1).clamp(min=0))[real].mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(users))
        return loss


class CaserRetriever(UserRetriever):
    """``palr-run retriever=caser``: one training window per training interaction, user embeddings
    for training users (recognised by their training prefix)."""

    config_class = CaserConfig

    def build_module(self, num_items: int) -> CaserModule:
        return CaserModule(self.num_users, num_items, self.config)

    def training_dataset(self, data: TrainingData, context: RunContext) -> torch.utils.data.Dataset:
        users, windows, targets = training_windows(data.train, self.config.maxlen, self.config.targets)
        return torch.utils.data.TensorDataset(torch.from_numpy(users), torch.from_numpy(windows),
                                              torch.from_numpy(targets))
