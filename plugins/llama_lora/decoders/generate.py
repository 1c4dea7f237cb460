"""``decoder=generate``: the model writes its ranking, constrained to candidates (the paper's way).

Fine-tuned on PALR's instructions, like ``score``. Generation (greedy, or beam search with
``num_beams``) runs under a trie of the candidates' token blocks, so it writes up to
``num_generate`` distinct candidates; the rest follow in the retriever's order. With ``task=v1``
the model chooses from the whole catalogue minus the user's history. No fusion with the
retriever: ``retriever_weight`` does not apply.
"""

from __future__ import annotations

from collections.abc import Sequence

from palr_core import RankRequest

from .protocol import DecoderInputs
from .score import ScoreDecoder
from .shared import batched, palr_prompts

__all__ = ["GenerateDecoder", "candidate_pool"]


class GenerateDecoder(ScoreDecoder):
    """Trie-constrained generation of the ranking (see the module). Its fine-tuning, task and
    scores are ``score``'s (generation has no score of its own); only the ranking differs."""

    fuses_with_retriever = False

    def rank(self, requests: Sequence[RankRequest], inputs: DecoderInputs, weight: float | None) -> list[list[int]]:
        from ..decoding import generate_rankings

        config = inputs.config
        n = min(config.num_generate, min(len(r.candidates) for r in requests))
        prompts = palr_prompts(requests, inputs, n)
        pools = [candidate_pool(r, inputs) for r in requests]
        return batched(prompts, lambda idx: generate_rankings(
            inputs.model, inputs.coder, [prompts[i] for i in idx], [pools[i] for i in idx],
            min(n, min(len(pools[i]) for i in idx)), config.num_beams), inputs)


def candidate_pool(request: RankRequest, inputs: DecoderInputs) -> list[int]:
    """What the model writes from: the candidates (``task=v2``), or the catalogue minus the
    user's history (``v1``, whose prompt lists no candidates)."""
    if inputs.config.task == "v2":
        return [int(c) for c in request.candidates]
    seen = set(int(i) for i in request.history)
    return [i for i in range(len(inputs.context.catalog)) if i not in seen]
