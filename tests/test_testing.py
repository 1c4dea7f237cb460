"""palr_core.testing: the helpers a plugin's own tests use."""

import pytest
from palr.plugins.popularity.retriever import PopularityRetriever

from palr_core.testing import check_retriever, tiny_context, tiny_data


def test_tiny_data_is_split_as_a_run_splits_it():
    data = tiny_data()
    assert data.data.stats.users == 150 and len(data.split.train) == 150
    assert data.training.num_items == len(data.catalog)
    assert all(len(t) + 2 == len(s) for t, s in zip(data.split.train, data.data.sequences))


def test_tiny_context_puts_everything_under_one_folder(tmp_path):
    context = tiny_context(tmp_path, max_epochs=2)
    assert (context.work_dir, context.cache_dir) == (tmp_path / "run", tmp_path / "cache")
    assert context.trainer.max_epochs == 2 and not context.trainer.enable_progress_bar


def test_check_retriever_passes_a_correct_retriever(tmp_path):
    report = check_retriever(PopularityRetriever(), tmp_path)
    assert report["NDCG@10"] == pytest.approx(report["popularity NDCG@10"])


def test_check_retriever_catches_a_history_item(tmp_path):
    class Leaky(PopularityRetriever):
        def retrieve(self, histories, k):
            ids, scores = super().retrieve(histories, k)
            ids[:, 0] = [h[-1] for h in histories]  # the last watched item, "recommended" again
            return ids, scores

    with pytest.raises(AssertionError, match="history item"):
        check_retriever(Leaky(), tmp_path)


def test_check_retriever_catches_a_wrong_shape(tmp_path):
    class Short(PopularityRetriever):
        def retrieve(self, histories, k):
            ids, scores = super().retrieve(histories, k)
            return ids[:, :-1], scores[:, :-1]

    with pytest.raises(AssertionError, match=r"shaped \(150, 9\), expected \(150, 10\)"):
        check_retriever(Short(), tmp_path)
