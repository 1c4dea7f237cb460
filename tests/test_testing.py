"""palr_core.testing: the helpers a plugin's own tests use."""

import numpy as np
import pytest
from palr.plugins.identity import IdentityRanker
from palr.plugins.popularity.retriever import PopularityRetriever
from palr.plugins.profiles.generators import KeywordProfiles

from palr_core import InteractionLog, ItemCatalog, RawDataset
from palr_core.testing import (
    check_dataset,
    check_profile_generator,
    check_ranker,
    check_retriever,
    rank_requests,
    tiny_context,
    tiny_data,
)


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


def test_check_retriever_names_the_retriever(tmp_path):
    class NoRetrieve:
        def fit(self, data, context):
            pass

    with pytest.raises(AssertionError, match="NoRetrieve is not a Retriever: it has no retrieve method"):
        check_retriever(NoRetrieve(), tmp_path)


# -- rankers -----------------------------------------------------------------------------------
class ReversedRanker(IdentityRanker):
    """A correct ranker that disagrees with the candidate order: the base of the broken ones below."""

    def rank(self, requests, context):
        return [list(reversed(row)) for row in super().rank(requests, context)]


def test_rank_requests_hold_the_target_among_unseen_candidates_in_popularity_order(tmp_path):
    data = tiny_data()
    requests = rank_requests(data, 20, tiny_context(tmp_path))
    assert len(requests) == len(data.split.test)
    for request, target in zip(requests, data.split.test):
        assert len(request.candidates) == 20 and target in request.candidates
        assert not set(request.candidates.tolist()) & set(request.history.tolist())
        assert (np.diff(request.candidate_scores) <= 0).all()


def test_check_ranker_passes_the_identity_ranker_at_the_candidate_order(tmp_path):
    report = check_ranker(IdentityRanker(), tmp_path)
    assert report["NDCG@10"] == report["candidates NDCG@10"] > 0


def test_check_ranker_accepts_a_subset_of_the_candidates(tmp_path):
    class TopThree(IdentityRanker):
        def rank(self, requests, context):
            return [row[:3] for row in super().rank(requests, context)]

    assert check_ranker(TopThree(), tmp_path)["HR@10"] == check_ranker(IdentityRanker(), tmp_path)["HR@10"]


def test_check_ranker_refuses_one_list_too_few(tmp_path):
    class OneShort(ReversedRanker):
        def rank(self, requests, context):
            return super().rank(requests, context)[:-1]

    with pytest.raises(AssertionError, match="OneShort.rank returned 149 lists for 150 requests"):
        check_ranker(OneShort(), tmp_path)


def test_check_ranker_refuses_an_item_that_is_not_a_candidate(tmp_path):
    class Outsider(ReversedRanker):
        def rank(self, requests, context):
            return [[int(r.history[-1])] + row for r, row in zip(requests, super().rank(requests, context))]

    with pytest.raises(AssertionError, match="Outsider.rank's list for request 0 holds items that are not its candidates"):
        check_ranker(Outsider(), tmp_path)


def test_check_ranker_refuses_a_repeated_item(tmp_path):
    class Stutter(ReversedRanker):
        def rank(self, requests, context):
            return [row[:1] + row for row in super().rank(requests, context)]

    with pytest.raises(AssertionError, match="Stutter.rank's list for request 0 repeats an item"):
        check_ranker(Stutter(), tmp_path)


def test_check_ranker_refuses_a_ranker_that_changes_its_requests(tmp_path):
    class SortsInPlace(ReversedRanker):
        def rank(self, requests, context):
            for request in requests:
                request.candidates.sort()
            return super().rank(requests, context)

    with pytest.raises(AssertionError, match="SortsInPlace.rank changed the history or candidates of request"):
        check_ranker(SortsInPlace(), tmp_path)


def test_check_ranker_refuses_a_ranker_that_ignores_the_seed(tmp_path):
    class Unseeded(ReversedRanker):
        def rank(self, requests, context):
            rng = np.random.default_rng()  # fresh entropy on every call: not reproducible
            return [rng.permutation(row).tolist() for row in super().rank(requests, context)]

    with pytest.raises(AssertionError, match="Unseeded.rank ranked differently on a second call from the same seed"):
        check_ranker(Unseeded(), tmp_path)


def test_check_ranker_passes_profiles_to_the_requests(tmp_path):
    seen = []

    class Reader(IdentityRanker):
        def rank(self, requests, context):
            seen.extend(r.profile for r in requests)
            return super().rank(requests, context)

    check_ranker(Reader(), tmp_path, profiles=KeywordProfiles())
    assert seen and all(p.startswith("The user enjoys") for p in seen)


# -- datasets ----------------------------------------------------------------------------------
def small_raw(users: int = 20, items: int = 12, per_user: int = 6, titles: bool = True) -> RawDataset:
    """Every user interacts with ``per_user`` of ``items`` items, at increasing times."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i), t) for u in range(users) for t, i in enumerate(rng.choice(items, per_user, replace=False))]
    users_, items_, times = (np.array(column) for column in zip(*rows))
    catalog = ItemCatalog(ids=list(range(items)), titles=[f"Item {i}" if titles else "" for i in range(items)])
    return RawDataset(InteractionLog(users_, items_, times), catalog, name="small")


class Loaded:
    """A dataset returning what it is given."""

    def __init__(self, raw) -> None:
        self.raw = raw

    def load(self, context):
        return self.raw


def test_check_dataset_passes_the_synthetic_dataset(tmp_path, registry):
    data = check_dataset(registry.build("dataset", "synthetic", {"users": 60}), tmp_path)
    assert data.data.stats.users == 60 and len(data.split.test) == 60


def test_check_dataset_refuses_what_is_not_a_raw_dataset(tmp_path):
    with pytest.raises(AssertionError, match="Loaded.load returned dict, expected a palr_core.RawDataset"):
        check_dataset(Loaded({"log": []}), tmp_path)


def test_check_dataset_refuses_items_without_titles(tmp_path):
    with pytest.raises(AssertionError, match="Loaded.load's catalogue has items without a title"):
        check_dataset(Loaded(small_raw(titles=False)), tmp_path)


def test_check_dataset_refuses_data_preprocessing_leaves_empty(tmp_path):
    with pytest.raises(AssertionError, match="Loaded.load's data is refused by palr's preprocessing: .*5-core"):
        check_dataset(Loaded(small_raw(per_user=3)), tmp_path)


def test_check_dataset_refuses_a_dataset_that_ignores_the_seed(tmp_path):
    class Reshuffled(Loaded):
        def load(self, context):
            raw = self.raw
            order = np.random.default_rng().permutation(len(raw.log))  # not from the context's seed
            log = InteractionLog(raw.log.users[order], raw.log.items[order], raw.log.timestamps[order])
            return RawDataset(log, raw.catalog, raw.name)

    with pytest.raises(AssertionError, match="Reshuffled.load gave different data on a second load"):
        check_dataset(Reshuffled(small_raw()), tmp_path)


# -- profile generators ------------------------------------------------------------------------
def test_check_profile_generator_passes_the_keyword_profiles(tmp_path):
    profiles = check_profile_generator(KeywordProfiles(), tmp_path, users=5)
    assert len(profiles) == 5 and all(p.startswith("The user enjoys") for p in profiles)


def test_check_profile_generator_refuses_one_profile_too_few(tmp_path):
    class OneShort(KeywordProfiles):
        def generate(self, users, histories, context):
            return super().generate(users, histories, context)[1:]

    with pytest.raises(AssertionError, match="OneShort.generate returned 19 profiles for 20 users"):
        check_profile_generator(OneShort(), tmp_path)


def test_check_profile_generator_refuses_a_profile_that_is_not_text(tmp_path):
    class NoneForEmpty(KeywordProfiles):
        def generate(self, users, histories, context):
            return [None] * len(users)

    with pytest.raises(AssertionError, match="NoneForEmpty.generate returned a profile that is not a string"):
        check_profile_generator(NoneForEmpty(), tmp_path)
