"""What several decoders do alike: PALR's instructions and prompts, batched ranking, fused orders."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np

from palr_core import RankRequest, RunContext, TrainingData

from ..fusion import fused_order
from ..instructions import build_instructions
from ..memory import release_memory
from ..prompts import build_prompt
from .protocol import Decoder, DecoderInputs

__all__ = ["palr_instruction_batches", "palr_prompts", "user_profiles", "batched", "fused_rankings"]

log = logging.getLogger("palr")


def palr_instruction_batches(data: TrainingData, inputs: DecoderInputs):
    """PALR's Recommend (``task=v1``) or Recommend + Recommend_Retrieval (``v2``) examples: a
    prompt, and the target items' token blocks as the answer (an
    :class:`~palr.plugins.llama_lora.training.InstructionBatches`)."""
    from ..training import InstructionBatches

    config, context, coder = inputs.config, inputs.context, inputs.coder
    # salt 5: the stream palr 0.1 drew instructions from, so documented runs stay reproducible
    examples = build_instructions(data, config.task, config.instructions, context.rng(5))
    profiles = user_profiles([e.user for e in examples], [e.history for e in examples], context)
    pairs = []
    for example, profile in zip(examples, profiles):
        text = build_prompt(config.templates, example.task, context.catalog, example.history,
                            example.candidates, profile, n=len(example.targets))
        label = coder.label(example.targets)
        pairs.append((coder.prompt(text, config.max_length - len(label)), label))
    log.info("llama_lora: %d instruction examples from %d users", len(pairs), len({e.user for e in examples}))
    return InstructionBatches(pairs, coder.tokenizer, config.pad_to_multiple_of)


def palr_prompts(requests: Sequence[RankRequest], inputs: DecoderInputs, n: int) -> list[list[int]]:
    """Each request's ranking prompt as token ids, asking for ``n`` items: Recommend_Retrieval
    with the candidates for ``task=v2``, Recommend (history only) for ``v1``."""
    config, catalog = inputs.config, inputs.context.catalog
    task = "retrieval" if config.task == "v2" else "recommend"
    return [inputs.coder.prompt(build_prompt(
        config.templates, task, catalog, r.history[-config.instructions.max_history:],
        r.candidates if task == "retrieval" else None, r.profile, n=n), config.max_length)
        for r in requests]


def user_profiles(users: Sequence[int], histories: Sequence[np.ndarray], context: RunContext) -> list[str]:
    """The run's profile of each user from the given history (``""`` each without a generator)."""
    if context.profiles is None or not users:
        return [""] * len(users)
    return context.profiles.generate(list(users), list(histories), context)


def batched(prompts: list[list[int]], run: Callable[[list[int]], list], inputs: DecoderInputs) -> list:
    """``run(indices)`` over batches of ``rank_batch_size`` prompts of similar length (less
    padding), with progress (a bar on a terminal, else a log line per tenth); results back in the
    prompts' order."""
    from palr_core.progress import progress

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    size = inputs.config.rank_batch_size
    results: list = [None] * len(prompts)
    with progress(len(prompts), f"ranking ({inputs.config.decoder})", inputs.context.trainer.enable_progress_bar) as bar:
        for start in range(0, len(order), size):
            idx = order[start:start + size]
            for i, result in zip(idx, run(idx)):
                results[i] = result
            release_memory()  # batches of every width fragment the heap
            bar.update(len(idx))
    return results


def fused_rankings(decoder: Decoder, requests: Sequence[RankRequest], inputs: DecoderInputs,
                   weight: float) -> list[list[int]]:
    """``rank`` of a decoder that fuses: its :meth:`~Decoder.scores` fused with each candidate's
    retriever rank at ``weight``; ``inf`` returns the retriever's order without running the model."""
    if math.isinf(weight):  # auto kept the retriever's order: the model would not change it
        return [[int(c) for c in r.candidates] for r in requests]
    return [fused_order(r, s, weight) for r, s in zip(requests, decoder.scores(requests, inputs))]
