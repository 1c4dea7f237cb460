"""SASRec on synthetic data: learns, round-trips through save/load, resumes, masks history."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from palr.plugins.sasrec.model import SASRecRetriever

from palr_core.testing import check_retriever

TINY = dict(maxlen=20, hidden=16, heads=2, blocks=1, dropout=0.1, lr=5e-3, batch_size=64)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ce", "bce", "sampled"])
def test_sasrec_beats_popularity_on_default_synthetic_data(default_synthetic, tmp_path, loss):
    sasrec = SASRecRetriever(**{**TINY, "hidden": 32}, loss=loss, max_epochs=15, patience=0)
    report = check_retriever(sasrec, tmp_path, default_synthetic)
    assert report["NDCG@10"] > 1.5 * report["popularity NDCG@10"]


def test_candidates_never_include_history_items(training_data, run_context, small_split):
    sasrec = SASRecRetriever(**TINY, max_epochs=1)
    sasrec.fit(training_data, run_context)
    histories = small_split.histories("test")
    ids, scores = sasrec.retrieve(histories, 50)
    assert ids.shape == scores.shape == (len(histories), 50)
    for history, row in zip(histories, ids):
        assert not set(history.tolist()) & set(row.tolist())
    assert (np.diff(scores, axis=1) <= 0).all()


def test_save_and_load_give_identical_scores(training_data, run_context, small_split, tmp_path):
    sasrec = SASRecRetriever(**TINY, max_epochs=1)
    sasrec.fit(training_data, run_context)
    loaded = SASRecRetriever.load(run_context.work_dir / "retriever")
    histories = small_split.histories("test")[:40]
    assert torch.equal(sasrec.score(histories), loaded.score(histories))
    assert np.array_equal(sasrec.retrieve(histories, 10)[0], loaded.retrieve(histories, 10)[0])


def test_load_from_reuses_a_saved_retriever_instead_of_training(training_data, run_context, small_split):
    first = SASRecRetriever(**TINY, max_epochs=1)
    first.fit(training_data, run_context)
    reused = SASRecRetriever(**TINY, load_from=str(run_context.work_dir / "retriever"))
    reused.fit(training_data, replace(run_context, work_dir=run_context.work_dir / "second"))
    assert not (run_context.work_dir / "second" / "retriever_training").exists()
    histories = small_split.histories("test")[:10]
    assert torch.equal(first.score(histories), reused.score(histories))


def test_trainer_max_time_ends_training_with_the_best_checkpoint(training_data, run_context, small_split):
    """A time-boxed fit (``trainer.max_time``) stops early, says why, and still retrieves."""
    boxed = replace(run_context.trainer, max_time="00:00:00:01")
    sasrec = SASRecRetriever(**TINY, max_epochs=10_000, patience=0)
    sasrec.fit(training_data, replace(run_context, trainer=boxed))
    assert sasrec.fit_summary["stopped_by"] == "max_time"
    assert 0 < sasrec.fit_summary["epochs"] < 10_000
    assert sasrec.retrieve(small_split.histories("test")[:5], 10)[0].shape == (5, 10)


def test_fit_summary_says_the_epoch_cap_ended_training(training_data, run_context):
    sasrec = SASRecRetriever(**TINY, max_epochs=2, patience=0)
    sasrec.fit(training_data, run_context)
    assert sasrec.fit_summary["stopped_by"] == "max_epochs"
    assert sasrec.fit_summary["epochs"] == 2


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="loss must be one of"):
        SASRecRetriever(loss="hinge")


def first_batch(sasrec, training_data, run_context, size=64):
    return (sasrec.training_dataset(training_data, run_context).tensors[0][:size],)


def test_ce_loss_in_chunks_is_the_full_logits_loss(training_data, run_context, monkeypatch):
    from palr_core.kit import losses

    sasrec = SASRecRetriever(**TINY)
    module = sasrec.build_module(training_data.num_items).eval()  # eval: no dropout, same hidden states
    batch = first_batch(sasrec, training_data, run_context)
    whole = module.training_step(batch, 0)
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", training_data.num_items * 7)  # many chunks
    chunked = module.training_step(batch, 0)
    assert type(chunked.grad_fn).__name__ == "_ChunkedCrossEntropyBackward"
    assert torch.allclose(chunked, whole, rtol=1e-6)
    grads = [torch.autograd.grad(loss_fn(), module.items.weight)[0] for loss_fn in
             (lambda: module.training_step(batch, 0),)]
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 2**24)
    assert torch.allclose(grads[0], torch.autograd.grad(module.training_step(batch, 0), module.items.weight)[0],
                          rtol=1e-4, atol=1e-7)


def test_sampled_loss_draws_negatives_by_training_popularity_and_lowers_the_full_loss(training_data, run_context):
    from palr_core.kit.losses import training_log_q

    sasrec = SASRecRetriever(**TINY, loss="sampled", negatives=16)
    sasrec.prepare(training_data)
    module = sasrec.build_module(training_data.num_items)
    assert torch.equal(module.log_q, training_log_q(training_data.train, training_data.num_items))
    batch = first_batch(sasrec, training_data, run_context)
    full = SASRecRetriever(**TINY).build_module(training_data.num_items)

    def full_loss():
        full.load_state_dict(module.state_dict())
        return full.eval().training_step(batch, 0).item()
    before = full_loss()
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(50):
        optimiser.zero_grad()
        module.train().training_step(batch, 0).backward()
        optimiser.step()
    assert full_loss() < before - 0.1  # 4.72 -> 4.54 when written


def test_sampled_loss_fits_and_retrieves(training_data, run_context, small_split):
    sasrec = SASRecRetriever(**TINY, loss="sampled", negatives=16, max_epochs=1)
    sasrec.fit(training_data, run_context)
    ids, _ = sasrec.retrieve(small_split.histories("test")[:5], 10)
    assert ids.shape == (5, 10)
