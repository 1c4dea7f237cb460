"""The ``llama_lora`` Ranker: PALR instruction fine-tuning with LoRA, then grounded ranking.

The ranker sets the model up: it loads a local causal LM or builds the run's tiny one, adds peft
LoRA, fine-tunes it in a Lightning Trainer from the ``trainer`` config group (or loads an
adapter), and chooses the fusion weight of ``retriever_weight=auto`` on validation items. Its
decoder (``ranker.decoder``, one of :data:`~palr.plugins.llama_lora.decoders.DECODERS`) decides
the rest: what the model is fine-tuned on and how rankings are read from it. Output layout under
``<work_dir>/llama_lora/``: ``base/`` (tiny model and tokenizer), ``adapter/`` (peft
safetensors and a model card), ``checkpoints/last.ckpt``, ``done.json``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from palr_core import RankRequest, RunContext, TrainingData, complete_ranking
from palr_core.config import check_options
from palr_core.kit.files import write_atomic
from palr_core.kit.llm import load_causal_lm, resolve_dtype, transformers_quietly
from palr_core.kit.training import claim_folder, fit, make_trainer

from .card import model_card
from .config import LlamaLoraConfig, LoraSettings, TinyModelSettings
from .decoders import DECODERS, DecoderInputs
from .decoding import ItemCoder
from .fusion import choose_retriever_weight
from .instructions import InstructionConfig
from .memory import choose_micro_batch
from .model import adapters_in_base_dtype, load_lora, tiny_base, wrap_lora
from .prompts import check_templates
from .stage import catalog_digest, copy_stage, fine_tuning_fingerprint
from .training import AdapterOnlyCheckpoint, InstructionBatches, LoraFineTuner

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
        if cfg.retriever_weight != "auto" and (isinstance(cfg.retriever_weight, (bool, str))
                                               or not isinstance(cfg.retriever_weight, (int, float))):
            raise ValueError(f"ranker.retriever_weight must be a number >= 0 or auto, got {cfg.retriever_weight!r}")
        check_templates(cfg.templates, "ranker.templates")
        check_options(cfg, "ranker")
        if cfg.cpu_kernels is not None:
            log.warning("ranker.cpu_kernels is ignored since palr 0.3: the library attention, dropout and LoRA "
                        "layers run on every device (docs/plugins.md#migrating-to-palr-03)")
        self.config = cfg
        #: what ranks with the fine-tuned model (:class:`~palr.plugins.llama_lora.decoders.Decoder`)
        self.decoder = DECODERS[cfg.decoder]()
        self.model = None
        self.coder: ItemCoder | None = None
        self.fit_state: dict = {}
        self._out: Path | None = None  # the run's llama_lora folder, once fit ran
        #: the fusion weight in use: ``retriever_weight``, or what :meth:`tune` chose for ``auto``
        #: (``inf``: the retriever's order, without running the model)
        self.weight: float | None = None if cfg.retriever_weight == "auto" else float(cfg.retriever_weight)

    @property
    def label(self) -> str:
        """The row name in results tables, e.g. ``PALR v2 (llama_lora tiny, score)``."""
        name = Path(self.config.model).name  # "tiny", a registered name, or a folder's name
        return f"PALR {self.decoder.task(self.config)} (llama_lora {name}, {self.config.decoder})"

    @property
    def train_base(self) -> bool:
        return self.config.model == "tiny" if self.config.train_base is None else self.config.train_base

    def check(self, context: RunContext) -> None:
        """Before the run's first stage: the model (or the adapter) this ranker will load exists."""
        from palr_core.kit.llm import resolve_language_model

        adapter = Path(self.config.adapter).expanduser() if self.config.adapter else None
        if adapter and not (adapter / "adapter" / "adapter_config.json").is_file():
            raise FileNotFoundError(f"ranker.adapter={str(adapter)!r}: no adapter/adapter_config.json there "
                                    "(expected a previous run's <run dir>/llama_lora folder)")
        if adapter:  # a torn or crafted file is named here, not in a library's traceback after training
            from palr_core.result_files import ResultFileError, check_model_files

            try:
                check_model_files(adapter)
            except ResultFileError as exc:
                raise ValueError(f"ranker.adapter={str(adapter)!r}: {exc}") from None
        if self.config.model != "tiny" and not (adapter and (adapter / "base").is_dir()):
            resolve_language_model(self.config.model, context.cache_dir, models=context.language_models,
                                   option="ranker.model")

    # -- model ---------------------------------------------------------------------------
    def _base(self, out: Path, context: RunContext):
        """The base model and tokenizer: a local checkpoint, or the run's tiny model (built once)."""
        if self.config.model == "tiny":
            return tiny_base(out / "base", context.catalog, self.config.templates, self.config.tiny, context.cache_dir)
        return load_causal_lm(self.config.model, context.cache_dir, self._dtype(context), option="ranker.model",
                              models=context.language_models)

    def _dtype(self, context: RunContext) -> str:
        """The base weights' dtype name: ``auto`` is bf16 where the device has fast bf16 and the
        base is frozen (trained base weights stay float32)."""
        if self.config.dtype != "auto":
            return self.config.dtype
        if self.train_base:
            return "float32"
        device = "cpu" if context.trainer.accelerator == "cpu" else None
        return str(resolve_dtype("auto", device)).removeprefix("torch.")

    def setup(self, context: RunContext) -> Path:
        """Load or build the base model and add fresh LoRA adapters (no training); returns the
        output directory ``<work_dir>/llama_lora``."""
        out = Path(context.work_dir) / "llama_lora"
        model, tokenizer = self._base(out, context)
        if self.config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        self.model = wrap_lora(model, self.config.lora, self.train_base)
        self.coder = ItemCoder(tokenizer, context.catalog)
        # what the adapter's config and model card name as its base (peft would leave it empty)
        self.model.peft_config["default"].base_model_name_or_path = self._base_name(out)
        return out

    def _base_name(self, out: Path) -> str:
        """The base model as a reader can find it again: the run's tiny model folder, or
        ``ranker.model`` as given (a registered name, a Hugging Face id or a path)."""
        return str((out / "base").resolve()) if self.config.model == "tiny" else str(self.config.model)

    def load(self, directory: str | Path, context: RunContext) -> None:
        """Base + adapter from a ``llama_lora`` output directory (``base/`` if tiny, ``adapter/``)."""
        directory = Path(directory).expanduser()
        if not (directory / "adapter" / "adapter_config.json").is_file():
            raise FileNotFoundError(f"ranker.adapter={str(directory)!r}: no adapter/adapter_config.json there")
        if (directory / "base" / "config.json").is_file():  # a tiny model's run: its own base
            model, tokenizer = load_causal_lm(directory / "base", context.cache_dir, "float32")
        else:
            model, tokenizer = load_causal_lm(self.config.model, context.cache_dir, self.config.dtype,
                                              option="ranker.model", models=context.language_models)
        self.model = load_lora(model, directory / "adapter")
        self.coder = ItemCoder(tokenizer, context.catalog)

    def inputs(self, context: RunContext) -> DecoderInputs:
        """What the decoder is handed: the model as it is now, its coder, the options, the run."""
        return DecoderInputs(self.model, self.coder, self.config, context)

    # -- training ------------------------------------------------------------------------
    @property
    def fit_summary(self) -> dict:
        """What fine-tuning did (examples, tokens, steps, micro-batch, dtype); palr's pipeline keeps
        it in ``metrics.json`` under ``training.ranker``."""
        return self.fit_state

    def fit(self, data: TrainingData, context: RunContext) -> None:
        """Fine-tune on the decoder's examples, or load ``adapter`` (a previous run's ``llama_lora`` dir).

        An interrupted fine-tuning in the same ``work_dir`` resumes from its last checkpoint (to the
        result of an uninterrupted one); a finished one is loaded, not trained again.
        """
        if self.config.adapter:
            self.load(self.config.adapter, context)
            return
        out = self._out = Path(context.work_dir) / "llama_lora"
        if not self.config.resume:  # start over: checkpoints of an earlier attempt would mix in
            shutil.rmtree(out, ignore_errors=True)
        claim_folder(out, self._fingerprint(data, context), "ranker llama_lora")
        if (out / "done.json").is_file():
            self.load(out, context)
            self.fit_state = json.loads((out / "done.json").read_text())
            log.info("llama_lora: fine-tuning in %s had finished; its adapter is used", out)
            return
        self.setup(context)
        self._train(self.decoder.training_batches(data, self.inputs(context)), out, context)

    def _fingerprint(self, data: TrainingData, context: RunContext) -> dict:
        """What the fine-tuning checkpoints depend on (:func:`~palr.plugins.llama_lora.stage.fine_tuning_fingerprint`)."""
        return fine_tuning_fingerprint(self.config, self.decoder, data, context)

    def _train(self, batches: InstructionBatches, out: Path, context: RunContext) -> None:
        seed = int(context.rng("ranker batches").integers(2**31))
        on_cpu = self._on_cpu(context)
        micro, estimate, budget = choose_micro_batch(self.model, batches, self.config, not on_cpu)
        module = LoraFineTuner(self.model, self.config.learning_rate, self.config.weight_decay,
                               self.config.warmup_steps, release_above=budget if on_cpu else None)
        accumulate = -(-self.config.batch_size // micro) * context.trainer.accumulate_grad_batches
        loader = batches.loader(micro, seed, context.trainer.num_workers)
        trainer = make_trainer(context.trainer, out, max_epochs=self.config.epochs,
                               last_every_n_steps=self.config.checkpoint_every_n_steps,
                               callbacks=[AdapterOnlyCheckpoint(out / "adapter")],
                               log_every_n_steps=max(1, min(50, len(loader) // accumulate)),
                               accumulate_grad_batches=accumulate)
        self.model.train()  # from_pretrained returns eval mode: dropout must be on while training
        resumed = fit(trainer, module, loader)
        with transformers_quietly():
            self.model.save_pretrained(out / "adapter", safe_serialization=True)
        self.model.eval()
        self.fit_state = {"examples": len(batches.pairs), "tokens": batches.tokens,
                          "global_step": trainer.global_step, "resumed_from": resumed,
                          "epochs": trainer.current_epoch, "micro_batch_size": micro,
                          "accumulate_grad_batches": accumulate, "estimated_peak_gb": round(estimate / 1e9, 2),
                          "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
                          "attention": self.model.config._attn_implementation}
        if trainer.is_global_zero:
            card = model_card(self.config, self.fit_state, self._base_name(out), self.train_base, out, context)
            write_atomic(out / "adapter" / "README.md", card)
        if trainer.is_global_zero and not trainer.interrupted:
            write_atomic(out / "done.json", json.dumps(self.fit_state, indent=1))

    @staticmethod
    def _on_cpu(context: RunContext) -> bool:
        return context.trainer.accelerator == "cpu" or not torch.cuda.is_available()

    # -- ranking -------------------------------------------------------------------------
    def rank(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[int]]:
        """Each request's candidates, best first, as the decoder orders them (the ones it leaves
        out follow in the retriever's order)."""
        inputs = self._ready(context, "rank()")
        if self.weight is None and self.decoder.fuses_with_retriever:
            log.warning("llama_lora: ranker.retriever_weight=auto, but tune() was not called (palr's pipeline calls "
                        "it on validation items before ranking); using %g, the default before auto", AUTO_FALLBACK)
            self.weight = AUTO_FALLBACK
        orders = self.decoder.rank(requests, inputs, self.weight if self.decoder.fuses_with_retriever else None)
        return [complete_ranking(order, r.candidates) for order, r in zip(orders, requests)]

    def tune(self, requests: Sequence[RankRequest], targets: Sequence[int], context: RunContext) -> dict:
        """``retriever_weight=auto``: keep the retriever's order unless a weight of
        ``retriever_weights`` beats it on ``requests`` (palr's pipeline passes users' training
        prefixes with the retriever's candidates, and their validation items as ``targets``: never a
        test item) by a one-sided paired t-test on per-user NDCG@10 at ``auto_alpha`` / the grid's
        size; the best mean among such weights wins
        (:func:`~palr.plugins.llama_lora.fusion.choose_retriever_weight`). Returns what was chosen,
        every weight's score and p-value (empty for a fixed weight or a decoder that does not fuse)."""
        if self.config.retriever_weight != "auto" or not self.decoder.fuses_with_retriever:
            return {}
        scores = self.decoder.scores(requests, self._ready(context, "tune()"))
        self.weight, chosen = choose_retriever_weight(requests, np.asarray(targets), scores,
                                                      self.config.retriever_weights, self.config.auto_alpha)
        return chosen

    def restore_tuning(self, chosen: dict) -> None:
        """The fusion weight ``tune`` chose, read back from its report (a loaded run is not tuned again)."""
        if "retriever_weight" in chosen:
            weight = chosen["retriever_weight"]
            self.weight = math.inf if weight == "retriever order" else float(weight)

    # -- the store of trained stages (palr_core.Storable) -----------------------------------
    def stage_key(self, data: TrainingData, context: RunContext) -> dict:
        """The fine-tuning's fingerprint, and the catalogue's text (the tiny model's vocabulary and
        every prompt are made from it)."""
        return {"model": f"{type(self).__module__}.{type(self).__qualname__}", **self._fingerprint(data, context),
                "catalog": catalog_digest(context.catalog)}

    def save(self, folder: Path) -> None:
        """Copy the finished fine-tuning (safetensors and JSON: nothing that runs code) into ``folder``."""
        copy_stage(Path(self._out), Path(folder))

    def restore(self, folder: Path, context: RunContext) -> None:
        """The stored fine-tuning, copied into ``<work_dir>/llama_lora`` as :meth:`fit` writes it, and loaded."""
        out = Path(context.work_dir) / "llama_lora"
        copy_stage(Path(folder), out)
        self.load(out, context)
        self.fit_state = json.loads((out / "done.json").read_text())

    def is_trained(self, context: RunContext) -> bool:
        """Whether fit will load, not train: an ``adapter`` of another run, or this folder's finished one."""
        return bool(self.config.adapter) or (Path(context.work_dir) / "llama_lora" / "done.json").is_file()

    def candidate_scores(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[float]]:
        """The model's own score of each candidate before any fusion with the retriever (for studies
        of ``retriever_weight``), as the decoder reads it: the mean token log-likelihood of its
        title after the prompt (``score``, ``generate``), or the log-probability of its label among
        the listed ones (``verbalizer``: the top ``choices`` candidates only)."""
        return self.decoder.scores(requests, self._ready(context, "candidate_scores()"))

    def _ready(self, context: RunContext, what: str) -> DecoderInputs:
        if self.model is None:
            raise RuntimeError(f"llama_lora: call fit() (or set ranker.adapter) before {what}")
        self.model.eval()
        if torch.cuda.is_available() and context.trainer.accelerator in ("gpu", "cuda", "auto"):
            self.model.to("cuda")  # Lightning hands the model back on the CPU after fit
        adapters_in_base_dtype(self.model)
        return self.inputs(context)
