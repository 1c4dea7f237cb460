"""The llama_lora ranker's decoders: a registry of small protocol classes, and a ranker that never
asks for one by name."""

import ast
from pathlib import Path

import pytest
from palr.plugins.llama_lora.decoders import DECODERS, Decoder
from palr.plugins.llama_lora.decoders.shared import palr_instruction_batches

from palr_core.plugins import ComponentConfigError

from .test_llama_lora import SMALL, _requests

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "llama_lora"


class ReversedDecoder:
    """A new decoder, written as a module would be: fine-tuned on PALR's instructions, it ranks the
    candidates in the reverse of the retriever's order (something no built-in decoder does)."""

    fine_tuning_options = frozenset()
    fuses_with_retriever = False

    def task(self, config):
        return config.task

    def training_batches(self, data, inputs):
        return palr_instruction_batches(data, inputs)

    def scores(self, requests, inputs):
        return [[-float(k) for k in range(len(r.candidates))][::-1] for r in requests]

    def rank(self, requests, inputs, weight):
        assert weight is None  # a decoder that does not fuse is handed no weight
        return [[int(c) for c in r.candidates][::-1] for r in requests]


def test_a_new_decoder_is_one_class_and_one_registry_line(registry, run_context, training_data, small_split,
                                                           monkeypatch):
    monkeypatch.setitem(DECODERS, "reversed", ReversedDecoder)  # the registry line
    ranker = registry.build("ranker", "llama_lora", {**SMALL, "decoder": "reversed"})
    assert isinstance(ranker.decoder, ReversedDecoder) and isinstance(ranker.decoder, Decoder)
    ranker.fit(training_data, run_context)
    assert ranker.fit_state["examples"] > 0 and ranker.fit_state["global_step"] > 0
    requests = _requests(small_split, range(4))
    assert ranker.rank(requests, run_context) == [r.candidates.tolist()[::-1] for r in requests]
    assert ranker.tune(requests, [int(r.candidates[0]) for r in requests], run_context) == {}  # nothing to fuse
    assert ranker.label == "PALR v2 (llama_lora tiny, reversed)"


def test_the_decoder_choices_are_the_registry_s_keys(registry, monkeypatch):
    for name in DECODERS:
        ranker = registry.build("ranker", "llama_lora", {**SMALL, "decoder": name})
        assert isinstance(ranker.decoder, DECODERS[name]) and isinstance(ranker.decoder, Decoder)
    with pytest.raises(ComponentConfigError, match=f"ranker.decoder must be one of {', '.join(DECODERS)}, got 'rev'"):
        registry.build("ranker", "llama_lora", {**SMALL, "decoder": "rev"})
    monkeypatch.setitem(DECODERS, "rev", ReversedDecoder)
    with pytest.raises(ValueError, match="ranker.decoder must be one of .*, rev, got 'nope'"):
        registry.build("ranker", "llama_lora", {**SMALL, "decoder": "nope"})
    assert isinstance(registry.build("ranker", "llama_lora", {**SMALL, "decoder": "rev"}).decoder, ReversedDecoder)


def test_only_the_decoders_know_decoder_names():
    """No module of the plugin outside ``decoders/`` compares ``decoder`` or a decoder's name, and
    the ranker's class stays small: everything a decoder decides lives in its own module."""
    names = set(DECODERS)
    for path in sorted(PLUGIN.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):  # decoder == "score", "score" in ..., x in ("score", ...)
                parts = [node.left, *node.comparators]
                parts += [e for p in parts if isinstance(p, (ast.Tuple, ast.List, ast.Set)) for e in p.elts]
                text = ast.unparse(node)
                assert not any(isinstance(p, ast.Constant) and p.value in names for p in parts), f"{path.name}: {text}"
                by_name = any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops)
                assert not (by_name and any(isinstance(p, ast.Attribute) and p.attr == "decoder" for p in parts)), \
                    f"{path.name}: {text}"
        if path.name == "ranker.py":
            [ranker] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LlamaLoraRanker"]
            assert ranker.end_lineno - ranker.lineno < 250
