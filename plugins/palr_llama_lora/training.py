"""Instruction fine-tuning in Lightning: token batches, the LightningModule, adapter-only checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from palr_core.kit.llm import transformers_quietly
from palr_core.kit.training import LengthBucketSampler, resumable_loader

__all__ = ["InstructionBatches", "LoraFineTuner", "AdapterOnlyCheckpoint"]

IGNORE = -100


class InstructionBatches:
    """Tokenized ``(prompt, label)`` pairs as causal-LM examples with the loss on the answer only,
    batched by transformers' ``DataCollatorForSeq2Seq`` (padding on the tokenizer's side, labels
    padded with -100)."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]], tokenizer) -> None:
        from transformers import DataCollatorForSeq2Seq

        self.pairs = pairs
        self.examples = [{"input_ids": prompt + label, "labels": [IGNORE] * len(prompt) + label}
                         for prompt, label in pairs]
        self.collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE,
                                              return_tensors="pt")

    @property
    def tokens(self) -> int:
        return sum(len(p) + len(lab) for p, lab in self.pairs)

    def loader(self, batch_size: int, seed: int, num_workers: int = 0):
        """Batches of examples of similar length (less padding), in an order drawn from
        ``(seed, epoch)`` and resumable mid-epoch (:func:`palr_core.kit.training.resumable_loader`)."""
        lengths = [len(example["input_ids"]) for example in self.examples]
        return resumable_loader(self.examples, batch_size, LengthBucketSampler(lengths, batch_size, seed=seed),
                                num_workers, collate_fn=self.collate)


class LoraFineTuner(L.LightningModule):
    """Causal-LM loss on instruction answers; optimises only the parameters left trainable."""

    def __init__(self, model, learning_rate: float, weight_decay: float = 0.0,
                 warmup_steps: int = 0) -> None:
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        # checkpoints hold trainable weights only; the frozen base comes from its own files
        self.strict_loading = False

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=batch["input_ids"].shape[0])
        return loss

    def configure_optimizers(self):
        from transformers import get_constant_schedule_with_warmup

        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        schedule = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=self.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

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
