"""From users to ranked lists: requests built once, a ranker's answer checked against the contract."""

from __future__ import annotations

import pytest

from palr_core import EvalConfig, PalrConfig
from palr_core.pipeline import Components, tune_ranker
from palr_core.ranking import RankingError, candidate_count, candidate_requests, rank_candidates
from palr_core.testing import tiny_context, tiny_data


class Answer:
    """A ranker that answers whatever it is told to (to break the contract on purpose)."""

    def __init__(self, answer):
        self.answer = answer

    def fit(self, data, context):
        pass

    def rank(self, requests, context):
        return self.answer([list(r.candidates[::-1]) for r in requests])


@pytest.fixture(scope="module")
def requests(tmp_path_factory, registry):
    tiny = tiny_data()
    context = tiny_context(tmp_path_factory.mktemp("run"), catalog=tiny.catalog)
    retriever = registry.build("retriever", "popularity")
    retriever.fit(tiny.training, context)
    profile = registry.build("profile", "keywords")
    users = [0, 1, 2, 3]
    return candidate_requests(users, [tiny.split.train[u] for u in users], retriever, profile, context, 10), context


def test_requests_hold_the_retrievers_candidates_and_a_profile_per_user(requests):
    reqs, _ = requests
    assert [r.user for r in reqs] == [0, 1, 2, 3]
    for r in reqs:
        assert len(r.candidates) == len(r.candidate_scores) == 10
        assert not set(r.candidates.tolist()) & set(r.history.tolist())
        assert r.profile


def test_a_valid_answer_is_kept_and_completed_in_retriever_order(requests):
    reqs, context = requests
    ranked = rank_candidates(Answer(lambda lists: [lst[:3] for lst in lists]), reqs, context, "mine")
    for r, order in zip(reqs, ranked):
        expected = list(r.candidates[::-1][:3]) + [c for c in r.candidates if c not in r.candidates[::-1][:3]]
        assert order == [int(i) for i in expected]


@pytest.mark.parametrize(("answer", "says"), [
    (lambda lists: lists[:-1], "ranker 'mine' returned 3 ranked lists for 4 requests"),
    (lambda lists: [[-5] + lst for lst in lists], "ranker 'mine' ranked item -5 for user 0, which is not one of its 10"),
    (lambda lists: [lst[:1] + lst for lst in lists], "ranker 'mine' listed item .* more than once for user 0"),
])
def test_a_ranker_that_breaks_the_contract_is_refused_by_name(requests, answer, says):
    reqs, context = requests
    with pytest.raises(RankingError, match=says):
        rank_candidates(Answer(answer), reqs, context, "mine")


def test_the_candidate_count_covers_every_cutoff():
    class Eval:
        candidates, ks = 5, (10, 20)

    assert candidate_count(Eval()) == 20
    Eval.candidates = 50
    assert candidate_count(Eval()) == 50


def test_a_run_with_a_ranker_that_drops_a_list_fails_with_one_named_line(tmp_path):
    from tests.test_cli import palr_run

    site = tmp_path / "site"  # an installed distribution: a module and its dist-info with an entry point
    (site / "palr_short-0.1.dist-info").mkdir(parents=True)
    (site / "palr_short-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: palr-short\nVersion: 0.1\n")
    (site / "palr_short-0.1.dist-info" / "entry_points.txt").write_text("[palr]\npalr_short = palr_short\n")
    (site / "palr_short.py").write_text(
        "from palr_core import hookimpl\nPALR_PLUGIN_API = 2\n\n"
        "class Short:\n    def fit(self, data, context):\n        pass\n\n"
        "    def rank(self, requests, context):\n        return [list(r.candidates) for r in requests][:-1]\n\n"
        "@hookimpl\ndef register_rankers(register):\n    register('short', Short)\n")
    proc = palr_run("ranker=short", "eval.max_users=20", tmp_path=tmp_path, check=False,
                    env={"PYTHONPATH": str(site)})
    assert proc.returncode != 0
    assert "palr: ranker 'short' returned 19 ranked lists for 20 requests" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


class Tuning(Answer):
    """A ranker with a ``tune`` method that records how many validation users it was shown."""

    def __init__(self):
        super().__init__(lambda lists: lists)
        self.shown = None

    def tune(self, requests, targets, context):
        self.shown = (len(requests), len(targets))
        return {}


@pytest.fixture(scope="module")
def more_users():
    tiny = tiny_data(users=260)
    assert len(tiny.split.valid) > 200  # more users than the default 200 tunes on
    return tiny


@pytest.mark.parametrize(("max_users", "tune_users", "shown"), [
    (None, None, 200), (30, None, 30), (None, 25, 25), (30, 60, 60)])
def test_tuning_users_follow_max_users_unless_set(tmp_path, registry, more_users, max_users, tune_users, shown):
    tiny = more_users
    context = tiny_context(tmp_path, catalog=tiny.catalog)
    retriever = registry.build("retriever", "popularity")
    retriever.fit(tiny.training, context)
    ranker = Tuning()
    parts = Components(dataset=None, retriever=retriever, profile=registry.build("profile", "none"), ranker=ranker,
                       names={})
    config = PalrConfig(dataset={}, retriever={}, profile={}, ranker={},
                        eval=EvalConfig(max_users=max_users, tune_users=tune_users, candidates=10))
    tune_ranker(parts, tiny.split, config, context)
    assert ranker.shown == (shown, shown)


def test_tuning_users_default_is_200_or_max_users():
    assert EvalConfig().tuning_users() == 200
    assert EvalConfig(max_users=50).tuning_users() == 50
    assert EvalConfig(max_users=500).tuning_users() == 200
    assert EvalConfig(max_users=50, tune_users=300).tuning_users() == 300
