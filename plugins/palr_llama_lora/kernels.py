"""Two costs of LoRA fine-tuning on a CPU, and what palr computes instead (``ranker.cpu_kernels``).

``benchmarks/llm_profile.py --training`` profiles one training step of SmolLM2-135M (2 examples of
610 tokens, bf16 base, one thread). Matrix products took 48 % of the 6.1 s step, near the
machine's bf16 peak. Two things took much of the rest:

- **Attention: 34 %.** torch's fused CPU kernel (``scaled_dot_product_attention``) spends most of
  it in its backward. :func:`block_causal_attention` computes the same causal attention as plain
  batched matrix products over blocks of 128 queries. Each block reads only the keys up to its own
  last query, so the masked half of the score matrix is never computed. It keeps each block's
  probabilities for the backward pass (:func:`palr_core.kit.llm.fine_tuning_memory` counts them
  with ``saved_attention``).
- **Dropout masks: 7 %.** peft draws a LoRA dropout mask on every adapted projection's input
  (120 per step), and torch's CPU dropout makes one generator call per element.
  :class:`BulkDropout` takes 16 random bits per element out of 64-bit draws (a quarter of the
  generator calls) and drops those below ``p * 2**16``. Its mask takes 1 byte per element where
  torch's took 4.

With both the step took 4.9 s: attention 14 %, mask draws 1 % (``docs/llm.md``). Ranking on a
CPU reads the block attention too, for about a fifth more users per second.

Both are the same maths (attention differs from the fused kernel by rounding only: in bf16 the
scores are rounded to bf16 before the softmax, as in transformers' eager attention; the masks
differ by ``p`` rounded to 1/65,536), from the same generator (the seeded global one). Cases the block
attention does not cover (attention dropout, a sliding window, queries and keys of different
lengths as in cached generation, a non-causal module) go to transformers' SDPA function.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

__all__ = ["BLOCK_ATTENTION", "block_causal_attention", "BulkDropout", "cpu_training_kernels"]

#: the name :func:`block_causal_attention` is registered under with transformers
BLOCK_ATTENTION = "palr_blocks"
#: queries per block (of 64, 96, 128, 160 and 208 tried on SmolLM2 at 610 tokens, 128 and 160 were fastest)
QUERY_BLOCK = 128


def block_causal_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0,
                           scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Causal attention over blocks of queries, for transformers' ``AttentionInterface``.

    ``query`` is ``(batch, heads, length, head_dim)``; ``key``/``value`` may have fewer heads (grouped
    queries share them without copies). ``attention_mask`` is transformers' SDPA mask: ``None``
    (causal, no padding) or boolean ``(batch, 1, length, length)``, True where a query may look;
    a float mask is added to the scores. Returns ``(batch, length, heads, head_dim)`` and no weights.
    """
    batch, heads, length, dim = query.shape
    if (dropout > 0 or key.shape[2] != length or not getattr(module, "is_causal", True)
            or any(kwargs.get(k) is not None for k in ("sliding_window", "softcap", "s_aux"))):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    groups = heads // key.shape[1]
    query = query * (dim**-0.5 if scaling is None else scaling)
    lowest = torch.finfo(query.dtype).min
    causal = torch.full((length, length), lowest, dtype=query.dtype, device=query.device).triu(1)
    blocks = []
    for start in range(0, length, QUERY_BLOCK):
        stop = min(length, start + QUERY_BLOCK)
        rows = stop - start
        grouped = query[:, :, start:stop].reshape(batch, key.shape[1], groups * rows, dim)
        scores = torch.matmul(grouped, key[:, :, :stop].transpose(2, 3)).view(batch, -1, groups, rows, stop)
        if attention_mask is None:
            scores = scores + causal[start:stop, :stop]
        elif attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[:, :, None, start:stop, :stop], lowest)
        else:
            scores = scores + attention_mask[:, :, None, start:stop, :stop].to(scores.dtype)
        probs = torch.softmax(scores, dim=-1).view(batch, -1, groups * rows, stop)
        blocks.append(torch.matmul(probs, value[:, :, :stop]).view(batch, heads, rows, dim))
    return torch.cat(blocks, dim=2).transpose(1, 2).contiguous(), None


AttentionInterface.register(BLOCK_ATTENTION, block_causal_attention)
AttentionMaskInterface.register(BLOCK_ATTENTION, sdpa_mask)


class BulkDropout(torch.nn.Module):
    """``torch.nn.Dropout(p)`` with its mask drawn as 16-bit integers, four from each 64-bit draw."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.threshold = round(p * 2**16) - 2**15  # an int16 below this is dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        bits = torch.empty(-(-x.numel() // 4), dtype=torch.int64, device=x.device).random_(-(2**63), None)
        keep = bits.view(torch.int16)[: x.numel()].view(x.shape) >= self.threshold
        return torch.where(keep, x * (1 / (1 - self.p)), 0)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@contextmanager
def cpu_training_kernels(model):
    """Within the block, ``model`` (a peft LoRA model) trains with :func:`block_causal_attention` and
    :class:`BulkDropout`; afterwards it has its own attention and dropout modules back."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    attention = base.config._attn_implementation
    swapped = []
    for layer in model.modules():
        if isinstance(layer, LoraLayer):
            for name, dropout in layer.lora_dropout.items():
                if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                    layer.lora_dropout[name] = BulkDropout(dropout.p).train(dropout.training)
                    swapped.append((layer, name, dropout))
    base.set_attn_implementation(BLOCK_ATTENTION)
    try:
        yield
    finally:
        base.set_attn_implementation(attention)
        for layer, name, dropout in swapped:
            layer.lora_dropout[name] = dropout.train(layer.lora_dropout[name].training)
