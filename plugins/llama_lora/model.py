"""The causal LM behind the ranker: a local model, or a tiny LLaMA with a locally trained tokenizer.

There is no model hub here, so ``model: tiny`` builds a randomly initialised
``LlamaForCausalLM`` from a ``LlamaConfig`` and a byte-level BPE tokenizer trained (with the
``tokenizers`` library) on the catalogue's text and the prompt templates. Any other value of
``model`` goes to :func:`palr_core.load_causal_lm`: a registered name (``smollm2-135m``), a
local Hugging Face folder or a ``.gguf`` file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from palr_core import ItemCatalog
from palr_core.kit.llm import load_causal_lm, transformers_quietly

from .config import LoraSettings, TinyModelSettings

__all__ = ["tiny_base", "tokenizer_corpus", "train_tokenizer", "build_tiny_model", "wrap_lora",
           "adapters_in_base_dtype"]

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


#: modules trained in full (saved inside the adapter) when ``train_base`` is on
BASE_MODULES = ["embed_tokens", "lm_head", "mlp", "norm"]


def tiny_base(folder: Path, catalog: ItemCatalog, templates: Mapping[str, Mapping[str, str]],
              settings: TinyModelSettings, cache_dir) -> tuple:
    """``(model, tokenizer)`` of ``model: tiny``, saved in ``folder`` the first time (a tokenizer
    trained on :func:`tokenizer_corpus`, a random init from torch's seeded generator) and read
    back from it after that, so a resumed run fine-tunes the same base.

    The init draws from a copy of torch's generator state, which is put back afterwards: whether
    the base was built here or read from ``folder`` (left by an interrupted run), what is drawn
    next (the LoRA init, dropout) is the same, and so is the fine-tuning."""
    if (folder / "config.json").is_file():
        return load_causal_lm(folder, cache_dir, "float32")
    import torch

    tokenizer = train_tokenizer(tokenizer_corpus(catalog, templates), settings.vocab_size)
    with torch.random.fork_rng(devices=[]):
        model = build_tiny_model(tokenizer, settings)
    partial = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")  # renamed when complete: no half a base
    shutil.rmtree(partial, ignore_errors=True)
    with transformers_quietly():
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return model, tokenizer


def tokenizer_corpus(catalog: ItemCatalog, templates: Mapping[str, Mapping[str, str]]) -> list[str]:
    """What the tiny model's tokenizer is trained on: every item's title and labels, the prompt
    templates, and the numbers 0-99 (prompts say how many items they ask for)."""
    texts = [f'"{catalog.render(i)}", ' + " ".join(catalog.labels(i)) for i in range(len(catalog))]
    texts += [t for tasks in templates.values() for t in tasks.values()]
    return texts * 2 + [" ".join(str(n) for n in range(100))]


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def build_tiny_model(tokenizer, settings: TinyModelSettings):
    """A randomly initialised LLaMA-architecture model sized for a CPU (drawn from torch's global
    generator, which palr seeds at the start of every pipeline stage)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=settings.hidden_size,
        intermediate_size=settings.intermediate_size, num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads, num_key_value_heads=settings.heads,
        max_position_embeddings=settings.max_positions, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def wrap_lora(model, lora: LoraSettings, train_base: bool):
    """The peft model: LoRA on ``lora.target_modules``; with ``train_base`` also full copies of
    embeddings, MLPs, norms and the LM head (``modules_to_save``), so the adapter file alone
    holds everything that was trained."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
                        modules_to_save=list(BASE_MODULES) if train_base else None)
    with transformers_quietly():  # peft asks transformers a deprecated question; nothing to act on
        return get_peft_model(model, config)


def load_lora(model, folder: Path):
    """The peft model: ``model`` with the LoRA adapter saved in ``folder``, for ranking. Whole
    files whose tensors do not fit ``model`` (another base, other LoRA settings, crafted shapes)
    are refused in one line naming the file and the first mismatch, not peft's traceback."""
    from peft import PeftModel

    with transformers_quietly():
        try:
            return PeftModel.from_pretrained(model, folder).eval()
        except RuntimeError as exc:
            mismatch = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), None)
            if mismatch is None:
                raise
            weights = folder / "adapter_model.safetensors"
            raise ValueError(f"{weights if weights.is_file() else folder}: its weights do not fit the base model "
                             f"({mismatch}); expected the adapter palr saved for this model and these LoRA "
                             "settings") from None


def adapters_in_base_dtype(model) -> None:
    """For ranking: the LoRA weights cast to the base model's dtype when that is 16-bit.

    peft keeps adapters in float32 so that they train well; at inference that costs a float32 copy
    of every adapted projection's input and output (7-9 % of a bf16 SmolLM2's ranking time on a
    CPU, measured). Rounding the trained adapter to bf16 changes each delta by at most 2**-8 of itself, far
    less than adding it to the bf16 base would (why the adapter is not merged). The ranker calls
    this only after fine-tuning; training starts from a fresh or freshly loaded float32 adapter.
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = base.get_input_embeddings().weight.dtype
    if dtype not in (torch.bfloat16, torch.float16):
        return
    for name, parameter in model.named_parameters():
        if "lora_" in name and parameter.dtype != dtype:
            parameter.data = parameter.data.to(dtype)
