"""Caser on synthetic data: training windows, learns, save/load round trip, history masking, user look-up."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from palr.plugins.caser.model import CaserRetriever, training_windows

from palr_core.pipeline import seed_stage
from palr_core.testing import check_retriever, tiny_context, tiny_data

TINY = dict(hidden=16, n_h=4, n_v=2, lr=5e-3, batch_size=256)


@pytest.fixture(scope="module")
def fitted_context(tmp_path_factory):
    """One trained Caser for the tests that only read it, and the context it was trained in."""
    context = tiny_context(tmp_path_factory.mktemp("caser"), catalog=tiny_data().catalog)
    seed_stage(0, "test")
    caser = CaserRetriever(**TINY, max_epochs=2, patience=0)
    caser.fit(tiny_data().training, context)
    return caser, context


@pytest.fixture
def fitted(fitted_context):
    return fitted_context[0]


def test_training_windows_are_the_items_before_each_target():
    users, windows, targets = training_windows([np.array([5, 6, 7, 8]), np.array([1]), np.array([2, 3])],
                                               window=3, targets=2)
    assert users.tolist() == [0, 0, 0, 2]  # a one-item sequence has no target
    # ids shifted by +1, zero-padded before a sequence's start and after its end
    assert windows.tolist() == [[0, 0, 6], [0, 6, 7], [6, 7, 8], [0, 0, 3]]
    assert targets.tolist() == [[7, 8], [8, 9], [9, 0], [4, 0]]


@pytest.mark.slow
def test_caser_beats_popularity_on_default_synthetic_data(default_synthetic, tmp_path):
    caser = CaserRetriever(hidden=32, lr=5e-3, max_epochs=6, patience=0)
    report = check_retriever(caser, tmp_path, default_synthetic)
    # measured: 0.185 vs 0.081
    assert report["NDCG@10"] > 1.5 * report["popularity NDCG@10"]


def test_the_retriever_contract_holds(tmp_path):
    """palr_core.testing's check: shapes, catalogue ids, no repeats, never a history item, best first."""
    check_retriever(CaserRetriever(**TINY, max_epochs=1), tmp_path, k=50)

def test_save_and_load_give_identical_scores(fitted_context, small_split):
    fitted, context = fitted_context
    loaded = CaserRetriever.load(context.work_dir / "retriever")
    histories = [*small_split.histories("test")[:40], np.array([3, 1, 4])]  # known users and one unknown
    assert torch.equal(fitted.queries(histories), loaded.queries(histories))
    assert torch.equal(fitted.score(histories), loaded.score(histories))
    assert np.array_equal(fitted.retrieve(histories, 10)[0], loaded.retrieve(histories, 10)[0])


def test_a_training_user_is_recognised_by_its_prefix_and_others_get_the_mean_user(fitted, training_data):
    prefix = training_data.train[7]
    unknown = np.array([3, 1, 4])
    with_valid = np.append(prefix, training_data.valid[7])
    assert fitted.queries([prefix, with_valid, unknown, prefix[:-1]])[:, 0].tolist()[:3] == [7, 7, -1]
    module = fitted.module.eval()
    # same window, own user embedding vs the mean one: different scores
    known_scores = fitted.score([prefix])[0]
    window = fitted.queries([prefix])[:, 1:]
    as_unknown = module.score(torch.cat([torch.tensor([[-1]]), window], 1))[0]
    assert not torch.allclose(known_scores, as_unknown)
    with torch.no_grad():
        z = module.represent(torch.tensor([-1]), window)
    torch.testing.assert_close(z[0, TINY["hidden"]:], module.users.weight.mean(0))
    assert torch.isfinite(fitted.score([unknown])).all()


def test_only_the_last_maxlen_items_and_the_user_matter(fitted):
    long = np.array([9, 8, 30, 31, 32, 33, 34, 35])
    other_start = np.array([2, 40, 31, 32, 33, 34, 35])
    assert fitted.config.maxlen == 5
    torch.testing.assert_close(fitted.score([long]), fitted.score([other_start]))
    assert not torch.equal(fitted.score([long]), fitted.score([long[:-1]]))


def test_without_user_embedding_scores_depend_on_the_window_alone(training_data, run_context, small_split):
    caser = CaserRetriever(**TINY, user_embedding=False, targets=3, max_epochs=1)
    caser.fit(training_data, run_context)
    assert caser.module.users is None and caser.module.output.weight.shape[1] == TINY["hidden"]
    prefix = training_data.train[3]
    window = prefix[-caser.config.maxlen:]
    torch.testing.assert_close(caser.score([prefix]), caser.score([window]))
    loaded = CaserRetriever.load(run_context.work_dir / "retriever")
    histories = small_split.histories("test")[:20]
    assert torch.equal(caser.score(histories), loaded.score(histories))


def test_bf16_mixed_precision_the_gpu_default_runs_on_cpu(training_data, run_context, small_split):
    trainer = replace(run_context.trainer, precision="bf16-mixed", accelerator="cpu")
    caser = CaserRetriever(**TINY, targets=2, max_epochs=1)
    caser.fit(training_data, replace(run_context, trainer=trainer))
    ids, scores = caser.retrieve(small_split.histories("test")[:5], 10)
    assert np.isfinite(scores).all() and ids.shape == (5, 10)


def test_a_bad_option_is_a_clear_error():
    with pytest.raises(ValueError, match="retriever caser: n_h and n_v are both 0"):
        CaserRetriever(n_h=0, n_v=0)
    with pytest.raises(ValueError, match="retriever caser: user_embedding"):
        CaserRetriever(user_embedding="no")
    with pytest.raises(ValueError, match="maxlen"):
        CaserRetriever(maxlen=200)
