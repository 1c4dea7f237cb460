"""Profile generators: ``keywords`` (from item attributes) and ``llm`` (a causal LM, Figure 2 prompt).

Both follow the output shape of the PALR paper's Figure 2: an itemized list of preference
keywords, each with the history items that support it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from palr_core import RunContext, option
from palr_core.kit.files import write_atomic
from palr_core.kit.llm import chat_prompt_ids, load_causal_lm

__all__ = ["KeywordsConfig", "KeywordProfiles", "LlmProfileConfig", "LlmProfiles", "keyword_lines"]

NOUN = {"movies": "movies", "products": "products"}


@dataclass
class KeywordsConfig:
    """``profile=keywords``.

    :param num_keywords: keywords in a profile (Figure 2 asks for two).
    :param items_per_keyword: history items quoted as support for each keyword.
    :param recent: only the last ``recent`` history items count (the ranker's history cap).
    """

    num_keywords: int = option(2, min=1)
    items_per_keyword: int = option(2, min=1)
    recent: int = option(20, min=1)


class KeywordProfiles:
    """Deterministic profile: the history's most frequent attribute labels and their items.

    ``The user enjoys drama and comedy movies: 1. Drama: "A", "B"; 2. Comedy: "C".``
    Ties go to the label seen most recently. Without attributes the profile is empty.
    """

    def __init__(self, **params) -> None:
        self.config = KeywordsConfig(**params)

    def generate(self, users: Sequence[int], histories: Sequence[np.ndarray], context: RunContext) -> list[str]:
        return [self._one(np.asarray(h)[-self.config.recent:], context) for h in histories]

    def _one(self, history: np.ndarray, context: RunContext) -> str:
        catalog = context.catalog
        lines = keyword_lines(history, catalog, self.config.num_keywords, self.config.items_per_keyword)
        if not lines:
            return ""
        noun = NOUN.get(catalog.domain, "items")
        names = " and ".join(label.lower() for label, _ in lines)
        listed = "; ".join(f"{k}. {label}: " + ", ".join(f'"{catalog.render(i)}"' for i in items)
                           for k, (label, items) in enumerate(lines, start=1))
        return f"The user enjoys {names} {noun}: {listed}."


def keyword_lines(history: np.ndarray, catalog, num_keywords: int, per_keyword: int) -> list[tuple[str, list[int]]]:
    """The top labels of a history, each with its most recent supporting items."""
    counts: Counter = Counter()
    last_seen: dict[str, int] = {}
    for position, item in enumerate(history.tolist()):
        for label in dict.fromkeys(catalog.labels(item)):
            counts[label] += 1
            last_seen[label] = position
    top = sorted(counts, key=lambda label: (-counts[label], -last_seen[label], label))[:num_keywords]
    lines = []
    for label in top:
        items = [i for i in reversed(history.tolist()) if label in catalog.labels(i)][:per_keyword]
        lines.append((label, items))
    return lines


@dataclass
class LlmProfileConfig:
    """``profile=llm``.

    :param model: a registered model name (``smollm2-135m``), a local Hugging Face causal-LM
        folder or a ``.gguf`` file (:func:`palr_core.kit.llm.load_causal_lm`).
    :param template: the Figure 2 prompt; ``{history}`` is filled with ``"title": keywords`` pairs.
    :param max_new_tokens: length limit of a profile.
    :param recent: only the last ``recent`` history items are shown.
    :param batch_size: prompts per ``generate`` call.
    :param dtype: ``auto`` (bf16 on GPU, float32 on CPU), ``float32``, ``bfloat16``.
    """

    model: str = "smollm2-135m"
    template: str = ("Your task is to use two keywords to summarize user's preference based on history "
                     "interactions. The output is an itemized list based on importance. The output "
                     'template is: {{1. KEY_WORD_1: "HISTORY_ITEM_1", "HISTORY_ITEM_2"; 2. KEY_WORD_2: '
                     '"HISTORY_ITEM_3"}} The history {noun} and their keywords are: {history} Output:')
    max_new_tokens: int = option(48, min=1)
    recent: int = option(20, min=1)
    batch_size: int = option(8, min=1)
    dtype: str = option("auto", choices=("auto", "float32", "bfloat16", "float16"))


class LlmProfiles:
    """A causal LM summarises each history (greedy decoding, seeded); profiles are cached on disk
    under ``<cache_dir>/profiles/`` keyed by model, prompt and history, so reruns reuse them."""

    def __init__(self, **params) -> None:
        self.config = LlmProfileConfig(**params)
        if self.config.model in ("", "???"):
            raise ValueError("profile=llm needs profile.model: a registered name (smollm2-135m), a "
                             "local Hugging Face causal-LM folder or a .gguf file (no model hub is reachable)")
        self._model = None

    def check(self, context: RunContext) -> None:
        """Before the run's first stage: the model exists (a registered name, a folder or a .gguf file)."""
        from palr_core.kit.llm import resolve_language_model

        resolve_language_model(self.config.model, context.cache_dir, models=context.language_models,
                               option="profile.model")

    def generate(self, users: Sequence[int], histories: Sequence[np.ndarray], context: RunContext) -> list[str]:
        prompts = [self._prompt(np.asarray(h)[-self.config.recent:], context) for h in histories]
        cache = Path(context.cache_dir) / "profiles"
        cache.mkdir(parents=True, exist_ok=True)
        paths = [cache / f"{self._key(p)}.json" for p in prompts]
        todo = [k for k, path in enumerate(paths) if not path.is_file()]
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(todo), self.config.batch_size), desc="profiles (llm)",
                          disable=None if todo and context.trainer.enable_progress_bar else True):
            batch = todo[start:start + self.config.batch_size]
            for k, text in zip(batch, self._write([prompts[k] for k in batch], context)):
                write_atomic(paths[k], json.dumps({"user": int(users[k]), "prompt": prompts[k], "profile": text}))
        return [json.loads(path.read_text())["profile"] for path in paths]

    def _prompt(self, history: np.ndarray, context: RunContext) -> str:
        catalog = context.catalog
        pairs = "; ".join(f'"{catalog.render(i)}": ' + ", ".join(catalog.labels(i)) for i in history.tolist())
        return self.config.template.format(noun=NOUN.get(catalog.domain, "items"), history=pairs + ";")

    def _key(self, prompt: str) -> str:
        model = self.config.model
        if Path(model).expanduser().exists():
            model = str(Path(model).expanduser().resolve())
        source = f"{model}|{self.config.max_new_tokens}|{prompt}"
        return hashlib.sha256(source.encode()).hexdigest()[:32]

    def _write(self, prompts: list[str], context: RunContext) -> list[str]:
        import torch

        model, tokenizer = self._load(context)
        # the tokenizer pads on the left (see _load): every row ends where generation starts
        batch = tokenizer.pad({"input_ids": [chat_prompt_ids(tokenizer, p) for p in prompts]},
                              return_tensors="pt").to(model.device)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=self.config.max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def _load(self, context: RunContext):
        if self._model is None:
            import torch

            model, tokenizer = load_causal_lm(self.config.model, context.cache_dir, self.config.dtype,
                                              padding_side="left", option="profile.model",
                                              models=context.language_models)
            self._model = (model.to("cuda") if torch.cuda.is_available() else model, tokenizer)
        return self._model
