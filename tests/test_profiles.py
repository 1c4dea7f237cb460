"""Profile generators: ``keywords`` (Figure 2 shape, deterministic) and ``llm`` (cached on disk)."""

import numpy as np
import pytest

from palr_core import ItemCatalog


@pytest.fixture
def catalog():
    return ItemCatalog(ids=[1, 2, 3, 4], titles=["Gigi", "Alien", "Heat", "Aliens"],
                       attributes={"genres": [["Musical"], ["Sci-Fi", "Horror"], ["Crime"], ["Sci-Fi"]]})


def test_keywords_profile_lists_top_genres_with_their_items(registry, run_context, catalog):
    run_context.catalog = catalog
    profiler = registry.build("profile", "keywords", {})
    [text] = profiler.generate([0], [np.array([0, 1, 2, 3])], run_context)
    assert text == 'The user enjoys sci-fi and crime movies: 1. Sci-Fi: "Aliens", "Alien"; 2. Crime: "Heat".'


def test_keywords_profile_is_empty_without_attributes(registry, run_context):
    run_context.catalog = ItemCatalog(ids=[1, 2], titles=["A", "B"])
    assert registry.build("profile", "keywords", {}).generate([0], [np.array([0, 1])], run_context) == [""]


def test_llm_profile_names_an_unknown_model(registry, run_context):
    profiler = registry.build("profile", "llm", {"model": "no-such-model"})
    with pytest.raises(FileNotFoundError, match="profile.model='no-such-model' is neither a registered model name"):
        profiler.generate([0], [np.array([0, 1])], run_context)


@pytest.mark.slow
def test_llm_profiles_are_generated_once_and_cached(registry, run_context, catalog, tmp_path):
    model_dir = _tiny_causal_lm(tmp_path / "lm", catalog)
    run_context.catalog = catalog
    profiler = registry.build("profile", "llm", {"model": str(model_dir), "max_new_tokens": 8})
    histories = [np.array([0, 1]), np.array([2, 3])]
    first = profiler.generate([0, 1], histories, run_context)
    cached = sorted((run_context.cache_dir / "profiles").glob("*.json"))
    assert len(cached) == 2 and all(isinstance(t, str) for t in first)  # a random LM may write nothing
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = registry.build("profile", "llm", {"model": str(model_dir), "max_new_tokens": 8})
    assert again.generate([0, 1], histories, run_context) == first
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # read back, not regenerated
    assert again._model is None  # the model was never loaded


def _tiny_causal_lm(path, catalog):
    """A random tiny LLaMA and a word-level tokenizer, saved like any local checkpoint."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for t in catalog.titles + ["user", "keywords", "history", "Output"] for w in t.split()})
    vocab = {w: k for k, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         pad_token_id=0, bos_token_id=1, eos_token_id=2))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
