"""LightGCN: the normalised graph, learning on synthetic data, save/load, history masking."""

import numpy as np
import pytest
import torch
from palr.plugins.lightgcn.config import LightGCNConfig
from palr.plugins.lightgcn.model import LightGCNModule, LightGCNRetriever, normalized_adjacency

from palr_core.testing import check_retriever

TINY = dict(hidden=16, layers=2, lr=0.01, batch_size=512)


def test_adjacency_is_symmetric_and_degree_normalised():
    adjacency = normalized_adjacency([np.array([0, 1]), np.array([1])], num_items=3)
    dense = adjacency.toarray()
    assert np.allclose(dense, dense.T)
    # user 0 (degree 2) - item 1 (degree 2): 1/sqrt(2*2); item 2 has no edge
    assert dense[0, 2 + 1] == pytest.approx(0.5)
    assert dense[:, 2 + 2].sum() == 0


def test_propagation_and_its_gradient_equal_the_dense_computation():
    """The CSR propagation with a hand-written (symmetric) backward against dense autograd."""
    train = [np.array([0, 1, 2]), np.array([1, 3]), np.array([2, 3, 4, 0])]
    config = LightGCNConfig(hidden=4, layers=2)
    module = LightGCNModule(len(train), 5, normalized_adjacency(train, 5), config)
    dense = torch.from_numpy(normalized_adjacency(train, 5).toarray())
    weights = torch.cat([module.users.weight, module.items.weight]).detach()
    layer = reference = weights.clone().requires_grad_(True)
    total = layer
    for _ in range(config.layers):
        layer = dense @ layer
        total = total + layer
    (total / (config.layers + 1)).pow(2).sum().backward()
    users, items = module.propagate()
    torch.testing.assert_close(torch.cat([users, items]), (total / (config.layers + 1)).detach())
    torch.cat([users, items]).pow(2).sum().backward()
    grad = torch.cat([module.users.weight.grad, module.items.weight.grad])
    torch.testing.assert_close(grad, reference.grad)


@pytest.mark.slow
def test_lightgcn_beats_popularity_on_default_synthetic_data(default_synthetic, tmp_path):
    lightgcn = LightGCNRetriever(hidden=32, layers=2, lr=0.03, batch_size=512, reg=1e-3, max_epochs=15,
                                 patience=None)
    report = check_retriever(lightgcn, tmp_path, default_synthetic)
    # measured: 0.140 vs 0.081
    assert report["NDCG@10"] > 1.3 * report["popularity NDCG@10"]


def test_lightgcn_save_load_and_masking(training_data, run_context, small_split):
    lightgcn = LightGCNRetriever(**TINY, max_epochs=1)
    lightgcn.fit(training_data, run_context)
    loaded = LightGCNRetriever.load(run_context.work_dir / "retriever")
    histories = small_split.histories("test")
    assert torch.equal(lightgcn.score(histories), loaded.score(histories))
    ids, _ = loaded.retrieve(histories, 30)
    assert all(not set(h.tolist()) & set(row.tolist()) for h, row in zip(histories, ids))


def test_a_lightgcn_saved_by_palr_0_2_still_loads(training_data, run_context, small_split):
    """palr 0.2 saved LightGCN's training prefixes as one tensor per user ("train")."""
    lightgcn = LightGCNRetriever(**TINY, max_epochs=1)
    lightgcn.fit(training_data, run_context)
    file = run_context.work_dir / "retriever" / "retriever.pt"
    state = torch.load(file, weights_only=True)
    state["extra"] = {"train": [torch.from_numpy(np.asarray(s, dtype=np.int64)) for s in training_data.train]}
    torch.save(state, file)
    loaded = LightGCNRetriever.load(file.parent)
    histories = small_split.histories("test")
    assert torch.equal(lightgcn.score(histories), loaded.score(histories))
    assert loaded.known_user(training_data.train[5]) == 5


def test_scores_come_from_the_weights_loaded_last(training_data, run_context, small_split):
    """Restoring the best checkpoint after training must not leave the last epoch's propagated
    embeddings cached: scores follow load_state_dict."""
    lightgcn = LightGCNRetriever(**TINY, max_epochs=1)
    lightgcn.fit(training_data, run_context)
    histories = small_split.histories("test")[:20]
    before = lightgcn.score(histories)  # fills the cache
    doubled = {key: 2 * value for key, value in lightgcn.module.state_dict().items()}
    lightgcn.module.load_state_dict(doubled)
    # propagation is linear: user and item embeddings both double, their dot products quadruple
    torch.testing.assert_close(lightgcn.score(histories), 4 * before)


def test_unknown_history_is_folded_in(training_data, run_context):
    lightgcn = LightGCNRetriever(**TINY, max_epochs=1)
    lightgcn.fit(training_data, run_context)
    known, unknown = training_data.train[0], np.array([3, 1, 4])
    assert lightgcn.queries([known, unknown])[:, 0].tolist() == [0, -1]
    assert torch.isfinite(lightgcn.score([unknown])).all()
