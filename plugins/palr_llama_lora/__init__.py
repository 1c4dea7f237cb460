"""Built-in plugin: the ``llama_lora`` ranker (PALR fine-tuning with LoRA, grounded ranking)."""

from palr_core import hookimpl


@hookimpl
def register_rankers(register):
    from .ranker import LlamaLoraConfig, LlamaLoraRanker

    register("llama_lora", LlamaLoraRanker, config=LlamaLoraConfig)
