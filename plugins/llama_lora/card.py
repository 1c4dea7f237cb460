"""The model card written beside a fine-tuned adapter (``<work_dir>/llama_lora/adapter/README.md``)."""

from __future__ import annotations

import json
from pathlib import Path

from palr_core import RunContext

from .config import LlamaLoraConfig

__all__ = ["model_card"]


def model_card(cfg: LlamaLoraConfig, fit_state: dict, base: str, train_base: bool, out: Path,
               context: RunContext) -> str:
    """The adapter's README.md: its base model (``base``, as a reader can find it again), what it
    was trained on and how (``fit_state``: examples, epochs, steps), how to use it again."""
    import palr_core

    registered = context.language_models.get(str(cfg.model))
    about = (f"the run's own tiny LLaMA (random init, tokenizer trained on the catalogue), saved in {base}"
             if cfg.model == "tiny" else
             f"`{base}`" + (f", registered by {registered.distribution or registered.plugin}: "
                            f"{registered.description}" if registered else ""))
    catalog = context.catalog
    lora = cfg.lora
    return f"""---
base_model: {json.dumps(base)}
library_name: peft
pipeline_tag: text-generation
tags:
- palr
- lora
- recommendation
---

# PALR ranker adapter ({cfg.task})

A LoRA adapter that ranks a user's candidate items from their history and profile, trained by
palr {palr_core.__version__} (PALR, "Personalization Aware LLMs for Recommendation").

- **Base model:** {about}
- **Task:** {cfg.task} ({"Recommend + Recommend_Retrieval" if cfg.task == "v2" else "Recommend"}), {fit_state["examples"]:,} instruction examples, {fit_state["epochs"]} epochs, {fit_state["global_step"]} optimizer steps
- **Data:** {len(catalog) if catalog is not None else "?"} items ({catalog.domain if catalog is not None else "?"}), {cfg.instructions.user_fraction:.0%} of the training users
- **LoRA:** r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, target modules {", ".join(lora.target_modules)}{"; the base model's embeddings and head trained too" if train_base else ""}
- **Run folder:** {Path(context.work_dir).resolve()} (its `config_resolved.yaml` has every setting)

Use it: `palr-run ranker=llama_lora ranker.model={cfg.model} ranker.adapter={out.resolve()}` ranks
with it in another run; `palr.load_run("{Path(context.work_dir).resolve()}")` loads the whole run in Python.
"""
