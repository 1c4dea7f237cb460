"""NeuMF: learning on synthetic data, batched full-catalogue scoring, negatives, save/load, masking, fold-in."""

import numpy as np
import pytest
import torch
from palr.plugins.ncf import model as ncf_model
from palr.plugins.ncf.model import NCFRetriever

from palr_core.kit.retrievers import interaction_keys, sample_unseen
from palr_core.testing import check_retriever

TINY = dict(hidden=8, mlp_layers=[16, 8], lr=0.01, batch_size=512)


@pytest.mark.slow
def test_ncf_beats_popularity_on_default_synthetic_data(default_synthetic, tmp_path):
    ncf = NCFRetriever(lr=5e-3, max_epochs=40, patience=10)
    report = check_retriever(ncf, tmp_path, default_synthetic)
    # measured: 0.140 vs 0.081
    assert report["NDCG@10"] > 1.4 * report["popularity NDCG@10"]


def test_full_catalogue_scores_equal_the_pairwise_forward_pass(training_data, run_context, small_split,
                                                               monkeypatch):
    """The split first layer, the GMF matrix product and the user chunks change nothing."""
    ncf = NCFRetriever(**{**TINY, "mlp_layers": [16, 8, 4]}, max_epochs=1)
    ncf.fit(training_data, run_context)
    module = ncf.module.eval()
    monkeypatch.setattr(ncf_model, "SCORE_PAIRS", 3 * module.num_items)  # 3 users per chunk
    queries = ncf.queries(small_split.histories("test")[:20])
    users = queries[:, :1].expand(-1, module.num_items)
    items = torch.arange(module.num_items).expand(len(queries), -1)
    with torch.no_grad():
        torch.testing.assert_close(module.score(queries), module.pair_logits(users, items))


def test_negatives_are_drawn_from_the_items_the_user_has_not_seen():
    num_items = 10
    keys = interaction_keys([np.arange(8), np.array([3])], num_items)  # user 0 has seen all but 8, 9
    negatives = sample_unseen(torch.tensor([0] * 500 + [1] * 500), keys, num_items, (1000, 4))
    assert negatives.shape == (1000, 4)
    assert set(negatives[:500].flatten().tolist()) == {8, 9}
    assert set(negatives[500:].flatten().tolist()) == set(range(10)) - {3}


def test_the_retriever_contract_holds(tmp_path):
    """palr_core.testing's check: shapes, catalogue ids, no repeats, never a history item, best first."""
    check_retriever(NCFRetriever(**TINY, max_epochs=1), tmp_path, k=50)

def test_save_and_load_give_identical_scores(training_data, run_context, small_split):
    ncf = NCFRetriever(**TINY, max_epochs=2)
    ncf.fit(training_data, run_context)
    loaded = NCFRetriever.load(run_context.work_dir / "retriever")
    assert loaded.config.mlp_layers == [16, 8]
    histories = [*small_split.histories("test"), np.array([3, 1, 4])]  # the last one folded in
    assert torch.equal(ncf.score(histories), loaded.score(histories))
    assert np.array_equal(ncf.retrieve(histories, 10)[0], loaded.retrieve(histories, 10)[0])


def test_unknown_history_is_folded_in_as_the_overlap_weighted_mean_user(training_data, run_context):
    ncf = NCFRetriever(**TINY, max_epochs=1)
    ncf.fit(training_data, run_context)
    known, unknown, empty = training_data.train[0], np.array([3, 1, 4]), np.zeros(0, dtype=np.int64)
    # a training prefix, optionally plus one item (the validation item at test time), is that user's;
    # the prefix cut short or extended by two items is not
    extended = [np.r_[known, 7], known[:-1], np.r_[known, 7, 8]]
    assert ncf.queries(extended)[:, 0].tolist() == [0, -1, -1]
    queries = ncf.queries([known, unknown, empty])
    assert queries[:, 0].tolist() == [0, -1, -1]
    shared = np.array([len(set(s.tolist()) & {3, 1, 4}) for s in training_data.train], dtype=np.float32)
    weights = torch.from_numpy(shared / shared.sum())
    gmf, mlp = (t.detach() for t in ncf.module.user_vectors(queries))
    users_gmf, users_mlp = ncf.module.gmf_users.weight.detach(), ncf.module.mlp_users.weight.detach()
    torch.testing.assert_close(gmf[0], users_gmf[0])
    torch.testing.assert_close(gmf[1], weights @ users_gmf)
    torch.testing.assert_close(mlp[1], weights @ users_mlp)
    torch.testing.assert_close(gmf[2], users_gmf.mean(0))  # nothing shared: the average user
    assert torch.isfinite(ncf.score([unknown, empty])).all()


def test_options_are_checked(registry):
    with pytest.raises(ValueError, match="retriever ncf: mlp_layers.*even"):
        NCFRetriever(mlp_layers=[63, 16])
    with pytest.raises(ValueError, match="retriever ncf: mlp_layers needs at least two"):
        NCFRetriever(mlp_layers=[64])
    with pytest.raises(ValueError, match="retriever.num_negatives"):
        NCFRetriever(num_negatives=0)
    retriever = registry.build("retriever", "ncf", {"mlp_layers": [32, 16], "num_negatives": 2})
    assert isinstance(retriever, NCFRetriever)
    assert (retriever.config.mlp_layers, retriever.config.num_negatives) == ([32, 16], 2)
