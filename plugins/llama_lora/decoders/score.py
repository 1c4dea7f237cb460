"""``decoder=score``: each candidate's title likelihood after the prompt, fused with the retriever's rank.

Fine-tuned on PALR's instructions. One forward pass scores all users of a batch and all their
candidates (:func:`~palr.plugins.llama_lora.decoding.packed_block_scores`): a candidate's score
is the mean token log-likelihood of its token block written right after the user's prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from palr_core import RankRequest, TrainingData

from .protocol import DecoderInputs
from .shared import batched, fused_rankings, palr_instruction_batches, palr_prompts

__all__ = ["ScoreDecoder", "title_scores"]


class ScoreDecoder:
    """Candidates by the likelihood of their titles (see the module)."""

    fine_tuning_options = frozenset()
    fuses_with_retriever = True

    def task(self, config) -> str:
        return config.task

    def training_batches(self, data: TrainingData, inputs: DecoderInputs):
        return palr_instruction_batches(data, inputs)

    def scores(self, requests: Sequence[RankRequest], inputs: DecoderInputs) -> list[list[float]]:
        return title_scores(requests, inputs)

    def rank(self, requests: Sequence[RankRequest], inputs: DecoderInputs, weight: float | None) -> list[list[int]]:
        return fused_rankings(self, requests, inputs, weight)


def title_scores(requests: Sequence[RankRequest], inputs: DecoderInputs) -> list[list[float]]:
    """Every candidate's mean token log-likelihood written right after its user's PALR prompt."""
    from ..decoding import packed_block_scores

    coder, config = inputs.coder, inputs.config
    pad, multiple = coder.tokenizer.pad_token_id, config.pad_to_multiple_of
    n = min(config.num_generate, min(len(r.candidates) for r in requests))
    prompts = palr_prompts(requests, inputs, n)
    blocks = [[list(coder.block(int(c))) for c in r.candidates] for r in requests]
    return batched(prompts, lambda idx: packed_block_scores(
        inputs.model, [prompts[i] for i in idx], [blocks[i] for i in idx], pad, multiple), inputs)
