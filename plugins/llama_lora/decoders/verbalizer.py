"""``decoder=verbalizer``: the prompt lists the top candidates under labels, the model names one.

After LlamaRec: the prompt shows the retriever's top ``choices`` candidates labelled ``A``,
``B``, ...; one forward pass reads the next-token distribution over those labels, and a
candidate's score is its label's log-probability among them (the rest follow in the retriever's
order). Fine-tuned with a listwise cross-entropy on the label of the true next item, shown among
``choices - 1`` similar negatives (``task=v2``'s negatives).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from palr_core import RankRequest, TrainingData

from ..instructions import build_choice_instructions
from ..prompts import build_prompt
from .protocol import DecoderInputs
from .shared import batched, fused_rankings, user_profiles

__all__ = ["VerbalizerDecoder", "CHOICE_LABELS", "choice_prompt"]

log = logging.getLogger("palr")

#: the verbalizer's candidate labels, one token each in the tokenizers palr has met
CHOICE_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class VerbalizerDecoder:
    """Labelled candidates, one label read (see the module)."""

    fine_tuning_options = frozenset({"decoder", "choices"})
    fuses_with_retriever = True

    def __init__(self) -> None:
        self._labels: tuple = (None, [])  # (tokenizer, each label's token id or None)

    def task(self, config) -> str:
        return "choice"

    def training_batches(self, data: TrainingData, inputs: DecoderInputs):
        from ..training import ChoiceBatches

        config, context, coder = inputs.config, inputs.context, inputs.coder
        examples = build_choice_instructions(data, config.choices, config.instructions,
                                             context.rng("choice instructions"))
        profiles = user_profiles([e.user for e in examples], [e.history for e in examples], context)
        rows = []
        for example, profile in zip(examples, profiles):
            candidates = [int(c) for c in example.candidates]
            prompt = choice_prompt(example.history, candidates, profile, inputs)
            rows.append((prompt, self.label_ids(coder.tokenizer, len(candidates)),
                         candidates.index(int(example.targets[0]))))
        log.info("llama_lora: %d choice examples (%d candidates each) from %d users", len(rows),
                 config.choices, len({e.user for e in examples}))
        return ChoiceBatches(rows, coder.tokenizer, config.pad_to_multiple_of)

    def scores(self, requests: Sequence[RankRequest], inputs: DecoderInputs) -> list[list[float]]:
        """The log-probability of each shown candidate's label among the shown ones (the top
        ``choices`` candidates only)."""
        from ..decoding import choice_scores

        config, tokenizer = inputs.config, inputs.coder.tokenizer
        shown = [[int(c) for c in r.candidates[:config.choices]] for r in requests]
        prompts = [choice_prompt(r.history, c, r.profile, inputs) for r, c in zip(requests, shown)]
        labels = [self.label_ids(tokenizer, len(c)) for c in shown]
        return batched(prompts, lambda idx: choice_scores(
            inputs.model, [prompts[i] for i in idx], [labels[i] for i in idx], tokenizer.pad_token_id,
            config.pad_to_multiple_of), inputs)

    def rank(self, requests: Sequence[RankRequest], inputs: DecoderInputs, weight: float | None) -> list[list[int]]:
        return fused_rankings(self, requests, inputs, weight)

    def label_ids(self, tokenizer, n: int) -> list[int]:
        """The token ids of the first ``n`` labels (``A``, ``B``, ...), one token each, or a
        ``ValueError`` naming the labels this tokenizer splits."""
        if self._labels[0] is not tokenizer:
            ids = [tokenizer(label, add_special_tokens=False)["input_ids"] for label in CHOICE_LABELS]
            self._labels = (tokenizer, [i[0] if len(i) == 1 else None for i in ids])
        known = self._labels[1][:n]
        if None in known:
            bad = [label for label, i in zip(CHOICE_LABELS, known) if i is None]
            raise ValueError(f"ranker.decoder=verbalizer: this tokenizer writes the labels {bad} as more than one "
                             "token; use ranker.choices below that or another decoder")
        return list(known)


def choice_prompt(history, candidates: Sequence[int], profile: str | None, inputs: DecoderInputs) -> list[int]:
    """The choice prompt's token ids: the history, then the candidates each after its label."""
    config = inputs.config
    text = build_prompt(config.templates, "choice", inputs.context.catalog,
                        history[-config.instructions.max_history:], candidates, profile, n=1,
                        labels=CHOICE_LABELS[:len(candidates)])
    return inputs.coder.prompt(text, config.max_length - 1)
