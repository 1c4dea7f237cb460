"""The ``llama_lora`` Ranker: PALR instruction fine-tuning with LoRA, then grounded ranking.

``fit`` builds PALR instruction examples (:mod:`palr_core.instructions`), renders them with the
configured templates (and the run's user profiles), and fine-tunes a causal LM with peft LoRA in
a Lightning Trainer from the ``trainer`` config group. ``rank`` orders each user's candidates
with the ``generate`` decoder (trie-constrained generation, the paper's way) or the ``score``
decoder (one batched forward pass). Output layout under ``<work_dir>/llama_lora/``: ``base/``
(tiny model and tokenizer), ``adapter/`` (peft safetensors), ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from palr_core import (
    RankRequest,
    RunContext,
    TrainingData,
    complete_ranking,
    rank_from_lists,
)
from palr_core.config import check_options
from palr_core.kit.files import write_atomic
from palr_core.kit.instructions import InstructionConfig, build_choice_instructions, build_instructions
from palr_core.kit.llm import (
    available_memory,
    fine_tuning_memory,
    load_causal_lm,
    release_memory,
    resident_memory,
    resolve_dtype,
    transformers_quietly,
)
from palr_core.kit.prompts import build_prompt, check_templates
from palr_core.kit.training import claim_folder, fit, make_trainer

from .config import CHOICE_LABELS, DECODERS, LlamaLoraConfig, LoraSettings, TinyModelSettings
from .decoding import ItemCoder, choice_scores, generate_rankings, order_by_scores, packed_block_scores
from .model import adapters_in_base_dtype, build_tiny_model, train_tokenizer, wrap_lora
from .training import AdapterOnlyCheckpoint, ChoiceBatches, InstructionBatches, LoraFineTuner

log = logging.getLogger("palr")

#: the fusion weight ``auto`` stands for when :meth:`LlamaLoraRanker.rank` is called without ``tune``
AUTO_FALLBACK = 2.0


def _as(cls, value):
    return value if isinstance(value, cls) else cls(**dict(value or {}))


class LlamaLoraRanker:
    """PALR's LLM ranker (v1: Recommend; v2: Recommend + Recommend_Retrieval)."""

    def __init__(self, **params) -> None:
        cfg = LlamaLoraConfig(**params)
        cfg.lora, cfg.tiny = _as(LoraSettings, cfg.lora), _as(TinyModelSettings, cfg.tiny)
        cfg.instructions = _as(InstructionConfig, cfg.instructions)
        if cfg.task not in ("v1", "v2"):
            raise ValueError(f"ranker.task must be v1 or v2, got {cfg.task!r}")
        if cfg.decoder not in DECODERS:
            raise ValueError(f"ranker.decoder must be one of {DECODERS}, got {cfg.decoder!r}")
        if cfg.retriever_weight != "auto" and (isinstance(cfg.retriever_weight, (bool, str))
                                               or not isinstance(cfg.retriever_weight, (int, float))):
            raise ValueError(f"ranker.retriever_weight must be a number >= 0 or auto, got {cfg.retriever_weight!r}")
        check_templates(cfg.templates, "ranker.templates")
        check_options(cfg, "ranker")
        self.config = cfg
        self.model = None
        self.coder: ItemCoder | None = None
        self.fit_state: dict = {}
        #: the fusion weight in use: ``retriever_weight``, or what :meth:`tune` chose for ``auto``
        #: (``inf``: the retriever's order, without running the model)
        self.weight: float | None = None if cfg.retriever_weight == "auto" else float(cfg.retriever_weight)

    @property
    def label(self) -> str:
        """The row name in results tables, e.g. ``PALR v2 (llama_lora tiny, score)``."""
        name = Path(self.config.model).name  # "tiny", a registered name, or a folder's name
        task = "choice" if self.config.decoder == "verbalizer" else self.config.task
        return f"PALR {task} (llama_lora {name}, {self.config.decoder})"

    @property
    def train_base(self) -> bool:
        return self.config.model == "tiny" if self.config.train_base is None else self.config.train_base

    def check(self, context: RunContext) -> None:
        """Before the run's first stage: the model (or the adapter) this ranker will load exists."""
        from palr_core.kit.llm import resolve_language_model

        if self.config.adapter:
            folder = Path(self.config.adapter).expanduser()
            if not (folder / "adapter" / "adapter_config.json").is_file():
                raise FileNotFoundError(f"ranker.adapter={str(folder)!r}: no adapter/adapter_config.json there "
                                        "(expected a previous run's <run dir>/llama_lora folder)")
        if self.config.model != "tiny" and not (self.config.adapter and
                                                (Path(self.config.adapter).expanduser() / "base").is_dir()):
            resolve_language_model(self.config.model, context.cache_dir, models=context.language_models,
                                   option="ranker.model")

    # -- model ---------------------------------------------------------------------------
    def _base(self, out: Path, context: RunContext):
        """The base model and tokenizer: a local checkpoint, or the run's tiny model (built once)."""
        if self.config.model != "tiny":
            return load_causal_lm(self.config.model, context.cache_dir, self._dtype(context), option="ranker.model",
                                  models=context.language_models)
        base_dir = out / "base"
        if (base_dir / "config.json").is_file():  # resuming: the same random init and tokenizer
            return load_causal_lm(base_dir, context.cache_dir, "float32")
        tokenizer = train_tokenizer(self._corpus(context), self.config.tiny.vocab_size)
        model = build_tiny_model(tokenizer, self.config.tiny)
        partial = out / f"base.{os.getpid()}.tmp"  # renamed when complete: a killed save leaves no base/
        shutil.rmtree(partial, ignore_errors=True)
        with transformers_quietly():
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
        shutil.rmtree(base_dir, ignore_errors=True)
        partial.rename(base_dir)
        return model, tokenizer

    def _dtype(self, context: RunContext) -> str:
        """The base weights' dtype name: ``auto`` is bf16 where the device has fast bf16 and the
        base is frozen (trained base weights stay float32)."""
        if self.config.dtype != "auto":
            return self.config.dtype
        if self.train_base:
            return "float32"
        device = "cpu" if context.trainer.accelerator == "cpu" else None
        return str(resolve_dtype("auto", device)).removeprefix("torch.")

    def _corpus(self, context: RunContext) -> list[str]:
        catalog = context.catalog
        texts = [f'"{catalog.render(i)}", ' + " ".join(catalog.labels(i)) for i in range(len(catalog))]
        texts += [t for tasks in self.config.templates.values() for t in tasks.values()]
        return texts * 2 + [" ".join(str(n) for n in range(100))]

    def setup(self, context: RunContext) -> Path:
        """Load or build the base model and add fresh LoRA adapters (no training); returns the
        output directory ``<work_dir>/llama_lora``."""
        out = Path(context.work_dir) / "llama_lora"
        model, tokenizer = self._base(out, context)
        self._prepare(model, tokenizer, context)
        # what the adapter's config and model card name as its base (peft would leave it empty)
        self.model.peft_config["default"].base_model_name_or_path = self._base_name(out)
        return out

    def _base_name(self, out: Path) -> str:
        """The base model as a reader can find it again: the run's tiny model folder, or
        ``ranker.model`` as given (a registered name, a Hugging Face id or a path)."""
        return str((out / "base").resolve()) if self.config.model == "tiny" else str(self.config.model)

    def _prepare(self, model, tokenizer, context: RunContext) -> None:
        if self.config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        self.model = wrap_lora(model, self.config.lora, self.train_base)
        self.coder = ItemCoder(tokenizer, context.catalog)

    # -- training ------------------------------------------------------------------------
    @property
    def fit_summary(self) -> dict:
        """What fine-tuning did (examples, tokens, steps, micro-batch, dtype); palr's pipeline keeps
        it in ``metrics.json`` under ``training.ranker``."""
        return self.fit_state

    def fit(self, data: TrainingData, context: RunContext) -> None:
        """Fine-tune on PALR instructions, or load ``adapter`` (a previous run's ``llama_lora`` dir).

        An interrupted fine-tuning in the same ``work_dir`` resumes from its last checkpoint (to the
        result of an uninterrupted one); a finished one is loaded, not trained again.
        """
        if self.config.adapter:
            self.load(self.config.adapter, context)
            return
        out = Path(context.work_dir) / "llama_lora"
        if not self.config.resume:  # start over: checkpoints of an earlier attempt would mix in
            shutil.rmtree(out, ignore_errors=True)
        claim_folder(out, self._fingerprint(data, context), "ranker llama_lora")
        if (out / "done.json").is_file():
            self.load(out, context)
            self.fit_state = json.loads((out / "done.json").read_text())
            log.info("llama_lora: fine-tuning in %s had finished; its adapter is used", out)
            return
        self.setup(context)
        batches = self._instruction_batches(data, context)
        self._train(batches, out, context)

    def _fingerprint(self, data: TrainingData, context: RunContext) -> dict:
        """What the fine-tuning checkpoints depend on: ranking-only options are left out, and so is
        ``cpu_kernels`` and ``pad_to_multiple_of`` (how attention, dropout masks and padding are
        computed, not what: like ``trainer.threads``, they may differ between an interrupted run and
        its resumption)."""
        digest = hashlib.sha256()
        for array in (*data.train, np.asarray(data.valid)):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes() + b"|")
        left_out = {"num_generate", "rank_batch_size", "num_beams", "retriever_weight", "retriever_weights",
                    "auto_alpha", "adapter", "resume", "cpu_kernels", "pad_to_multiple_of"}
        if self.config.decoder != "verbalizer":  # score and generate read the same fine-tuning
            left_out |= {"decoder", "choices"}
        config = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in left_out}
        profiles = context.profiles
        trainer = context.trainer.results_settings()
        return {"config": config, "data": digest.hexdigest(), "seed": context.seed, "trainer": trainer,
                "profiles": None if profiles is None else
                [type(profiles).__qualname__, repr(getattr(profiles, "config", None))]}

    def _instruction_batches(self, data: TrainingData, context: RunContext) -> InstructionBatches:
        if self.config.decoder == "verbalizer":
            return self._choice_batches(data, context)
        # salt 5: the stream palr 0.1 drew instructions from, so documented runs stay reproducible
        examples = build_instructions(data, self.config.task, self.config.instructions, context.rng(5))
        profiles = self._profiles([e.user for e in examples], [e.history for e in examples], context)
        pairs = []
        for example, profile in zip(examples, profiles):
            text = build_prompt(self.config.templates, example.task, context.catalog, example.history,
                                example.candidates, profile, n=len(example.targets))
            label = self.coder.label(example.targets)
            pairs.append((self.coder.prompt(text, self.config.max_length - len(label)), label))
        log.info("llama_lora: %d instruction examples from %d users", len(pairs),
                 len({e.user for e in examples}))
        return InstructionBatches(pairs, self.coder.tokenizer, self.config.pad_to_multiple_of)

    def _choice_batches(self, data: TrainingData, context: RunContext) -> ChoiceBatches:
        examples = build_choice_instructions(data, self.config.choices, self.config.instructions,
                                             context.rng("choice instructions"))
        profiles = self._profiles([e.user for e in examples], [e.history for e in examples], context)
        rows = []
        for example, profile in zip(examples, profiles):
            candidates = [int(c) for c in example.candidates]
            prompt = self._choice_prompt(example.history, candidates, profile, context)
            rows.append((prompt, self.coder.choice_ids(len(candidates)), candidates.index(int(example.targets[0]))))
        log.info("llama_lora: %d choice examples (%d candidates each) from %d users", len(rows),
                 self.config.choices, len({e.user for e in examples}))
        return ChoiceBatches(rows, self.coder.tokenizer, self.config.pad_to_multiple_of)

    def _choice_prompt(self, history, candidates: Sequence[int], profile: str | None, context: RunContext) -> list[int]:
        text = build_prompt(self.config.templates, "choice", context.catalog,
                            history[-self.config.instructions.max_history:], candidates, profile, n=1,
                            labels=CHOICE_LABELS[:len(candidates)])
        return self.coder.prompt(text, self.config.max_length - 1)

    def _profiles(self, users: Sequence[int], histories: Sequence[np.ndarray], context: RunContext) -> list[str]:
        if context.profiles is None or not users:
            return [""] * len(users)
        return context.profiles.generate(list(users), list(histories), context)

    def _train(self, batches: InstructionBatches, out: Path, context: RunContext) -> None:
        seed = int(context.rng("ranker batches").integers(2**31))
        micro, estimate, budget = self._micro_batch(batches, context)
        module = LoraFineTuner(self.model, self.config.learning_rate, self.config.weight_decay,
                               self.config.warmup_steps, release_above=budget if self._on_cpu(context) else None)
        accumulate = -(-self.config.batch_size // micro) * context.trainer.accumulate_grad_batches
        loader = batches.loader(micro, seed, context.trainer.num_workers)
        trainer = make_trainer(context.trainer, out, max_epochs=self.config.epochs,
                               last_every_n_steps=self.config.checkpoint_every_n_steps,
                               callbacks=[AdapterOnlyCheckpoint(out / "adapter")],
                               log_every_n_steps=max(1, min(50, len(loader) // accumulate)),
                               accumulate_grad_batches=accumulate)
        self.model.train()  # from_pretrained returns eval mode: dropout must be on while training
        kernels = self._cpu_kernels(context)
        from .kernels import BLOCK_ATTENTION, cpu_training_kernels  # transformers: imported when used

        with cpu_training_kernels(self.model) if kernels else contextlib.nullcontext():
            resumed = fit(trainer, module, loader)
        with transformers_quietly():
            self.model.save_pretrained(out / "adapter", safe_serialization=True)
        self.model.eval()
        self.fit_state = {"examples": len(batches.pairs), "tokens": batches.tokens,
                          "global_step": trainer.global_step, "resumed_from": resumed,
                          "epochs": trainer.current_epoch, "micro_batch_size": micro,
                          "accumulate_grad_batches": accumulate, "estimated_peak_gb": round(estimate / 1e9, 2),
                          "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                          "attention": BLOCK_ATTENTION if kernels else self.model.config._attn_implementation}
        if trainer.is_global_zero:
            write_atomic(out / "adapter" / "README.md", self._model_card(out, context))
        if trainer.is_global_zero and not trainer.interrupted:
            write_atomic(out / "done.json", json.dumps(self.fit_state, indent=1))

    def _micro_batch(self, batches: InstructionBatches, context: RunContext) -> tuple[int, int, float]:
        """Examples per forward pass, the estimated peak bytes of one and the memory budget in bytes
        (:func:`palr_core.kit.llm.fine_tuning_memory`, at the longest example): ``micro_batch_size``,
        or the largest power-of-two share of ``batch_size`` within ``max_memory_gb``. Stops the run
        before training when even that cannot fit the memory available now."""
        cfg = self.config
        model = self.model.get_base_model()
        longest = batches.longest
        answer = max(1, max(len(label) for _, label in batches.pairs))
        weights = list(model.parameters())
        size = dict(parameters=sum(p.numel() for p in weights), weight_bytes=weights[0].element_size(),
                    trainable=sum(p.numel() for p in weights if p.requires_grad),
                    checkpointing=cfg.gradient_checkpointing)

        if self._cpu_kernels(context):  # block-causal attention keeps half of each score matrix and a block
            from .kernels import QUERY_BLOCK

            size["saved_attention"] = 0.5 + QUERY_BLOCK / 2 / longest
            size["byte_dropout_masks"] = len(cfg.lora.target_modules) if cfg.lora.dropout > 0 else 0

        def need(micro: int) -> int:
            return fine_tuning_memory(model.config, micro, longest, micro * answer, **size)

        on_gpu = not self._on_cpu(context)
        available = available_memory("cuda" if on_gpu else "cpu")
        held = 0 if on_gpu else resident_memory()  # the estimate counts what this process holds already
        budget = min(cfg.max_memory_gb * 1e9 if cfg.max_memory_gb else math.inf, available + held)
        micro = min(cfg.micro_batch_size or cfg.batch_size, cfg.batch_size)
        while cfg.micro_batch_size is None and micro > 1 and need(micro) > budget:
            micro = (micro + 1) // 2
        if need(micro) - held > available:
            raise ValueError(
                f"ranker llama_lora: fine-tuning needs about {need(micro) / 1e9:.1f} GB at micro-batches of {micro} "
                f"(examples up to {longest} tokens, {cfg.model}, {size['weight_bytes'] * 8}-bit weights), and "
                f"{available / 1e9:.1f} GB is available; lower ranker.max_length or ranker.micro_batch_size, set "
                "ranker.gradient_checkpointing=true or ranker.dtype=bfloat16, or free memory")
        log.info("llama_lora: micro-batches of %d (%d per optimizer step), estimated peak %.1f GB (budget %.1f GB, "
                 "%.1f GB available)", micro, -(-cfg.batch_size // micro), need(micro) / 1e9, budget / 1e9,
                 available / 1e9)
        return micro, need(micro), budget

    @staticmethod
    def _on_cpu(context: RunContext) -> bool:
        return context.trainer.accelerator == "cpu" or not torch.cuda.is_available()

    def _cpu_kernels(self, context: RunContext) -> bool:
        """Whether fine-tuning uses :func:`palr.plugins.llama_lora.kernels.cpu_training_kernels`."""
        return self.config.cpu_kernels and self._on_cpu(context)

    def _model_card(self, out: Path, context: RunContext) -> str:
        """The adapter's README.md: its base model, what it was trained on and how, how to use it."""
        import palr_core

        cfg, base = self.config, self._base_name(out)
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
- **Task:** {cfg.task} ({"Recommend + Recommend_Retrieval" if cfg.task == "v2" else "Recommend"}), {self.fit_state["examples"]:,} instruction examples, {self.fit_state["epochs"]} epochs, {self.fit_state["global_step"]} optimizer steps
- **Data:** {len(catalog) if catalog is not None else "?"} items ({catalog.domain if catalog is not None else "?"}), {cfg.instructions.user_fraction:.0%} of the training users
- **LoRA:** r={lora.r}, alpha={lora.alpha}, dropout={lora.dropout}, target modules {", ".join(lora.target_modules)}{"; the base model's embeddings and head trained too" if self.train_base else ""}
- **Run folder:** {Path(context.work_dir).resolve()} (its `config_resolved.yaml` has every setting)

Use it: `palr-run ranker=llama_lora ranker.model={cfg.model} ranker.adapter={out.resolve()}` ranks
with it in another run; `palr.load_run("{Path(context.work_dir).resolve()}")` loads the whole run in Python.
"""

    def load(self, directory: str | Path, context: RunContext) -> None:
        """Base + adapter from a ``llama_lora`` output directory (``base/`` if tiny, ``adapter/``)."""
        from peft import PeftModel

        directory = Path(directory).expanduser()
        if not (directory / "adapter" / "adapter_config.json").is_file():
            raise FileNotFoundError(f"ranker.adapter={str(directory)!r}: no adapter/adapter_config.json there")
        if (directory / "base" / "config.json").is_file():  # a tiny model's run: its own base
            model, tokenizer = load_causal_lm(directory / "base", context.cache_dir, "float32")
        else:
            model, tokenizer = load_causal_lm(self.config.model, context.cache_dir, self.config.dtype,
                                              option="ranker.model", models=context.language_models)
        with transformers_quietly():
            self.model = PeftModel.from_pretrained(model, directory / "adapter").eval()
        self.coder = ItemCoder(tokenizer, context.catalog)

    # -- ranking -------------------------------------------------------------------------
    def rank(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[int]]:
        """Each request's candidates, best first (v1 generates over the catalogue: see docs)."""
        self._ready(context, "rank()")
        if self.weight is None and self.config.decoder != "generate":
            log.warning("llama_lora: ranker.retriever_weight=auto, but tune() was not called (palr's pipeline calls "
                        "it on validation items before ranking); using %g, the default before auto", AUTO_FALLBACK)
            self.weight = AUTO_FALLBACK
        if self.config.decoder == "generate":
            n = min(self.config.num_generate, min(len(r.candidates) for r in requests))
            prompts = self._prompts(requests, context, n)
            pools = [self._pool(r, context) for r in requests]
            orders = self._batched(prompts, lambda idx: generate_rankings(
                self.model, self.coder, [prompts[i] for i in idx], [pools[i] for i in idx],
                min(n, min(len(pools[i]) for i in idx)), self.config.num_beams), context)
        elif math.isinf(self.weight):  # auto kept the retriever's order: the model would not change it
            orders = [[int(c) for c in r.candidates] for r in requests]
        else:
            orders = [self._order(r, scores, self.weight) for r, scores in zip(requests, self._scores(requests, context))]
        return [complete_ranking(order, r.candidates) for order, r in zip(orders, requests)]

    def tune(self, requests: Sequence[RankRequest], targets: Sequence[int], context: RunContext) -> dict:
        """``retriever_weight=auto``: keep the retriever's order unless a weight of
        ``retriever_weights`` beats it on ``requests`` (palr's pipeline passes users' training
        prefixes with the retriever's candidates, and their validation items as ``targets``: never a
        test item) by a one-sided paired t-test on per-user NDCG@10 at ``auto_alpha`` / the grid's
        size; the best mean among such weights wins. Returns what was chosen, every weight's score
        and p-value (empty for a fixed weight)."""
        from scipy import stats

        from palr_core.metrics import per_user

        if self.config.retriever_weight != "auto" or self.config.decoder == "generate":
            return {}
        self._ready(context, "tune()")
        targets = np.asarray(targets)

        def ndcg(ranked: list[list[int]]) -> np.ndarray:
            return per_user(rank_from_lists(ranked, targets), "NDCG@10")

        retriever = ndcg([complete_ranking(list(r.candidates), r.candidates) for r in requests])
        scores = self._scores(requests, context)
        grid = {float(w): ndcg([complete_ranking(self._order(r, s, float(w)), r.candidates)
                                for r, s in zip(requests, scores)]) for w in sorted(set(self.config.retriever_weights))}
        level = self.config.auto_alpha / len(grid)
        p_values = {}
        for weight, values in grid.items():
            gain = values - retriever
            if gain.mean() <= 0:
                p_values[weight] = 1.0
            elif np.ptp(gain) == 0:  # the same gain for every user: t is undefined, the gain certain
                p_values[weight] = 0.0
            else:
                p_values[weight] = float(stats.ttest_rel(values, retriever, alternative="greater").pvalue)
        winners = [w for w in grid if grid[w].mean() > retriever.mean()
                   and (self.config.auto_alpha >= 1 or p_values[w] < level)]
        best = max(winners, key=lambda w: (grid[w].mean(), w), default=None)  # a tie goes to the retriever's side
        self.weight = math.inf if best is None else best
        if best is None:
            log.info("llama_lora: retriever_weight=auto kept the retriever's order (validation NDCG@10 %.4f on %d "
                     "users; no weight beat it at p < %.3g): ranking returns it without running the model",
                     retriever.mean(), len(requests), level)
        else:
            log.info("llama_lora: retriever_weight=auto chose %g (validation NDCG@10 %.4f against the retriever's "
                     "%.4f on %d users, one-sided paired t p = %.3g < %.3g)", best, grid[best].mean(),
                     retriever.mean(), len(requests), p_values[best], level)
        return {"retriever_weight": "retriever order" if best is None else best, "users": len(requests),
                "retriever order NDCG@10": round(float(retriever.mean()), 6),
                "NDCG@10 by retriever_weight": {f"{w:g}": round(float(v.mean()), 6) for w, v in grid.items()},
                "p (one-sided paired t) by retriever_weight": {f"{w:g}": float(f"{p:.4g}") for w, p in p_values.items()},
                "significance level": level}

    def candidate_scores(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[float]]:
        """The model's own score of each candidate before any fusion with the retriever (for studies
        of ``retriever_weight``): the mean token log-likelihood of its title after the prompt
        (``score``), or the log-probability of its label among the listed ones (``verbalizer``: the
        top ``choices`` candidates only)."""
        self._ready(context, "candidate_scores()")
        return self._scores(requests, context)

    def _ready(self, context: RunContext, what: str) -> None:
        if self.model is None:
            raise RuntimeError(f"llama_lora: call fit() (or set ranker.adapter) before {what}")
        self.model.eval()
        if torch.cuda.is_available() and context.trainer.accelerator in ("gpu", "cuda", "auto"):
            self.model.to("cuda")  # Lightning hands the model back on the CPU after fit
        adapters_in_base_dtype(self.model)
        if self.config.cpu_kernels and self.model.device.type == "cpu":  # a fifth faster than SDPA here
            from .kernels import BLOCK_ATTENTION

            self.model.get_base_model().set_attn_implementation(BLOCK_ATTENTION)

    def _order(self, request: RankRequest, scores: Sequence[float], weight: float) -> list[int]:
        """The scored candidates (the top ``choices`` for the verbalizer) by fused score, then the rest."""
        scored = request.candidates[:len(scores)]
        return order_by_scores(scored, scores, weight) + [int(c) for c in request.candidates[len(scores):]]

    def _scores(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[float]]:
        pad, multiple = self.coder.tokenizer.pad_token_id, self.config.pad_to_multiple_of
        if self.config.decoder == "verbalizer":
            shown = [[int(c) for c in r.candidates[:self.config.choices]] for r in requests]
            prompts = [self._choice_prompt(r.history, c, r.profile, context) for r, c in zip(requests, shown)]
            choices = [self.coder.choice_ids(len(c)) for c in shown]
            return self._batched(prompts, lambda idx: choice_scores(
                self.model, [prompts[i] for i in idx], [choices[i] for i in idx], pad, multiple), context)
        n = min(self.config.num_generate, min(len(r.candidates) for r in requests))
        prompts = self._prompts(requests, context, n)
        blocks = [[list(self.coder.block(int(c))) for c in r.candidates] for r in requests]
        return self._batched(prompts, lambda idx: packed_block_scores(
            self.model, [prompts[i] for i in idx], [blocks[i] for i in idx], pad, multiple), context)

    def _batched(self, prompts: list[list[int]], run, context: RunContext) -> list:
        """``run(indices)`` over batches of ``rank_batch_size`` prompts of similar length (less
        padding), with a progress bar; results back in the prompts' order."""
        from tqdm.auto import tqdm

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        size = self.config.rank_batch_size
        results: list = [None] * len(prompts)
        with tqdm(total=len(prompts), desc=f"ranking ({self.config.decoder})", unit="user",
                  disable=None if context.trainer.enable_progress_bar else True) as bar:  # None: a terminal only
            for start in range(0, len(order), size):
                idx = order[start:start + size]
                for i, result in zip(idx, run(idx)):
                    results[i] = result
                release_memory()  # batches of every width fragment the heap
                bar.update(len(idx))
        return results

    def _prompts(self, requests: Sequence[RankRequest], context: RunContext, n: int) -> list[list[int]]:
        task = "retrieval" if self.config.task == "v2" else "recommend"
        return [self.coder.prompt(build_prompt(
            self.config.templates, task, context.catalog, r.history[-self.config.instructions.max_history:],
            r.candidates if task == "retrieval" else None, r.profile, n=n), self.config.max_length)
            for r in requests]

    def _pool(self, request: RankRequest, context: RunContext) -> list[int]:
        """What the model chooses from: the candidates, or for v1 generation the catalogue minus
        history (scores are per item, so v1 scoring of the catalogue orders candidates the same)."""
        if self.config.task == "v2" or self.config.decoder == "score":
            return [int(c) for c in request.candidates]
        seen = set(int(i) for i in request.history)
        return [i for i in range(len(context.catalog)) if i not in seen]
