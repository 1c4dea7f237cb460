"""BERT4Rec on synthetic data: learns, save/load round trip, history masking."""

import numpy as np
import pytest
import torch
from palr.plugins.bert4rec.model import BERT4RecRetriever

from palr_core.testing import check_retriever

TINY = dict(maxlen=20, hidden=32, heads=2, blocks=1, dropout=0.1, lr=5e-3, batch_size=64)


@pytest.mark.slow
def test_bert4rec_beats_popularity_on_default_synthetic_data(default_synthetic, tmp_path):
    # cloze training is slow to start on this data: no early stopping for a fixed 35 epochs
    bert = BERT4RecRetriever(**{**TINY, "lr": 3e-3, "dropout": 0.2}, mask_prob=0.4, last_mask_prob=0.2,
                             max_epochs=35, patience=0)
    report = check_retriever(bert, tmp_path, default_synthetic)
    assert report["NDCG@10"] > 1.3 * report["popularity NDCG@10"]


def test_bert4rec_save_load_and_masking(training_data, run_context, small_split):
    bert = BERT4RecRetriever(**TINY, max_epochs=1)
    bert.fit(training_data, run_context)
    loaded = BERT4RecRetriever.load(run_context.work_dir / "retriever")
    histories = small_split.histories("test")
    assert torch.equal(bert.score(histories), loaded.score(histories))
    ids, _ = loaded.retrieve(histories, 30)
    assert all(not set(h.tolist()) & set(row.tolist()) for h, row in zip(histories, ids))


def test_bad_mask_prob_is_a_clear_error():
    with pytest.raises(ValueError, match="mask_prob"):
        BERT4RecRetriever(mask_prob=1.5)


def test_scoring_a_history_longer_than_maxlen_uses_its_most_recent_items(training_data, run_context):
    bert = BERT4RecRetriever(**TINY, max_epochs=1)
    bert.fit(training_data, run_context)
    long = np.arange(60) % training_data.num_items
    assert torch.equal(bert.score([long]), bert.score([long[-40:]]))


def bert4rec_loss(module, batch):
    torch.manual_seed(0)  # the same masks each call
    return module.training_step(batch, 0)


def test_ce_loss_in_chunks_is_the_full_logits_loss(training_data, run_context, monkeypatch):
    from palr_core.kit import losses

    bert = BERT4RecRetriever(**TINY)
    module = bert.build_module(training_data.num_items).eval()
    batch = (bert.training_dataset(training_data, run_context).tensors[0][:64],)
    whole = bert4rec_loss(module, batch)
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", training_data.num_items * 5)
    chunked = bert4rec_loss(module, batch)
    assert type(chunked.grad_fn).__name__ == "_ChunkedCrossEntropyBackward"
    assert torch.allclose(chunked, whole, rtol=1e-6)
    got = torch.autograd.grad(chunked, module.output_bias)[0]
    assert torch.allclose(got, torch.autograd.grad(whole, module.output_bias)[0], rtol=1e-4, atol=1e-7)


def test_sampled_loss_fits_and_retrieves(training_data, run_context, small_split):
    bert = BERT4RecRetriever(**TINY, loss="sampled", negatives=16, max_epochs=1)
    bert.fit(training_data, run_context)
    assert bert.module.log_q.exp().sum().item() == pytest.approx(1.0)
    assert bert.retrieve(small_split.histories("test")[:5], 10)[0].shape == (5, 10)
