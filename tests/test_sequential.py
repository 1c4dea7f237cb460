"""The shared retriever machinery: padding, trimming, masked top-K, the transformer encoder."""

import numpy as np
import torch

from palr_core.kit.retrievers import (
    LengthBucketSampler,
    TransformerEncoder,
    left_pad,
    top_k_unseen,
    trim_padding,
)


def test_left_pad_shifts_ids_and_right_aligns_the_most_recent_item():
    padded = left_pad([np.array([0, 4, 2]), np.array([7])], maxlen=4)
    assert padded.tolist() == [[0, 1, 5, 3], [0, 0, 0, 8]]


def test_left_pad_keeps_only_the_last_maxlen_items():
    assert left_pad([np.arange(10)], maxlen=3).tolist() == [[8, 9, 10]]


def test_left_pad_of_an_empty_history_is_all_padding():
    assert left_pad([np.array([], dtype=np.int64)], maxlen=3).tolist() == [[0, 0, 0]]


def test_trim_padding_drops_columns_that_are_padding_in_every_row():
    a = torch.tensor([[0, 0, 1, 2], [0, 0, 0, 3]])
    b = torch.tensor([[0, 0, 5, 6], [0, 0, 0, 7]])
    trimmed_a, trimmed_b = trim_padding(a, b)
    assert trimmed_a.tolist() == [[1, 2], [0, 3]]
    assert trimmed_b.tolist() == [[5, 6], [0, 7]]


def test_top_k_unseen_never_returns_a_history_item():
    scores = torch.arange(10, dtype=torch.float32).repeat(2, 1)  # item 9 best
    ids, values = top_k_unseen(scores, [np.array([9, 8]), np.array([0])], k=3)
    assert ids.tolist() == [[7, 6, 5], [9, 8, 7]]
    assert values[0].tolist() == [7.0, 6.0, 5.0]


def test_transformer_encoder_gives_finite_outputs_for_rows_that_are_mostly_padding():
    encoder = TransformerEncoder(hidden=8, heads=2, blocks=2, dropout=0.0)
    seq = torch.tensor([[0, 0, 0, 4], [1, 2, 3, 4]])
    length = seq.shape[1]
    allowed = torch.ones(length, length, dtype=torch.bool).tril()[None] & (seq != 0)[:, None, :]
    allowed |= torch.eye(length, dtype=torch.bool)[None]
    out = encoder(torch.randn(2, length, 8), allowed[:, None])
    assert out.shape == (2, length, 8)
    assert torch.isfinite(out).all()


def test_length_bucket_sampler_is_a_permutation_of_batches_with_similar_lengths():
    lengths = torch.tensor([1, 50, 2, 49, 3, 48, 4, 47])
    sampler = LengthBucketSampler(lengths, batch_size=2, seed=0)
    order = list(sampler)
    assert sorted(order) == list(range(8))
    batches = [sorted(lengths[order[i:i + 2]].tolist()) for i in range(0, 8, 2)]
    assert sorted(batches) == [[1, 2], [3, 4], [47, 48], [49, 50]]
    assert len({tuple(sampler) for _ in range(10)}) > 1  # a fresh draw every epoch


def test_length_bucket_sampler_is_reproducible_from_its_seed():
    lengths = torch.randint(1, 200, (100,))
    first = LengthBucketSampler(lengths, batch_size=8, seed=3)
    second = LengthBucketSampler(lengths, batch_size=8, seed=3)
    assert [list(first) for _ in range(3)] == [list(second) for _ in range(3)]


def test_length_bucket_sampler_order_depends_only_on_seed_and_epoch():
    """What makes a resumed run (Lightning calls ``set_epoch``) draw the uninterrupted run's batches."""
    lengths = torch.randint(1, 200, (100,))
    uninterrupted = LengthBucketSampler(lengths, batch_size=8, seed=3)
    orders = [list(uninterrupted) for _ in range(3)]
    resumed = LengthBucketSampler(lengths, batch_size=8, seed=3)
    resumed.set_epoch(2)
    assert list(resumed) == orders[2]
    assert orders[0] != orders[1]
