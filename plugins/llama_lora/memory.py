"""Memory for the LLM ranker: what fine-tuning needs, what the machine has, and the C allocator.

:func:`choose_micro_batch` sizes fine-tuning's micro-batches from :func:`fine_tuning_memory`'s
estimate of a step's peak and the memory :func:`available_memory` finds, and stops a run that
cannot fit before it trains. On glibc, :func:`release_memory` hands freed memory back to the
system after ranking batches of changing widths, and :func:`keep_freed_memory` keeps it for the
next step while fine-tuning.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path

__all__ = ["choose_micro_batch", "fine_tuning_memory", "available_memory", "resident_memory", "release_memory",
           "keep_freed_memory"]

log = logging.getLogger("palr")


def choose_micro_batch(model, batches, config, on_gpu: bool) -> tuple[int, int, float]:
    """Examples per forward pass, the estimated peak bytes of one and the memory budget in bytes
    (:func:`fine_tuning_memory`, at the longest example): ``config.micro_batch_size``, or the
    largest power-of-two share of ``config.batch_size`` within ``config.max_memory_gb``.

    :param model: the peft model about to be fine-tuned.
    :param batches: its :class:`~palr.plugins.llama_lora.training.InstructionBatches`.
    :param config: the ranker's :class:`~palr.plugins.llama_lora.config.LlamaLoraConfig`.
    :raises ValueError: before training, when even one example per forward pass cannot fit the
        memory available now, saying which options to change.
    """
    base = model.get_base_model()
    longest = batches.longest
    answer = max(1, max(len(label) for _, label in batches.pairs))
    weights = list(base.parameters())
    size = dict(parameters=sum(p.numel() for p in weights), weight_bytes=weights[0].element_size(),
                trainable=sum(p.numel() for p in weights if p.requires_grad),
                checkpointing=config.gradient_checkpointing)

    def need(micro: int) -> int:
        return fine_tuning_memory(base.config, micro, longest, micro * answer, **size)

    available = available_memory("cuda" if on_gpu else "cpu")
    held = 0 if on_gpu else resident_memory()  # the estimate counts what this process holds already
    budget = min(config.max_memory_gb * 1e9 if config.max_memory_gb else math.inf, available + held)
    micro = min(config.micro_batch_size or config.batch_size, config.batch_size)
    while config.micro_batch_size is None and micro > 1 and need(micro) > budget:
        micro = (micro + 1) // 2
    if need(micro) - held > available:
        raise ValueError(
            f"ranker llama_lora: fine-tuning needs about {need(micro) / 1e9:.1f} GB at micro-batches of {micro} "
            f"(examples up to {longest} tokens, {config.model}, {size['weight_bytes'] * 8}-bit weights), and "
            f"{available / 1e9:.1f} GB is available; lower ranker.max_length or ranker.micro_batch_size, set "
            "ranker.gradient_checkpointing=true or ranker.dtype=bfloat16, or free memory")
    log.info("llama_lora: micro-batches of %d (%d per optimizer step), estimated peak %.1f GB (budget %.1f GB, "
             "%.1f GB available)", micro, -(-config.batch_size // micro), need(micro) / 1e9, budget / 1e9,
             available / 1e9)
    return micro, need(micro), budget


def available_memory(device: str = "cpu") -> int:
    """Bytes of memory a new allocation can take now: ``MemAvailable`` of the machine (or of its
    cgroup limit, when lower), or the free memory of the current CUDA device."""
    if device != "cpu":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # a container's limit
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return int(available)


def release_memory() -> None:
    """Hand the memory freed by tensors back to the operating system (glibc's ``malloc_trim``; a
    no-op elsewhere).

    Batches of changing shapes (prompts of every length) fragment glibc's heap, which then grows
    with every batch; a trim after each batch keeps it level, so the ranker calls this after each
    ranking batch (``docs/llm.md`` has the measurements)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def keep_freed_memory(keep: bool = True) -> None:
    """Keep the memory that tensors free in this process, for the next ones (glibc; a no-op elsewhere);
    ``keep=False`` goes back to glibc's defaults and hands what is kept back to the system.

    A fine-tuning step on a CPU allocates its activations and frees them all at its end. glibc
    handed the freed top of its heap back to the system each time, and the next step faulted it in
    again. Setting its trim threshold to 2 GB and its mmap threshold to 32 MB (the largest it takes)
    stops that (fewer page faults per step).

    The setting lasts until ``keep_freed_memory(False)``, which palr's fine-tuner calls when it
    ends: kept for the rest of the process, it would let the first ranking batch after a
    fine-tuning start on top of up to 2 GB the fine-tuning had freed. Going
    back restores the trim threshold and top pad (128 KiB each); the mmap threshold stays at
    32 MB, the ceiling glibc's own adjustment rises to, since glibc cannot turn that back on."""
    libc = _glibc()
    if libc is not None:
        trim_threshold, top_pad, mmap_threshold = -1, -2, -3  # glibc's mallopt parameters
        libc.mallopt(trim_threshold, 2**31 - 1 if keep else 128 * 1024)
        libc.mallopt(top_pad, 64 * 2**20 if keep else 128 * 1024)
        libc.mallopt(mmap_threshold, 32 * 2**20)
        if not keep:
            libc.malloc_trim(0)


@functools.cache
def _glibc():
    """The C library when it is glibc (it has ``malloc_trim``), else ``None``."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def resident_memory() -> int:
    """Bytes this process holds in memory now (Linux; 0 where unknown)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def fine_tuning_memory(config, batch: int, length: int, answer_tokens: int, parameters: int, weight_bytes: int,
                       trainable: int, checkpointing: bool = False, saved_attention: float = 0.0) -> int:
    """Estimated peak bytes of a LoRA fine-tuning step of a decoder-only model.

    :param config: the model's transformers config (``num_hidden_layers``, ``hidden_size``,
        ``intermediate_size``, ``vocab_size``).
    :param batch: examples per forward pass; ``length``: tokens of the longest (padding included).
    :param answer_tokens: label tokens in the batch (the LM head runs on these only).
    :param parameters: weights of the model; ``weight_bytes``: bytes per weight (4: float32, 2: bf16).
    :param trainable: trainable parameters (float32, with a gradient and two AdamW moments).
    :param saved_attention: the share of each head's ``length x length`` attention probabilities
        that the attention keeps for the backward pass (0: a fused kernel that recomputes them;
        1: transformers' eager attention).

    Activations saved for the backward pass cost ``(3.5 * weight_bytes + 18)`` bytes per token, layer
    and hidden + intermediate unit, fitted to SmolLM2-135M's training steps at 1,220 and 4,880 tokens
    per batch in float32 and bf16. Gradient checkpointing keeps one hidden state per layer and one
    layer's activations. A fixed 1.4 GB stands for the libraries, the data, loading the weights and
    the allocator's slack. The estimate is meant to err high rather than low.
    """
    layers, hidden = config.num_hidden_layers, config.hidden_size
    width = hidden + config.intermediate_size
    per_layer = width * (3.5 * weight_bytes + 18)
    tokens = batch * length
    activations = tokens * ((hidden * weight_bytes * layers + per_layer) if checkpointing else per_layer * layers)
    if saved_attention:
        kept = 1 if checkpointing else layers
        activations += int(batch * length**2 * config.num_attention_heads * saved_attention * weight_bytes * kept)
    head = answer_tokens * config.vocab_size * 4 * 3  # float32 logits, their log-softmax and gradient
    return int(activations + head + parameters * weight_bytes + trainable * 16 + 1.4e9)
