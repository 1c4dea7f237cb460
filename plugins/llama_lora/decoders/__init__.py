"""The llama_lora ranker's decoders: one module each, selected by ``ranker.decoder``.

``score`` (:mod:`.score`), ``generate`` (:mod:`.generate`) and ``verbalizer`` (:mod:`.verbalizer`)
each follow the :class:`Decoder` protocol (:mod:`.protocol`). A new decoder is a module with a
class like theirs and one line in :data:`DECODERS`; its name is then a value of
``ranker.decoder``. No torch is imported here: the ranker's options read :data:`DECODERS` when
palr starts.
"""

from __future__ import annotations

from .generate import GenerateDecoder
from .protocol import DECODER_OPTIONS, Decoder, DecoderInputs
from .score import ScoreDecoder
from .verbalizer import VerbalizerDecoder

__all__ = ["DECODERS", "Decoder", "DecoderInputs", "DECODER_OPTIONS"]

#: ``ranker.decoder`` name -> the decoder class (built with no arguments, once per ranker)
DECODERS: dict[str, type[Decoder]] = {
    "score": ScoreDecoder,
    "generate": GenerateDecoder,
    "verbalizer": VerbalizerDecoder,
}
