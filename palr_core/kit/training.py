"""The Lightning Trainer every trained component shares, built from the ``trainer`` config group.

Components that train (retrievers, rankers) build their ``lightning.Trainer`` with
:func:`make_trainer`, so CPU/GPU, precision, DDP/FSDP strategies, early stopping, best-checkpoint
selection and progress bars are set in one place (:class:`palr_core.TrainerConfig`), not per model.
How long to train is the component's own setting, passed as ``max_epochs`` and ``patience``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import TrainerConfig

__all__ = ["make_trainer", "epoch_budget"]


def epoch_budget(config: TrainerConfig, max_epochs: int | None) -> int | None:
    """A component's ``max_epochs`` capped by ``trainer.max_epochs`` (``None``: no cap)."""
    caps = [n for n in (max_epochs, config.max_epochs) if n is not None]
    return min(caps) if caps else None


def make_trainer(
    config: TrainerConfig,
    work_dir: Path,
    *,
    max_epochs: int | None = None,
    patience: int = 0,
    monitor: str | None = None,
    mode: str = "max",
    callbacks: list | None = None,
    **overrides: Any,
):
    """A ``lightning.Trainer`` from the shared config, writing logs and checkpoints to ``work_dir``.

    :param max_epochs: the component's epoch budget (capped by ``config.max_epochs``; ``None``: no
        cap, so early stopping or ``config.max_time`` must end training).
    :param patience: validation checks without improvement of ``monitor`` before stopping (0: off).
    :param monitor: a logged validation metric: checkpoints keep the best epoch by it
        (``trainer.checkpoint_callback.best_model_path``) and early stopping watches it.
        ``None``: no validation, and no checkpoint callback is added.
    :param overrides: Lightning Trainer arguments that win over the config.
    """
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    work_dir = Path(work_dir)
    epochs = epoch_budget(config, max_epochs)
    if epochs is None and not (monitor and patience > 0) and config.max_time is None:
        raise ValueError("training would never stop: give the component a max_epochs, early-stopping "
                         "patience, or set trainer.max_epochs / trainer.max_time")
    cbs = list(callbacks or [])
    if monitor is not None:
        cbs.append(ModelCheckpoint(dirpath=work_dir / "checkpoints", monitor=monitor, mode=mode,
                                   save_top_k=1, save_last=True, filename="best"))
        if patience > 0:
            cbs.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    kwargs: dict[str, Any] = dict(
        max_epochs=-1 if epochs is None else epochs,
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
        enable_checkpointing=monitor is not None,
        num_sanity_val_steps=0,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
