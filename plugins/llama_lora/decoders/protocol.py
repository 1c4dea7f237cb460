"""The contract between the llama_lora ranker and its decoders.

The ranker loads the model, adds LoRA, fine-tunes it and chooses the fusion weight; its decoder
decides what the model is fine-tuned on and how rankings are read from it. A decoder is built
with no arguments, once per ranker, and keeps no model of its own: every call brings
:class:`DecoderInputs`. No torch here (the ranker's options import the registry at start-up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from palr_core import RankRequest, RunContext, TrainingData

if TYPE_CHECKING:
    from ..config import LlamaLoraConfig
    from ..decoding import ItemCoder
    from ..training import InstructionBatches

__all__ = ["Decoder", "DecoderInputs", "DECODER_OPTIONS"]

#: ranker options that only some decoders' fine-tuning reads: in the fine-tuning checkpoints'
#: fingerprint only for a decoder that names them in its ``fine_tuning_options``, so that decoders
#: whose examples are the same (``score``, ``generate``) share one fine-tuning
DECODER_OPTIONS = frozenset({"decoder", "choices"})


@dataclass(frozen=True)
class DecoderInputs:
    """What the ranker hands its decoder on every call."""

    #: the causal LM with its LoRA adapter (a peft model): in training mode while examples are
    #: built for fine-tuning, in eval mode and on its ranking device when ranking
    model: Any
    #: items as token blocks and prompts as token ids, for the model's tokenizer
    coder: ItemCoder
    #: the ranker's options (``templates``, ``max_length``, ``rank_batch_size``, ...)
    config: LlamaLoraConfig
    #: the run: its catalogue, profile generator, seeded random streams and trainer settings
    context: RunContext


@runtime_checkable
class Decoder(Protocol):
    """How the llama_lora ranker turns its fine-tuned causal LM into rankings.

    Register one in :data:`palr.plugins.llama_lora.decoders.DECODERS` under the name that
    ``ranker.decoder`` selects it by.
    """

    #: the options of :data:`DECODER_OPTIONS` its fine-tuning examples depend on (empty: PALR's
    #: instructions, which depend on none of them)
    fine_tuning_options: frozenset[str]
    #: ``True``: :meth:`rank` orders the candidates by :meth:`scores` fused with their retriever
    #: rank, so ``retriever_weight`` applies and ``auto`` tunes it; ``False``: :meth:`rank` is
    #: handed no weight (``None``) and orders on its own
    fuses_with_retriever: bool

    def task(self, config: LlamaLoraConfig) -> str:
        """The instruction task its fine-tuning teaches, as the results row names it (``v2`` in
        ``PALR v2 (llama_lora tiny, score)``)."""
        ...

    def training_batches(self, data: TrainingData, inputs: DecoderInputs) -> InstructionBatches:
        """The fine-tuning examples, tokenized: built from ``data``'s training prefixes only
        (never a validation or test item), drawn from ``inputs.context.rng(...)`` streams so a
        run's seed fixes them, each at most ``config.max_length`` tokens."""
        ...

    def scores(self, requests: Sequence[RankRequest], inputs: DecoderInputs) -> list[list[float]]:
        """The model's own score of candidates, higher is better, before any fusion: one list per
        request, scoring its first ``len(list)`` candidates (all of them, or the top few a decoder
        shows the model)."""
        ...

    def rank(self, requests: Sequence[RankRequest], inputs: DecoderInputs, weight: float | None) -> list[list[int]]:
        """Each request's candidates best first: one list per request, distinct candidates of that
        request, any number of them (the ranker appends the missing ones in the retriever's
        order). ``weight``: the fusion weight when :attr:`fuses_with_retriever` (``inf``: keep
        the retriever's order without running the model), else ``None``."""
        ...
