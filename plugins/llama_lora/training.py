"""Instruction fine-tuning in Lightning: token batches, the LightningModule, adapter-only checkpoints.

Two losses, both computing the LM head only where it is read (a 49,152-way vocabulary at every
prompt position cost SmolLM2 more memory than the rest of the step): :func:`answer_loss`, the
causal-LM loss on the answer tokens, and :func:`choice_loss`, the verbalizer's listwise
cross-entropy over the candidates' label tokens at the prompt's last position.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from palr_core.kit.llm import transformers_quietly
from palr_core.kit.training import LengthBucketSampler, resumable_loader

from .memory import keep_freed_memory, release_memory, resident_memory

__all__ = ["InstructionBatches", "ChoiceBatches", "LoraFineTuner", "AdapterOnlyCheckpoint", "answer_loss",
           "choice_loss", "causal_mask_only"]

IGNORE = -100
#: answer tokens whose float32 logits are formed at a time: 128 x 49,152 x 4 bytes stays under the
#: 32 MB above which glibc maps and unmaps every block, and faults it in again, each micro-batch
HEAD_CHUNK = 128


def causal_mask_only(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """``None`` (causal attention, no mask) when every row is its real tokens followed by padding:
    a real token then sees only real tokens before it either way, so every real position gets the
    same output without a padding mask to build and apply; ``attention_mask`` otherwise."""
    return None if bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all()) else attention_mask


def _hidden_and_head(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The last hidden states of a training batch (no padding mask where :func:`causal_mask_only`
    drops it) and the LM head to read them with."""
    from .decoding import body_and_head

    body, head = body_and_head(model)
    hidden = body(input_ids=input_ids, attention_mask=causal_mask_only(attention_mask),
                  use_cache=False).last_hidden_state
    return hidden, head


def answer_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The causal-LM loss of ``model(..., labels=labels).loss`` (mean over label tokens), with the
    LM head run only at the positions that predict a label token, :data:`HEAD_CHUNK` at a time."""
    hidden, head = _hidden_and_head(model, input_ids, attention_mask)
    targets = labels[:, 1:]
    read = targets != IGNORE
    states, goals = hidden[:, :-1][read], targets[read]
    total = hidden.new_zeros((), dtype=torch.float32)  # no label at all: 0 / 0, NaN, as transformers' loss
    for start in range(0, len(goals), HEAD_CHUNK):
        logits = head(states[start:start + HEAD_CHUNK]).float()
        total = total + torch.nn.functional.cross_entropy(logits, goals[start:start + HEAD_CHUNK], reduction="sum")
    return total / len(goals)


def choice_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, choices: torch.Tensor,
                answer: torch.Tensor) -> torch.Tensor:
    """The verbalizer's listwise cross-entropy: at each prompt's last token, a softmax over its
    candidates' label tokens (``choices``, padded with -1), against the true next item's label."""
    hidden, head = _hidden_and_head(model, input_ids, attention_mask)
    last = attention_mask.shape[1] - 1 - attention_mask.flip(1).argmax(1)  # each prompt's last real token
    logits = head(hidden[torch.arange(len(last), device=last.device), last]).float()
    picked = logits.gather(1, choices.clamp(min=0)).masked_fill(choices < 0, float("-inf"))
    return torch.nn.functional.cross_entropy(picked, answer)


class InstructionBatches:
    """Tokenized ``(prompt, label)`` pairs as causal-LM examples with the loss on the answer only,
    batched by transformers' ``DataCollatorForSeq2Seq`` (padding on the tokenizer's side, labels
    padded with -100)."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]], tokenizer, pad_to_multiple_of: int = 1) -> None:
        from transformers import DataCollatorForSeq2Seq

        self.pairs = pairs
        self.examples = [{"input_ids": prompt + label, "labels": [IGNORE] * len(prompt) + label}
                         for prompt, label in pairs]
        self.pad_to_multiple_of = pad_to_multiple_of
        self.collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE,
                                              pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    @property
    def longest(self) -> int:
        """The width of the widest micro-batch, as padded."""
        from .decoding import _round_up

        return _round_up(max(len(example["input_ids"]) for example in self.examples), self.pad_to_multiple_of)

    @property
    def tokens(self) -> int:
        return sum(len(p) + len(lab) for p, lab in self.pairs)

    def loader(self, batch_size: int, seed: int, num_workers: int = 0):
        """Batches of examples of similar length (less padding), in an order drawn from
        ``(seed, epoch)`` and resumable mid-epoch (:func:`palr_core.kit.training.resumable_loader`)."""
        lengths = [len(example["input_ids"]) for example in self.examples]
        return resumable_loader(self.examples, batch_size, LengthBucketSampler(lengths, batch_size, seed=seed),
                                num_workers, collate_fn=self.collate)


class ChoiceBatches(InstructionBatches):
    """Verbalizer examples: a prompt, its candidates' label token ids and the index of the true one;
    prompts right-padded by the tokenizer, label lists padded with -1."""

    def __init__(self, examples: list[tuple[list[int], list[int], int]], tokenizer, pad_to_multiple_of: int = 1) -> None:
        self.pairs = [(prompt, []) for prompt, _, _ in examples]
        self.examples = [{"input_ids": prompt, "choices": choices, "answer": answer}
                         for prompt, choices, answer in examples]
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of
        self.collate = self._collate

    def _collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad([{"input_ids": r["input_ids"]} for r in rows], return_tensors="pt",
                                   pad_to_multiple_of=self.pad_to_multiple_of)
        width = max(len(r["choices"]) for r in rows)
        batch["choices"] = torch.tensor([r["choices"] + [-1] * (width - len(r["choices"])) for r in rows])
        batch["answer"] = torch.tensor([r["answer"] for r in rows])
        return dict(batch)


class LoraFineTuner(L.LightningModule):
    """Causal-LM loss on instruction answers; optimises only the parameters left trainable."""

    def __init__(self, model, learning_rate: float, weight_decay: float = 0.0,
                 warmup_steps: int = 0, release_above: float | None = None) -> None:
        """:param release_above: after a micro-batch, hand freed memory back to the operating system
            when the process holds more than this many bytes (``None``: after every micro-batch)."""
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.release_above = release_above
        # checkpoints hold trainable weights only; the frozen base comes from its own files
        self.strict_loading = False

    def setup(self, stage: str) -> None:
        if self.release_above is not None:  # a CPU: its steps reuse what the last one freed
            keep_freed_memory()

    def teardown(self, stage: str) -> None:
        if self.release_above is not None:  # what comes next (ranking) must not start on top of it
            keep_freed_memory(False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = choice_loss(self.model, **batch) if "choices" in batch else answer_loss(self.model, **batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        from transformers import get_constant_schedule_with_warmup

        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        schedule = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=self.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # micro-batches of every length fragment the heap; but trimming after each one made the next
        # fault all its memory in again (a sixth of SmolLM2's CPU step time), so only over the budget
        if self.release_above is None or resident_memory() > self.release_above:
            release_memory()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}


class AdapterOnlyCheckpoint(L.Callback):
    """Writes the peft adapter (safetensors) at the end of every epoch and of training."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: LoraFineTuner) -> None:
        if trainer.is_global_zero:
            with transformers_quietly():
                pl_module.model.save_pretrained(self.directory, safe_serialization=True)
