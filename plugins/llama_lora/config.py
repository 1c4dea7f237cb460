"""The ``llama_lora`` ranker's options (no torch or transformers: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from palr_core import option

from .decoders import DECODERS
from .decoders.verbalizer import CHOICE_LABELS
from .instructions import InstructionConfig
from .prompts import default_templates


@dataclass
class TinyModelSettings:
    """Shape of the ``model: tiny`` LLaMA (CPU runs and tests)."""

    hidden_size: int = option(64, min=1)
    layers: int = option(2, min=1)
    heads: int = option(4, min=1)
    intermediate_size: int = option(256, min=1)
    vocab_size: int = option(2048, min=300)  # the byte-level alphabet and special tokens take 260
    max_positions: int = option(2048, min=1)


@dataclass
class LoraSettings:
    """peft ``LoraConfig`` options (paper-style defaults: rank 8 on the attention projections)."""

    r: int = option(8, min=1)
    alpha: int = option(16, above=0)
    dropout: float = option(0.05, min=0, below=1)
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class LlamaLoraConfig:
    """``ranker=llama_lora``: PALR's LLM ranker.

    :param model: ``tiny`` (a CPU-sized LLaMA built here, random init, tokenizer trained on the
        catalogue), a registered name (``smollm2-135m``; ``palr plugins`` lists them), a local
        Hugging Face folder or a ``.gguf`` file.
    :param task: ``v1`` (Recommend only) or ``v2`` (Recommend + Recommend_Retrieval: the paper's PALR v2).
    :param decoder: a name of :data:`~palr.plugins.llama_lora.decoders.DECODERS`: ``score`` (each
        candidate's title likelihood; all users of a batch in one forward pass), ``generate``
        (trie-constrained generation, the paper's way) or ``verbalizer`` (the prompt lists the top
        ``choices`` candidates labelled ``A``, ``B``, ...; one forward pass reads the next-token
        distribution over the labels; fine-tuned with a listwise cross-entropy on the label of the
        true next item, after LlamaRec; needs ``task=v2``).
    :param choices: verbalizer: candidates shown with labels (at most 52), in training (the true
        next item and ``choices - 1`` similar negatives) and ranking (the retriever's top ``choices``,
        the rest follow in retriever order).
    :param num_generate: items the generate decoder writes (the rest follow in retriever order).
    :param epochs: fine-tuning epochs (capped by ``trainer.max_epochs``).
    :param batch_size: fine-tuning batch size (examples per optimizer step).
    :param micro_batch_size: examples per forward pass; gradients are accumulated over
        ``batch_size / micro_batch_size`` of them (``null``: the largest power-of-two share of
        ``batch_size`` whose estimated peak memory fits ``max_memory_gb``).
    :param max_memory_gb: the fine-tuning's memory budget in GB, for choosing ``micro_batch_size``
        (``null``: the memory available when the run starts). A run whose smallest micro-batch
        cannot fit the memory available stops before training, saying what to change.
    :param learning_rate: AdamW learning rate (3e-3 suits the tiny model trained from scratch; use
        ~2e-4 for LoRA on a 7B model).
    :param weight_decay: AdamW weight decay.
    :param warmup_steps: linear warm-up steps of the learning rate, then constant.
    :param max_length: prompt + answer tokens; longer prompts lose their oldest tokens.
    :param pad_to_multiple_of: every fine-tuning micro-batch, and every ranking batch of the
        ``score`` and ``verbalizer`` decoders, is padded to a multiple of this many tokens (the
        padding is masked, so losses and scores stay the same; ``1``: no more padding than the
        batch's longest row). On a CPU each new width costs oneDNN kernels compiled and kept for
        it: on SmolLM2's ML-100K fine-tuning (micro-batches of one example, nearly each its own
        width) padding to 32 lowered the peak by 0.66 GB at the same speed
        (``benchmarks/llm_padding.py``, ``docs/llm.md``).
    :param train_base: also train embeddings, MLPs, norms and LM head (``null``: on for ``model=tiny``,
        whose random weights LoRA alone cannot fix; off otherwise).
    :param lora: peft LoRA settings.
    :param tiny: shape of ``model=tiny``.
    :param instructions: how fine-tuning examples are cut (the paper's values).
    :param templates: prompts per item domain and task (default: the paper's, this plugin's ``prompts.yaml``).
    :param dtype: the base model's weights: ``auto`` (bfloat16 on a CUDA GPU and on a CPU with bf16
        instructions (``avx512_bf16``/``amx_bf16``) when the base is frozen; float32 otherwise),
        ``float32``, ``bfloat16``, ``float16``. LoRA weights train in float32 either way.
    :param gradient_checkpointing: trade compute for memory on large models.
    :param cpu_kernels: ignored since palr 0.3, kept so that configs and run folders written before
        it still load. palr's hand-written CPU kernels were removed: side by side with SDPA,
        ``torch.compile`` and peft none was faster by the 10 % that would justify keeping it
        (``benchmarks/llm_kernels.py``, ``docs/benchmarks.md``); every device now runs the library paths.
    :param adapter: a previous run's ``<work_dir>/llama_lora`` folder: load it instead of training.
    :param resume: continue from ``<work_dir>/llama_lora/checkpoints/last.ckpt`` if present.
    :param checkpoint_every_n_steps: how often ``last.ckpt`` is written during fine-tuning.
    :param rank_batch_size: users per ranking batch.
    :param num_beams: generate decoder: 1 = greedy.
    :param retriever_weight: score and verbalizer decoders: add ``weight * -log(1 + retriever rank)``
        to the model's score (0: the model alone; large: the retriever's order, the model breaking
        ties). ``auto``: chosen after fine-tuning on the validation items of ``eval.tune_users``
        users (their training prefix as history; never a test item): the retriever's own order
        (ranking then skips the model), unless a weight of ``retriever_weights`` beats it there
        (``auto_alpha``); reported in ``metrics.json`` (``validation.ranker``). A ranker used
        outside the pipeline without ``tune`` uses 2 and warns.
    :param retriever_weights: the grid ``auto`` chooses from (its largest keeps the retriever's order).
    :param auto_alpha: ``auto`` leaves the retriever's order only for a weight whose per-user
        validation NDCG@10 beats it by a one-sided paired t-test at ``auto_alpha`` divided by the
        grid's size (Bonferroni), choosing the best mean among those. The best of several weights on
        a few hundred users is often luck (a winner's curse, ``docs/llm.md``), so without this test
        the ranker can land below its retriever. ``1``: no test, the best mean that beats the
        retriever's order.
    """

    model: str = "tiny"
    task: str = option("v2", choices=("v1", "v2"))
    decoder: str = "score"  # checked against DECODERS when the config is built: a decoder added later counts
    choices: int = option(20, min=2, max=len(CHOICE_LABELS))
    num_generate: int = option(10, min=1)
    epochs: int = option(2, min=1)
    batch_size: int = option(16, min=1)
    micro_batch_size: int | None = option(None, min=1)
    max_memory_gb: float | None = option(4.0, above=0)
    learning_rate: float = option(3e-3, above=0)
    weight_decay: float = option(0.0, min=0)
    warmup_steps: int = option(20, min=0)
    max_length: int = option(1024, min=32)
    pad_to_multiple_of: int = option(32, min=1)
    train_base: bool | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    tiny: TinyModelSettings = field(default_factory=TinyModelSettings)
    instructions: InstructionConfig = field(default_factory=InstructionConfig)
    templates: dict = field(default_factory=default_templates)
    dtype: str = option("auto", choices=("auto", "float32", "bfloat16", "float16"))
    gradient_checkpointing: bool = False
    cpu_kernels: bool | None = None
    adapter: str | None = None
    resume: bool = True
    checkpoint_every_n_steps: int = option(100, min=1)
    rank_batch_size: int = option(16, min=1)
    num_beams: int = option(1, min=1)
    retriever_weight: Any = option("auto", min=0)
    retriever_weights: list = option([0.0, 0.5, 1.0, 2.0, 4.0, 1000.0], each_min=0, nonempty=True)
    auto_alpha: float = option(0.05, above=0, max=1)

    def __post_init__(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"ranker.decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
