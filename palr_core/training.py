"""The ``trainer`` config group and the Lightning Trainer every trained component shares.

Components that train (retrievers, rankers) build their ``lightning.Trainer`` with
:func:`make_trainer`, so CPU/GPU, precision, DDP/FSDP strategies, early stopping, best-checkpoint
selection and progress bars are set in one place (``conf/trainer/*.yaml``), not per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TrainerConfig", "make_trainer"]


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (``palr-run trainer=gpu trainer.max_epochs=50``).

    :param max_epochs: upper bound on epochs; early stopping usually ends sooner.
    :param accelerator: ``cpu``, ``gpu`` or ``auto``.
    :param devices: number of devices or ``auto``.
    :param strategy: ``auto``, ``ddp``, ``ddp_spawn``, ``fsdp``... (Lightning strategy names).
    :param precision: ``32-true``, ``bf16-mixed``, ``16-mixed``...
    :param patience: validation checks without improvement before early stopping (0: off).
    :param monitor: the logged metric early stopping and checkpointing watch.
    :param check_val_every_n_epoch: validate every N epochs.
    :param gradient_clip_val: clip gradients to this norm (``null``: no clipping).
    :param accumulate_grad_batches: gradient accumulation steps.
    :param enable_progress_bar: show Lightning's progress bar.
    :param num_workers: DataLoader worker processes.
    :param deterministic: ask torch for deterministic kernels.
    :param max_time: wall-clock cap on training, ``"DD:HH:MM:SS"`` (``null``: none). Training stops at
        the end of the step that crosses it and the best checkpoint so far is kept, so a time-boxed
        run (a sweep on a budget) still ends with a model and its metrics.
    """

    max_epochs: int = 20
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    patience: int = 3
    monitor: str = "val/NDCG@10"
    check_val_every_n_epoch: int = 1
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    num_workers: int = 0
    deterministic: bool = False
    max_time: str | None = None


def make_trainer(
    config: TrainerConfig,
    work_dir: Path,
    *,
    monitor: str | None = None,
    mode: str = "max",
    callbacks: list | None = None,
    validate: bool = True,
    **overrides: Any,
):
    """A ``lightning.Trainer`` from the shared config, writing logs and checkpoints to ``work_dir``.

    With ``validate`` it early-stops on ``monitor`` (default ``config.monitor``) and keeps the best
    checkpoint (``trainer.checkpoint_callback.best_model_path``); ``overrides`` win over the config.
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    work_dir = Path(work_dir)
    monitor = monitor or config.monitor
    cbs = list(callbacks or [])
    if validate:
        cbs.append(ModelCheckpoint(dirpath=work_dir / "checkpoints", monitor=monitor, mode=mode,
                                   save_top_k=1, save_last=True, filename="best"))
        if config.patience > 0:
            cbs.append(EarlyStopping(monitor=monitor, mode=mode, patience=config.patience))
    kwargs: dict[str, Any] = dict(
        max_epochs=config.max_epochs,
        max_time=config.max_time,
        accelerator=config.accelerator,
        devices=config.devices,
        strategy=config.strategy,
        precision=config.precision,
        check_val_every_n_epoch=config.check_val_every_n_epoch,
        gradient_clip_val=config.gradient_clip_val,
        accumulate_grad_batches=config.accumulate_grad_batches,
        enable_progress_bar=config.enable_progress_bar,
        deterministic=config.deterministic,
        default_root_dir=str(work_dir),
        logger=CSVLogger(str(work_dir), name="logs"),
        callbacks=cbs,
        enable_model_summary=False,
        enable_checkpointing=validate,
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
