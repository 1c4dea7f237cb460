"""palr_core.kit.losses: the chunked full cross-entropy equals F.cross_entropy (loss and gradients)
without keeping rows x catalogue logits; the sampled softmax is the full one when it samples everything."""

import pytest
import torch
import torch.nn.functional as F

from palr_core.kit import losses
from palr_core.kit.losses import full_cross_entropy, sampled_softmax, sampling_log_q


def problem(rows=37, items=23, dim=8, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, dim, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(items, dim, generator=g, dtype=dtype, requires_grad=True)
    bias = torch.randn(items, generator=g, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, items, (rows,), generator=g)
    return hidden, weight, bias, targets


def grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_loss_and_gradients_equal_f_cross_entropy(with_bias):
    hidden, weight, bias, targets = problem()
    b = bias if with_bias else None
    reference = F.cross_entropy(hidden @ weight.T + (bias if with_bias else 0), targets)
    chunked = full_cross_entropy(hidden, weight, targets, bias=b, chunk_elements=5 * 23)  # 8 chunks, last ragged
    tensors = (hidden, weight, bias) if with_bias else (hidden, weight)
    assert torch.allclose(chunked, reference, rtol=1e-12, atol=0)
    for got, want in zip(grads(chunked, *tensors), grads(reference, *tensors)):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)


def test_chunked_gradients_pass_gradcheck():
    hidden, weight, bias, targets = problem(rows=5, items=4, dim=2)
    assert torch.autograd.gradcheck(lambda h, w, b: full_cross_entropy(h, w, targets, bias=b, chunk_elements=8),
                                    (hidden, weight, bias))


def test_logits_that_fit_in_one_chunk_are_f_cross_entropy_bit_for_bit():
    hidden, weight, _, targets = problem(dtype=torch.float32)
    assert torch.equal(full_cross_entropy(hidden, weight, targets), F.cross_entropy(hidden @ weight.T, targets))


def test_the_default_chunk_size_is_read_when_called(monkeypatch):
    hidden, weight, _, targets = problem(dtype=torch.float32)
    one_chunk = full_cross_entropy(hidden, weight, targets)
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 23 * 4)
    chunked = full_cross_entropy(hidden, weight, targets)
    assert type(chunked.grad_fn).__name__ == "_ChunkedCrossEntropyBackward"
    assert type(one_chunk.grad_fn).__name__ == "NllLossBackward0"
    assert torch.allclose(chunked, one_chunk, rtol=1e-6)


def largest_saved_tensor(fn) -> int:
    """The most elements of any tensor autograd keeps for the backward of ``fn()``."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return max(sizes)


def test_chunked_backward_keeps_no_rows_by_catalogue_tensor():
    hidden, weight, bias, targets = problem(rows=400, items=300, dim=8, dtype=torch.float32)
    full = largest_saved_tensor(lambda: F.cross_entropy(hidden @ weight.T + bias, targets))
    chunked = largest_saved_tensor(lambda: full_cross_entropy(hidden, weight, targets, bias=bias,
                                                              chunk_elements=300 * 50))
    assert full >= 400 * 300
    assert chunked == max(hidden.numel(), weight.numel())


def test_chunked_under_bf16_autocast_matches_the_autocast_reference():
    hidden, weight, bias, targets = problem(rows=64, items=50, dim=16, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = F.cross_entropy(hidden @ weight.T + bias, targets)
        chunked = full_cross_entropy(hidden, weight, targets, bias=bias, chunk_elements=50 * 10)
    assert torch.allclose(chunked, reference, rtol=1e-3)
    for got, want in zip(grads(chunked, hidden, weight, bias), grads(reference, hidden, weight, bias)):
        assert got.dtype == want.dtype
        assert torch.allclose(got.float(), want.float(), rtol=0.05, atol=2e-3)


def test_sampling_every_item_under_a_uniform_q_is_the_full_softmax():
    hidden, weight, bias, targets = problem()
    log_q = torch.full((23,), -3.0, dtype=torch.float64)
    everything = torch.arange(23)  # each row's own target is masked out of its negatives
    sampled = sampled_softmax(hidden, weight, targets, log_q, everything, bias=bias)
    reference = F.cross_entropy(hidden @ weight.T + bias, targets)
    assert torch.allclose(sampled, reference, rtol=1e-12)
    for got, want in zip(grads(sampled, hidden, weight, bias), grads(reference, hidden, weight, bias)):
        assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)


def test_sampled_softmax_subtracts_log_q_from_every_logit():
    hidden, weight, _, targets = problem(rows=5, items=6, dim=4)
    log_q = torch.log(torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64))
    negatives = torch.tensor([0, 0, 3, 5])
    got = sampled_softmax(hidden, weight, targets, log_q, negatives)
    logits = hidden @ weight.T - log_q
    rows = []
    for r, t in enumerate(targets.tolist()):
        negs = [n for n in negatives.tolist() if n != t]
        row = torch.stack([logits[r, t]] + [logits[r, n] for n in negs])
        rows.append(-torch.log_softmax(row, 0)[0])
    assert torch.allclose(got, torch.stack(rows).mean(), rtol=1e-12)
    assert torch.autograd.gradcheck(lambda h, w: sampled_softmax(h, w, targets, log_q, negatives),
                                    (hidden, weight), atol=1e-5)


def test_sampling_log_q_mixes_uniform_and_popularity():
    q = sampling_log_q(torch.tensor([6, 2, 0, 0]), uniform_share=0.5).exp()
    assert torch.allclose(q, torch.tensor([0.5 * 0.25 + 0.5 * 0.75, 0.5 * 0.25 + 0.5 * 0.25, 0.125, 0.125]))
    drawn = sampled_softmax(*problem(items=4)[:2], torch.zeros(37, dtype=torch.long), q.log(), 3)
    assert torch.isfinite(drawn)
