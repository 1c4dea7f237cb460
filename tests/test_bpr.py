"""BPR-MF: learning on synthetic data, negatives outside the training items, save/load, masking, fold-in."""

import numpy as np
import pytest
import torch
from palr.plugins.bpr.model import BPRRetriever

from palr_core.kit.retrievers import interaction_keys, sample_unseen
from palr_core.testing import check_retriever

TINY = dict(hidden=16, lr=0.01, batch_size=512)


@pytest.mark.slow
def test_bpr_beats_popularity_on_default_synthetic_data(default_synthetic, tmp_path):
    bpr = BPRRetriever(hidden=32, lr=3e-2, max_epochs=12, patience=None)
    report = check_retriever(bpr, tmp_path, default_synthetic)
    # measured: 0.125 vs 0.081
    assert report["NDCG@10"] > 1.4 * report["popularity NDCG@10"]


def test_negatives_are_drawn_uniformly_from_the_items_the_user_has_not_seen():
    num_items = 10
    train = [np.arange(8), np.array([3])]  # user 0 has seen all but items 8 and 9
    keys = interaction_keys(train, num_items)
    users = torch.tensor([0] * 2000 + [1] * 2000)
    negatives = sample_unseen(users, keys, num_items, (len(users),))
    assert set(negatives[:2000].tolist()) == {8, 9}
    assert 3 not in negatives[2000:].tolist()
    counts = np.bincount(negatives[2000:].numpy(), minlength=num_items)
    assert np.delete(counts, 3).min() > 2000 / 9 * 0.7  # every other item, about equally often


def test_the_retriever_contract_holds(tmp_path):
    """palr_core.testing's check: shapes, catalogue ids, no repeats, never a history item, best first."""
    check_retriever(BPRRetriever(**TINY, max_epochs=1), tmp_path, k=50)

def test_save_and_load_give_identical_scores(training_data, run_context, small_split):
    bpr = BPRRetriever(**TINY, max_epochs=2)
    bpr.fit(training_data, run_context)
    loaded = BPRRetriever.load(run_context.work_dir / "retriever")
    histories = small_split.histories("test")
    assert torch.equal(bpr.score(histories), loaded.score(histories))
    assert np.array_equal(bpr.retrieve(histories, 10)[0], loaded.retrieve(histories, 10)[0])
    # the loaded one still recognises the training users
    assert loaded.queries(histories)[:, 0].tolist() == list(range(len(histories)))


def test_a_known_user_scores_dot_product_plus_item_bias(training_data, run_context, small_split):
    bpr = BPRRetriever(**TINY, max_epochs=2)
    bpr.fit(training_data, run_context)
    module = bpr.module
    assert module.bias.abs().sum() > 0  # the bias was trained
    expected = module.users.weight[3] @ module.items.weight.T + module.bias
    torch.testing.assert_close(bpr.score([small_split.histories("test")[3]])[0], expected.detach())


def test_unknown_history_is_folded_in(training_data, run_context):
    bpr = BPRRetriever(**TINY, max_epochs=1)
    bpr.fit(training_data, run_context)
    known, unknown = training_data.train[0], np.array([3, 1, 4])
    # a training prefix, optionally plus one item (the validation item at test time), is that user's;
    # the prefix cut short or extended by two items is not
    extended = [np.r_[known, 7], known[:-1], np.r_[known, 7, 8]]
    assert bpr.queries(extended)[:, 0].tolist() == [0, -1, -1]
    queries = bpr.queries([known, unknown])
    assert queries[:, 0].tolist() == [0, -1]
    items = bpr.module.items.weight.detach()
    torch.testing.assert_close(bpr.module.user_vectors(queries)[1].detach(), items[[3, 1, 4]].mean(0))
    scores = bpr.score([unknown, np.array([5, 9])])
    assert torch.isfinite(scores).all() and not torch.equal(scores[0], scores[1])


def test_options_are_checked():
    with pytest.raises(ValueError, match="retriever bpr: item_bias"):
        BPRRetriever(item_bias="yes")
    with pytest.raises(ValueError, match="retriever.dropout"):
        BPRRetriever(dropout=0.2)


def test_bpr_is_registered(registry):
    retriever = registry.build("retriever", "bpr", {"hidden": 8, "item_bias": False})
    assert isinstance(retriever, BPRRetriever)
    assert (retriever.config.hidden, retriever.config.item_bias) == (8, False)
