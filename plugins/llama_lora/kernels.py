"""What LoRA fine-tuning costs on a CPU beside its matrix products, and what palr computes instead
(``ranker.cpu_kernels``).

``benchmarks/llm_profile.py --training`` profiles one training step of SmolLM2-135M (2 examples of
610 tokens, bf16 base, one thread). Matrix products took 48 % of the 6.1 s step, near the
machine's bf16 peak. Most of the rest went to:

- **Attention: 34 %.** torch's fused CPU kernel (``scaled_dot_product_attention``) spends most of
  it in its backward. :func:`block_causal_attention` computes the same causal attention as plain
  batched matrix products over blocks of 128 queries. Each block reads only the keys up to its own
  last query, so the masked half of the score matrix is never computed, and only the block's
  diagonal is masked. It keeps each block's probabilities for the backward pass
  (:func:`palr.plugins.llama_lora.memory.fine_tuning_memory` counts them with ``saved_attention``), which
  :class:`BlockAttention` writes out block by block.
- **Dropout masks: 7 %.** peft draws a LoRA dropout mask on every adapted projection's input
  (120 per step), and torch's CPU dropout makes one generator call per element.
  :func:`keep_mask` takes 16 random bits per element out of 64-bit draws (a quarter of the
  generator calls) and drops those below ``p * 2**16``.
- **The LoRA projections' float32 side path.** peft keeps the adapter in float32, so each adapted
  projection copied its bf16 input to float32, dropped, multiplied and added in float32 and
  rounded back. :class:`LoraDelta` computes ``base + scale * B A dropout(x)`` in the input's dtype
  (the adapter rounded to it, as autocast would) with its backward written out, and keeps ``x``,
  which the projections of one input share, instead of a float32 copy per projection.
- **LLaMA's RMS norm** (61 per step) ran as eleven autograd passes, half of them in float32;
  :class:`RMSNorm` gives the same output bit for bit with a backward of six.

With the first two the step took 4.9 s: attention 14 %, mask draws 1 %. With all four it took
4.4-4.5 s, and ``benchmarks/llm_cost.py`` fine-tunes 3.00-3.14x the tokens per second of 8c60e0b
on one thread and 2.71-3.16x on two (``docs/llm.md``); 5.04x and 4.05-5.35x on a later machine
of CPU family 26, whose bf16 matrix products are about twice as fast. Ranking on a CPU reads the
block attention too, for about a fifth more users per second.

All are the same maths (attention differs from the fused kernel by rounding only: in bf16 the
scores are rounded to bf16 before the softmax, as in transformers' eager attention; the masks
differ by ``p`` rounded to 1/65,536; the LoRA branch by bf16 rounding), from the same generator
(the seeded global one). Cases the block attention does not cover (attention dropout, a sliding
window, queries and keys of different lengths as in cached generation, a non-causal module) go to
transformers' SDPA function; adapters the fused projection does not cover (merged, disabled, DoRA
and other variants, a LoRA bias) to peft's own forward; norms with trained weights keep theirs.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

__all__ = ["BLOCK_ATTENTION", "block_causal_attention", "BlockAttention", "keep_mask", "BulkDropout", "LoraDelta",
           "fused_lora_forward", "RMSNorm", "fused_rms_norm_forward", "cpu_training_kernels"]

#: the name :func:`block_causal_attention` is registered under with transformers
BLOCK_ATTENTION = "palr_blocks"
#: queries per block: on SmolLM2's shapes at 610 tokens, 64 to 160 are level, 208 and 256 slower
#: (``benchmarks/llm_ops.py``)
QUERY_BLOCK = 128


def _blocks_forward(query, key, value, attention_mask, scale: float):
    """The attention output ``(batch, length, heads, head_dim)``, the scaled query and each query
    block's probabilities ``(batch, kv_heads, groups * rows, keys)``."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    query = query * scale
    lowest = torch.finfo(query.dtype).min
    causal = torch.full((QUERY_BLOCK, QUERY_BLOCK), lowest, dtype=query.dtype, device=query.device).triu(1)
    output = query.new_empty(batch, length, heads, dim)
    keys = key.transpose(2, 3).contiguous()  # (dim, length) per head: a prefix of keys is a plain matrix
    probabilities = []
    for start in range(0, length, QUERY_BLOCK):
        stop = min(length, start + QUERY_BLOCK)
        rows = stop - start
        grouped = query[:, :, start:stop].reshape(batch, kv_heads, groups * rows, dim)
        scores = torch.matmul(grouped, keys[..., :stop])
        masked = scores.view(batch, kv_heads, groups, rows, stop)
        if attention_mask is None:  # the keys before the block are all visible: mask its diagonal only
            masked[..., start:stop] += causal[:rows, :rows]
        elif attention_mask.dtype == torch.bool:
            masked.masked_fill_(~attention_mask[:, :, None, start:stop, :stop], lowest)
        else:
            masked += attention_mask[:, :, None, start:stop, :stop].to(scores.dtype)
        probs = torch.softmax(scores, dim=-1)
        probabilities.append(probs)
        block = torch.matmul(probs, value[:, :, :stop]).view(batch, heads, rows, dim)
        output[:, start:stop] = block.transpose(1, 2)
    return output, query, probabilities


class BlockAttention(torch.autograd.Function):
    """:func:`_blocks_forward` with its backward written out, block by block: each block's query
    gradient is written into place, and its key and value gradients are added to the prefix of keys
    it read (autograd's graph of the same zero-filled and summed full-size tensors per block)."""

    @staticmethod
    def forward(ctx, query, key, value, attention_mask, scale: float):
        output, scaled, probabilities = _blocks_forward(query, key, value, attention_mask, scale)
        ctx.save_for_backward(scaled, key, value, *probabilities)
        ctx.scale = scale
        return output

    @staticmethod
    def backward(ctx, grad):
        scaled, key, value, *probabilities = ctx.saved_tensors
        batch, heads, _, dim = scaled.shape
        kv_heads = key.shape[1]
        groups = heads // kv_heads
        grad_query = torch.empty_like(scaled)
        values = value.transpose(2, 3).contiguous()
        grad_key = grad_value = None
        for probs in reversed(probabilities):  # the last block reads every key
            stop = probs.shape[-1]  # each block's queries end where the keys it read end
            rows = probs.shape[2] // groups
            start = stop - rows
            grad_block = grad[:, start:stop].transpose(1, 2).reshape(batch, kv_heads, groups * rows, dim)
            grad_probs = torch.matmul(grad_block, values[..., :stop])
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
            grad_query[:, :, start:stop] = torch.matmul(grad_scores, key[:, :, :stop]).view(
                batch, heads, rows, dim) * ctx.scale
            grouped = scaled[:, :, start:stop].reshape(batch, kv_heads, groups * rows, dim)
            for_keys = torch.matmul(grad_scores.transpose(2, 3), grouped)
            for_values = torch.matmul(probs.transpose(2, 3), grad_block)
            if grad_key is None:
                grad_key, grad_value = for_keys, for_values
            else:
                grad_key[:, :, :stop] += for_keys
                grad_value[:, :, :stop] += for_values
        return grad_query, grad_key, grad_value, None, None


def block_causal_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                           attention_mask: torch.Tensor | None, dropout: float = 0.0,
                           scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Causal attention over blocks of queries, for transformers' ``AttentionInterface``.

    ``query`` is ``(batch, heads, length, head_dim)``; ``key``/``value`` may have fewer heads (grouped
    queries share them without copies). ``attention_mask`` is transformers' SDPA mask: ``None``
    (causal, no padding) or boolean ``(batch, 1, length, length)``, True where a query may look;
    a float mask is added to the scores. Returns ``(batch, length, heads, head_dim)`` and no weights.
    """
    length, dim = query.shape[2:]
    if (dropout > 0 or key.shape[2] != length or not getattr(module, "is_causal", True)
            or any(kwargs.get(k) is not None for k in ("sliding_window", "softcap", "s_aux"))):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scale = dim**-0.5 if scaling is None else scaling
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        return BlockAttention.apply(query, key, value, attention_mask, scale), None
    return _blocks_forward(query, key, value, attention_mask, scale)[0], None


AttentionInterface.register(BLOCK_ATTENTION, block_causal_attention)
AttentionMaskInterface.register(BLOCK_ATTENTION, sdpa_mask)


def keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Which elements of ``x`` dropout at rate ``p`` keeps: 1 or 0 in ``x``'s dtype and shape (a
    multiplication by it was 5x faster than a boolean ``where`` in an ad hoc timing on one
    thread). 16 random bits per element, four from each 64-bit draw of the global generator; an
    element is kept unless they fall below ``p * 2**16``."""
    bits = torch.empty(-(-x.numel() // 4), dtype=torch.int64, device=x.device).random_(-(2**63), None)
    keep = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    return torch.ge(bits.view(torch.int16)[: x.numel()].view(x.shape), round(p * 2**16) - 2**15, out=keep)


class BulkDropout(torch.nn.Module):
    """``torch.nn.Dropout(p)`` with its mask drawn by :func:`keep_mask`."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * keep_mask(x, self.p) * (1 / (1 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LoraDelta(torch.autograd.Function):
    """``result + scale * (keep ⊙ x) Aᵀ Bᵀ``: a LoRA projection's output from its frozen base's
    ``result``, computed in ``x``'s dtype with the float32 adapter weights rounded to it (as autocast
    would), the scale applied to the rank-``r`` product and the sum done by ``addmm``. Saves ``x``
    (shared by the projections that read it), the 0/1 mask (:func:`keep_mask`) and rank-``r``
    tensors; the dropped input is formed again in the backward pass."""

    @staticmethod
    def forward(ctx, result, x, weight_a, weight_b, keep, scale: float):
        a, b = weight_a.to(x.dtype), weight_b.to(x.dtype)
        dropped = (x if keep is None else x * keep).reshape(-1, x.shape[-1])
        low = (dropped @ a.T).mul_(scale)
        ctx.save_for_backward(x, keep, a, b, low)
        ctx.scale = scale
        ctx.dtypes = weight_a.dtype, weight_b.dtype
        return torch.addmm(result.reshape(-1, result.shape[-1]), low, b.T).view(result.shape)

    @staticmethod
    def backward(ctx, grad):
        x, keep, a, b, low = ctx.saved_tensors
        flat = grad.reshape(-1, grad.shape[-1])
        grad_b = (flat.T @ low).to(ctx.dtypes[1]) if ctx.needs_input_grad[3] else None
        grad_low = (flat @ b).mul_(ctx.scale)
        grad_a = grad_x = None
        if ctx.needs_input_grad[2]:
            dropped = (x if keep is None else x * keep).reshape(-1, x.shape[-1])
            grad_a = (grad_low.T @ dropped).to(ctx.dtypes[0])
        if ctx.needs_input_grad[1]:
            grad_x = (grad_low @ a).view(x.shape)
            grad_x = grad_x if keep is None else grad_x.mul_(keep)
        return grad if ctx.needs_input_grad[0] else None, grad_x, grad_a, grad_b, None, None


class RMSNorm(torch.autograd.Function):
    """LLaMA's RMS norm of ``x`` scaled by a frozen ``weight``, as transformers' ``LlamaRMSNorm``
    computes it (float32 statistics, the normalised row rounded to ``x``'s dtype, then scaled), with
    its backward written out: six passes over the rows where autograd's graph of the same made
    eleven, half of them in float32. Saves ``x`` and one float32 per row."""

    @staticmethod
    def forward(ctx, x, weight, eps: float):
        wide = x.float()
        inverse = wide.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, inverse)
        return (wide * inverse).to(x.dtype) * weight

    @staticmethod
    def backward(ctx, grad):
        x, weight, inverse = ctx.saved_tensors
        wide = x.float()
        scaled = (grad * weight).float()
        along = (scaled * wide).mean(-1, keepdim=True).mul_(inverse.pow(3))
        return (scaled * inverse).sub_(wide * along).to(x.dtype), None, None


def fused_rms_norm_forward(norm, hidden: torch.Tensor) -> torch.Tensor:
    """A ``LlamaRMSNorm``'s forward through :class:`RMSNorm` (its weight frozen)."""
    return RMSNorm.apply(hidden, norm.weight, norm.variance_epsilon)


def fused_lora_forward(layer, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A peft LoRA ``Linear``'s forward through :class:`LoraDelta`, for one plain adapter (no DoRA or
    other variant, no LoRA bias, not merged) outside autocast; anything else goes to peft's own
    forward."""
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if (args or kwargs or layer.disable_adapters or layer.merged or len(active) != 1
            or active[0] in layer.lora_variant or layer.lora_B[active[0]].bias is not None
            or torch.is_autocast_enabled(x.device.type)):  # autocast: peft casts the adapter itself
        return type(layer).forward(layer, x, *args, **kwargs)
    name = active[0]
    result = layer.base_layer(x)
    if result.dtype != x.dtype:  # a base layer of another kind: its projection is done again by peft
        return type(layer).forward(layer, x)
    dropout = layer.lora_dropout[name]
    p = getattr(dropout, "p", 0.0) if dropout.training else 0.0
    keep = keep_mask(x, p) if p > 0 else None
    return LoraDelta.apply(result, x, layer.lora_A[name].weight, layer.lora_B[name].weight, keep,
                           layer.scaling[name] / (1 - p))


@contextmanager
def cpu_training_kernels(model):
    """Within the block, ``model`` (a peft LoRA model) trains with :func:`block_causal_attention`,
    :class:`BulkDropout` and :func:`fused_lora_forward`; afterwards it has its own attention,
    dropout modules and forwards back."""
    from functools import partial

    from peft.tuners.lora import Linear, LoraLayer
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    base = model.get_base_model()
    attention = base.config._attn_implementation
    swapped, fused = [], []
    for layer in model.modules():
        if isinstance(layer, LoraLayer):
            for name, dropout in layer.lora_dropout.items():
                if isinstance(dropout, torch.nn.Dropout) and dropout.p > 0:
                    layer.lora_dropout[name] = BulkDropout(dropout.p).train(dropout.training)
                    swapped.append((layer, name, dropout))
        if "forward" in vars(layer):
            continue
        if type(layer) is Linear:
            layer.forward = partial(fused_lora_forward, layer)
            fused.append(layer)
        elif type(layer).forward is LlamaRMSNorm.forward and not layer.weight.requires_grad:
            layer.forward = partial(fused_rms_norm_forward, layer)
            fused.append(layer)
    base.set_attn_implementation(BLOCK_ATTENTION)
    try:
        yield
    finally:
        base.set_attn_implementation(attention)
        for layer, name, dropout in swapped:
            layer.lora_dropout[name] = dropout.train(layer.lora_dropout[name].training)
        for layer in fused:
            del layer.forward
