"""NeuMF (He et al. 2017, "Neural Collaborative Filtering"): a GMF and an MLP tower, fused linearly.

For a user ``u`` and an item ``i`` the GMF tower takes the element-wise product ``p_u * q_i`` of
its own embeddings (size ``hidden``); the MLP tower concatenates two other embeddings (size
``mlp_layers[0] / 2`` each) and passes them through ReLU layers ``mlp_layers[1:]``. The two
outputs are concatenated and a linear layer gives the logit ``y_ui``. Training is pointwise, as in
the paper: binary cross-entropy on every training interaction (label 1) and ``num_negatives``
items per interaction drawn uniformly from those the user has not interacted with in training
(label 0; rejection sampling, redrawn every step). This is NeuMF trained jointly from scratch, the
paper's variant without GMF/MLP pre-training; Adam, and the rest (early stopping on validation
NDCG@10, checkpoints, save/load, batched top-K) is :class:`TrainedRetriever`'s.

Full-catalogue scoring never builds a ``[users, items, mlp_layers[0]]`` tensor: the GMF part is a
matrix product (``(p_u * w_gmf) @ Q^T``), the first MLP layer is split into a user half and an
item half computed once per user and once per item, and the remaining layers run on at most
:data:`SCORE_PAIRS` (user, item) pairs at a time (ML-1M: 76 users per chunk, ~33 MB per layer output).

NeuMF is transductive: it has embeddings per training user. :meth:`NCFRetriever.retrieve` recognises
a history as a training user's when it equals that user's training prefix, optionally followed by
one more item (the validation item at test time). Any other history is folded in **in user
space**: its GMF and MLP user embeddings are the average of the training users' embeddings,
each user weighted by how many of the history's last ``maxlen`` items it has in its training
prefix (no shared item: the plain average of all users). User and item embeddings play different
roles in NeuMF, so an average of item embeddings (LightGCN's and BPR's fold-in) would not be a
user embedding here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from palr_core import RunContext, TrainingData
from palr_core.kit.retrievers import RetrieverModule, UserRetriever, interaction_keys, sample_unseen

from .config import NCFConfig

#: most (user, item) pairs whose MLP tower runs at once in full-catalogue scoring
SCORE_PAIRS = 1 << 18


def user_item_matrix(train: Sequence[np.ndarray], num_items: int) -> torch.Tensor:
    """The binary ``[users, items]`` training interaction matrix as a float32 torch CSR tensor."""
    users = np.repeat(np.arange(len(train)), [len(s) for s in train])
    items = np.concatenate(train).astype(np.int64) if len(train) else np.zeros(0, np.int64)
    matrix = sp.coo_matrix((np.ones(len(users), np.float32), (users, items)),
                           shape=(len(train), num_items)).tocsr()
    matrix.data[:] = 1.0  # a user's duplicate item counts once
    matrix = matrix.sorted_indices()
    with warnings.catch_warnings():  # "CSR support is in beta state": CSR @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                       torch.from_numpy(matrix.indices.astype(np.int64)),
                                       torch.from_numpy(matrix.data), matrix.shape)


class NCFModule(RetrieverModule):
    """The two towers and the BCE loss; ``score`` takes ``[user or -1, left-padded history...]`` rows."""

    def __init__(self, num_users: int, num_items: int, keys: torch.Tensor, interactions: torch.Tensor,
                 config: NCFConfig) -> None:
        super().__init__(num_items, config.lr, config.weight_decay)
        self.config = config
        layers = config.mlp_layers
        half = layers[0] // 2
        self.gmf_users = nn.Embedding(num_users, config.hidden)
        self.gmf_items = nn.Embedding(num_items, config.hidden)
        self.mlp_users = nn.Embedding(num_users, half)
        self.mlp_items = nn.Embedding(num_items, half)
        for embedding in (self.gmf_users, self.gmf_items, self.mlp_users, self.mlp_items):
            nn.init.normal_(embedding.weight, std=0.01)  # the paper's N(0, 0.01)
        self.tower = nn.ModuleList(nn.Linear(a, b) for a, b in zip(layers[:-1], layers[1:]))
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden + layers[-1], 1)
        # not buffers (DDP would broadcast them every step; no sparse broadcast); moved on use
        self._keys = keys
        self._interactions = interactions

    # -- the network on (user, item) pairs -----------------------------------------------------
    def _rest_of_tower(self, h: torch.Tensor) -> torch.Tensor:
        """The MLP layers after the first, on its (ReLU'd) output."""
        for layer in self.tower[1:]:
            h = F.relu(layer(self.dropout(h)))
        return h

    def pair_logits(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits ``y_ui`` for equal-shaped user and item index tensors (the paper's forward pass)."""
        gmf = self.gmf_users(users) * self.gmf_items(items)
        mlp = F.relu(self.tower[0](torch.cat([self.mlp_users(users), self.mlp_items(items)], -1)))
        return self.out(torch.cat([gmf, self._rest_of_tower(mlp)], -1)).squeeze(-1)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        users, positives = batch
        if self._keys.device != positives.device:
            self._keys = self._keys.to(positives.device)
        negatives = sample_unseen(users, self._keys, self.num_items, (len(users), self.config.num_negatives))
        items = torch.cat([positives[:, None], negatives], 1)
        logits = self.pair_logits(users[:, None].expand_as(items), items)
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(users))
        return loss

    # -- full-catalogue scoring ------------------------------------------------------------------
    def user_vectors(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """GMF and MLP user embeddings ``[B, hidden]``, ``[B, mlp_layers[0] / 2]``; a ``-1`` row
        is folded in as the overlap-weighted average of the training users' embeddings."""
        known = queries[:, 0] >= 0
        users = queries[:, 0].clamp(min=0)
        gmf, mlp = self.gmf_users(users), self.mlp_users(users)
        if known.all():
            return gmf, mlp
        history = queries[~known, 1:]
        indicator = torch.zeros(len(history), self.num_items + 1, device=history.device)
        indicator.scatter_(1, history, 1.0)
        indicator = indicator[:, 1:]  # column 0 was padding
        if self._interactions.device != indicator.device:
            self._interactions = self._interactions.to(indicator.device)
        with torch.autocast(device_type=indicator.device.type, enabled=False):
            weights = (self._interactions @ indicator.T).T  # [unknown, users]: shared items
        total = weights.sum(1, keepdim=True)
        weights = torch.where(total > 0, weights / total.clamp(min=1), torch.full_like(weights, 1 / weights.shape[1]))
        gmf, mlp = gmf.clone(), mlp.clone()
        gmf[~known] = (weights @ self.gmf_users.weight.float()).to(gmf.dtype)
        mlp[~known] = (weights @ self.mlp_users.weight.float()).to(mlp.dtype)
        return gmf, mlp

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        gmf_user, mlp_user = self.user_vectors(queries)
        half = mlp_user.shape[1]
        first, w_out = self.tower[0], self.out.weight[0]
        hidden = self.gmf_users.weight.shape[1]
        # GMF: (p_u * q_i) . w = (p_u * w) . q_i
        scores = (gmf_user * w_out[:hidden]) @ self.gmf_items.weight.T + self.out.bias
        # first MLP layer, split: W [u; i] + b = (W_u u + b) + W_i i
        user_part = mlp_user @ first.weight[:, :half].T + first.bias  # [B, l1]
        item_part = self.mlp_items.weight @ first.weight[:, half:].T  # [I, l1]
        rows = max(1, SCORE_PAIRS // max(1, self.num_items))
        mlp_scores = []
        for start in range(0, len(user_part), rows):
            h = F.relu(user_part[start:start + rows, None, :] + item_part[None])  # [b, I, l1]
            mlp_scores.append(self._rest_of_tower(h) @ w_out[hidden:])
        return scores + torch.cat(mlp_scores)


class NCFRetriever(UserRetriever):
    """``palr-run retriever=ncf``: each training interaction and ``num_negatives`` negatives per epoch."""

    config_class = NCFConfig

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._keys = torch.zeros(0, dtype=torch.long)
        self._interactions: torch.Tensor | None = None

    def index_users(self, train: Sequence[np.ndarray], num_items: int) -> None:
        super().index_users(train, num_items)
        self._keys = interaction_keys(self.train_prefixes, num_items)
        self._interactions = user_item_matrix(self.train_prefixes, num_items)

    def build_module(self, num_items: int) -> NCFModule:
        return NCFModule(self.num_users, num_items, self._keys, self._interactions, self.config)

    def training_dataset(self, data: TrainingData, context: RunContext) -> torch.utils.data.Dataset:
        return self.interaction_dataset(data)
