"""LightGCN (He et al. 2020): embeddings propagated over the user-item graph, BPR loss, layer mean.

The symmetrically normalised adjacency ``D^-1/2 A D^-1/2`` of the bipartite graph is built once
with scipy.sparse from the training prefixes and applied as a torch CSR tensor. Every training step
propagates the whole graph, so that product dominates the cost: because the matrix is symmetric its
backward is the same product (:class:`_SymmetricPropagation`), which saves autograd a transposed
copy of the matrix per layer and step (a first ML-1M epoch: 70 s instead of 242 s, one thread).

LightGCN is transductive: it has an embedding per training user. :meth:`retrieve` recognises a
history as a training user's when it equals that user's training prefix, optionally followed by
one more item (the validation item at test time); any other history is folded in as the mean
of its items' propagated embeddings.
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

from .config import LightGCNConfig


def normalized_adjacency(train: Sequence[np.ndarray], num_items: int) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` over users ``0..U-1`` then items ``U..U+I-1`` (isolated nodes stay 0)."""
    num_users = len(train)
    users = np.repeat(np.arange(num_users), [len(s) for s in train])
    items = np.concatenate(train).astype(np.int64) + num_users if num_users else np.zeros(0, np.int64)
    n = num_users + num_items
    adjacency = sp.coo_matrix((np.ones(2 * len(users), dtype=np.float32),
                               (np.r_[users, items], np.r_[items, users])), shape=(n, n)).tocsr()
    adjacency.data[:] = 1.0  # a user's duplicate item counts once
    degree = np.asarray(adjacency.sum(1)).ravel()
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-12)), 0.0).astype(np.float32)
    scale = sp.diags(inv_sqrt)
    return (scale @ adjacency @ scale).tocsr()


def _to_torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    matrix = matrix.astype(np.float32).sorted_indices()
    with warnings.catch_warnings():  # "CSR support is in beta state": CSR @ dense is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(matrix.indptr.astype(np.int64)),
                                       torch.from_numpy(matrix.indices.astype(np.int64)),
                                       torch.from_numpy(matrix.data), matrix.shape)


class _SymmetricPropagation(torch.autograd.Function):
    """``adjacency @ x`` for a symmetric sparse ``adjacency``: the gradient is ``adjacency @ grad``.

    Computed in the adjacency's dtype (float32) with autocast off: sparse CSR products have no
    bf16 kernel on CPU, and under ``bf16-mixed`` autocast would cast both operands to it.
    """

    @staticmethod
    def forward(ctx, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.adjacency = adjacency
        return _product(adjacency, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, _product(ctx.adjacency, grad)


def _product(adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(device_type=x.device.type, enabled=False):
        return adjacency @ x.to(adjacency.dtype)


class LightGCNModule(RetrieverModule):
    """Embeddings, propagation and BPR; ``score`` takes ``[user or -1, left-padded history...]`` rows."""

    def __init__(self, num_users: int, num_items: int, adjacency: sp.csr_matrix, config: LightGCNConfig,
                 keys: torch.Tensor | None = None):
        super().__init__(num_items, config.lr, config.weight_decay)
        self.config = config
        self.num_users = num_users
        self.users = nn.Embedding(num_users, config.hidden)
        self.items = nn.Embedding(num_items, config.hidden)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        # not a buffer: DDP would try to broadcast a sparse tensor; moved to the device on use
        self._adjacency = _to_torch_csr(adjacency)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        # the training interactions' keys, for negatives the user has not seen (as BPR-MF draws them)
        self._keys = keys if keys is not None else torch.zeros(0, dtype=torch.long)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final (layer-mean) user and item embeddings."""
        if self._adjacency.device != self.device:
            self._adjacency = self._adjacency.to(self.device)
        layer = torch.cat([self.users.weight, self.items.weight])
        total = layer
        for _ in range(self.config.layers):
            layer = _SymmetricPropagation.apply(self._adjacency, layer)
            total = total + layer
        final = total / (self.config.layers + 1)
        return final[:self.num_users], final[self.num_users:]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        self._cache = None
        users, positives = batch
        if self._keys.device != positives.device:
            self._keys = self._keys.to(positives.device)
        negatives = sample_unseen(users, self._keys, self.num_items, tuple(positives.shape))
        user_final, item_final = self.propagate()
        u = user_final[users]
        margin = (u * item_final[positives]).sum(-1) - (u * item_final[negatives]).sum(-1)
        ego = (self.users(users).pow(2).sum() + self.items(positives).pow(2).sum()
               + self.items(negatives).pow(2).sum()) / 2
        loss = -F.logsigmoid(margin).mean() + self.config.reg * ego / len(users)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(users))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._cache = None

    def load_state_dict(self, *args, **kwargs):
        """New weights (the best checkpoint restored after training, a saved model) invalidate the
        propagated embeddings that ``score`` caches."""
        self._cache = None
        return super().load_state_dict(*args, **kwargs)

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        if self._cache is None or self.training:
            self._cache = tuple(t.detach() for t in self.propagate())
        user_final, item_final = self._cache
        known = queries[:, 0] >= 0
        history = queries[:, 1:]
        # fold-in: mean of the propagated embeddings of the history's items
        present = (history > 0).float()
        folded = (item_final[(history - 1).clamp(min=0)] * present[..., None]).sum(1)
        folded = folded / present.sum(1, keepdim=True).clamp(min=1)
        user = torch.where(known[:, None], user_final[queries[:, 0].clamp(min=0)], folded)
        return user @ item_final.T


class LightGCNRetriever(UserRetriever):
    """``palr-run retriever=lightgcn``: one BPR example per training interaction and epoch."""

    config_class = LightGCNConfig

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self._adjacency: sp.csr_matrix | None = None

    def index_users(self, train: Sequence[np.ndarray], num_items: int) -> None:
        super().index_users(train, num_items)
        self._adjacency = normalized_adjacency(self.train_prefixes, num_items)

    def build_module(self, num_items: int) -> LightGCNModule:
        return LightGCNModule(self.num_users, num_items, self._adjacency, self.config,
                              interaction_keys(self.train_prefixes, num_items))

    def training_dataset(self, data: TrainingData, context: RunContext) -> torch.utils.data.Dataset:
        return self.interaction_dataset(data)
