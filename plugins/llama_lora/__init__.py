"""Built-in plugin: the ``llama_lora`` ranker (PALR fine-tuning with LoRA, grounded ranking)."""

from palr_core import hookimpl

from .config import LlamaLoraConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_rankers(register):
    register("llama_lora", "palr.plugins.llama_lora.ranker:LlamaLoraRanker", config=LlamaLoraConfig)
