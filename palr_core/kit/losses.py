"""Catalogue-sized losses the softmax retrievers share (SASRec, BERT4Rec, GRU4Rec).

:func:`full_cross_entropy` is the exact softmax cross-entropy over the whole catalogue whose memory
does not grow with rows × catalogue: rows are processed in chunks and each chunk's logits are
recomputed in the backward instead of being kept. :func:`sampled_softmax` is the cheaper
approximation for large catalogues: the target against ``n`` sampled negatives, corrected by the
log of their sampling probability (logQ).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CHUNK_ELEMENTS", "full_cross_entropy", "sampled_softmax", "sampling_log_q", "training_log_q"]

#: most logits (rows × catalogue) one chunk holds: 2**24 float32 logits = 64 MiB, plus as much for
#: their softmax in the backward
CHUNK_ELEMENTS = 2**24


def full_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       bias: torch.Tensor | None = None, chunk_elements: int | None = None) -> torch.Tensor:
    """Mean of ``F.cross_entropy(hidden @ weight.T + bias, targets)``, with at most ``chunk_elements``
    logits alive at a time.

    ``hidden``: ``[rows, d]``; ``weight``: ``[num_items, d]``; ``targets``: ``[rows]`` in
    ``0..num_items-1``; ``bias``: ``[num_items]`` or ``None``; ``chunk_elements``: default
    :data:`CHUNK_ELEMENTS`. When all the logits fit in one chunk this *is* ``F.cross_entropy`` on
    them (the same bits as computing it directly); otherwise the rows go through :class:`_ChunkedCrossEntropy`, which keeps one log-sum-exp per row and
    recomputes a chunk's logits in the backward. The two agree to float rounding (the summation
    order differs).
    """
    rows, items = hidden.shape[0], weight.shape[0]
    chunk = max(1, (chunk_elements or CHUNK_ELEMENTS) // max(items, 1))
    if rows <= chunk:
        logits = hidden @ weight.T
        return F.cross_entropy(logits if bias is None else logits + bias, targets)
    has_bias = bias is not None
    bias = bias if has_bias else hidden.new_zeros(())  # a zero that broadcasts; its gradient is dropped
    return _ChunkedCrossEntropy.apply(hidden, weight, bias, targets, chunk, has_bias)


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Forward: per chunk of rows, logits → log-sum-exp and target logit, summed; only the per-row
    log-sum-exp is saved. Backward: per chunk, recompute the logits and turn them into the softmax
    in place; the gradients are ``softmax @ weight`` and ``softmax.T @ hidden`` minus the target
    rows (an index-add, not a one-hot pass over the chunk), scaled once at the end. Autocast
    (bf16-mixed) is re-entered in the backward as it was in the forward, so the recomputed logits
    are the forward's."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk: int, has_bias: bool):
        device = hidden.device.type
        ctx.autocast = (device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        dtype = _accumulation_dtype(hidden.dtype)
        lse = torch.empty(hidden.shape[0], dtype=dtype, device=hidden.device)
        total = torch.zeros((), dtype=dtype, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            logits = _logits(hidden[start:start + chunk], weight, bias if has_bias else None)
            lse[start:start + chunk] = torch.logsumexp(logits, 1)
            picked = logits.gather(1, targets[start:start + chunk, None]).squeeze(1)
            total += (lse[start:start + chunk] - picked).sum()
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.chunk, ctx.has_bias = chunk, has_bias
        return total / hidden.shape[0]

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        device, enabled, autocast_dtype = ctx.autocast
        dtype = lse.dtype
        grad_hidden = torch.empty(hidden.shape, dtype=dtype, device=hidden.device)
        grad_weight = torch.zeros(weight.shape, dtype=dtype, device=weight.device)
        grad_bias = torch.zeros(weight.shape[0], dtype=dtype, device=weight.device)
        with torch.autocast(device, dtype=autocast_dtype, enabled=enabled):
            for start in range(0, hidden.shape[0], ctx.chunk):
                rows, h, t = slice(start, start + ctx.chunk), hidden[start:start + ctx.chunk], targets[start:start + ctx.chunk]
                probs = _logits(h, weight, bias if ctx.has_bias else None).sub_(lse[rows, None]).exp_()
                grad_hidden[rows] = (probs @ weight.to(probs.dtype)).to(dtype) - weight[t].to(dtype)
                grad_weight += probs.T @ h.to(probs.dtype)
                grad_weight.index_add_(0, t, h.to(dtype), alpha=-1)
                if ctx.has_bias:
                    grad_bias += probs.sum(0)
                    grad_bias.index_add_(0, t, torch.ones_like(t, dtype=dtype), alpha=-1)
        scale = grad_out.to(dtype) / hidden.shape[0]
        return ((grad_hidden * scale).to(hidden.dtype), (grad_weight * scale).to(weight.dtype),
                (grad_bias * scale).to(bias.dtype) if ctx.has_bias else None, None, None, None)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs, else the inputs' own (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A fresh ``hidden @ weight.T + bias`` in at least float32 (the matmul in autocast's dtype when it
    is on), safe to change in place."""
    logits = hidden @ weight.T if bias is None else torch.addmm(bias, hidden, weight.T)
    dtype = _accumulation_dtype(torch.promote_types(hidden.dtype, weight.dtype))
    return logits.to(dtype)


def sampling_log_q(counts: torch.Tensor, uniform_share: float = 0.5) -> torch.Tensor:
    """log of the negative-sampling distribution for training ``counts`` per item: a mixture of
    uniform (``uniform_share``) and popularity, so rare items are still drawn as negatives."""
    counts = counts.double().clamp(min=0)
    popularity = counts / counts.sum() if counts.sum() > 0 else torch.full_like(counts, 1 / len(counts))
    return torch.log(uniform_share / len(counts) + (1 - uniform_share) * popularity).float()


def sampled_softmax(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, log_q: torch.Tensor,
                    negatives: int | torch.Tensor, bias: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Sampled softmax with logQ correction: each row's target against ``negatives`` items drawn
    (with replacement, shared by all rows) from ``exp(log_q)``.

    Every logit, the target's included, has ``log q`` of its item subtracted, so that the sampled
    softmax estimates the full one without popularity bias (Yi et al., RecSys 2019); a negative that
    is the row's own target is masked out. ``negatives`` may be the ``[n]`` item ids themselves (for
    tests). ``hidden``: ``[rows, d]``; ``weight``: ``[num_items, d]``; ``targets``: ``[rows]``.
    """
    if isinstance(negatives, int):
        negatives = torch.multinomial(log_q.exp(), negatives, replacement=True, generator=generator)
    negatives = negatives.to(hidden.device)
    log_q = log_q.to(hidden.device)
    positive = (hidden * weight[targets]).sum(-1) - log_q[targets]
    negative = hidden @ weight[negatives].T - log_q[negatives]
    if bias is not None:
        positive, negative = positive + bias[targets], negative + bias[negatives]
    dtype = _accumulation_dtype(negative.dtype)
    negative = negative.to(dtype).masked_fill(negatives[None] == targets[:, None], float("-inf"))
    logits = torch.cat([positive.to(dtype)[:, None], negative], 1)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def training_log_q(train: Sequence[np.ndarray], num_items: int, uniform_share: float = 0.5) -> torch.Tensor:
    """:func:`sampling_log_q` of the item counts in ``train`` (one array of item ids per user)."""
    flat = np.concatenate([np.asarray(s, dtype=np.int64) for s in train]) if len(train) else np.zeros(0, np.int64)
    return sampling_log_q(torch.from_numpy(np.bincount(flat, minlength=num_items)), uniform_share)
