"""The Lightning Trainer every trained component shares, built from the ``trainer`` config group,
and what makes an interrupted training resume to exactly the result of an uninterrupted one.

Components that train (retrievers, rankers) build their ``lightning.Trainer`` with
:func:`make_trainer`, so CPU/GPU, precision, DDP/FSDP strategies, early stopping, best-checkpoint
selection and progress bars are set in one place (:class:`palr_core.TrainerConfig`), not per model.
How long to train is the component's own setting, passed as ``max_epochs`` and ``patience``.

Resuming (:func:`fit`) reproduces the uninterrupted run because every checkpoint holds, beside
Lightning's own state, the random generators' states (:class:`RandomStateCheckpoint`) and the
data loader's position in its epoch (``torchdata``'s ``StatefulDataLoader``, which Lightning saves
and restores, over an order drawn from ``(seed, epoch)``: :func:`resumable_loader`); ``last.ckpt``
is written after every epoch (or every N steps), not only when validation improves; and a run
folder that was moved keeps its best score (:class:`MovableCheckpoint`).
"""

from __future__ import annotations

import atexit
import json
import math
import random
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, TQDMProgressBar

from ..config import TrainerConfig
from ..pipeline import RunFolderError
from ..progress import duration, log_lines, on_terminal
from ..result_files import check_weights, read_checkpoint
from .files import write_atomic

# Two deprecation notices raised inside Lightning and torchdata about their own use of torch APIs,
# on every fit: nothing a palr user can act on. Filtered by their exact message, nothing else.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
# Resuming is palr's design, not an accident: the checkpoint folder is meant to hold the interrupted
# run's checkpoints, and Lightning's own checkpoints are pickled with protocol 4 (read weights-only).
warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty", category=UserWarning)
warnings.filterwarnings("ignore", message="Detected pickle protocol 4 in the checkpoint", category=UserWarning)

__all__ = ["make_trainer", "epoch_budget", "fit", "resumable_loader", "LengthBucketSampler",
           "RandomStateCheckpoint", "MovableCheckpoint", "claim_folder", "FolderInUse", "EpochLog"]


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
    last_every_n_steps: int | None = None,
    callbacks: list | None = None,
    **overrides: Any,
):
    """A ``lightning.Trainer`` from the shared config, writing logs and checkpoints to ``work_dir``.

    :param max_epochs: the component's epoch budget (capped by ``config.max_epochs``; ``None``: no
        cap, so early stopping or ``config.max_time`` must end training).
    :param patience: validation checks without improvement of ``monitor`` before stopping (0: off).
    :param monitor: a logged validation metric: ``checkpoints/best.ckpt`` keeps the best epoch by it
        (``trainer.checkpoint_callback.best_model_path``) and early stopping watches it.
        ``None``: no validation.
    :param last_every_n_steps: write ``checkpoints/last.ckpt`` every N optimizer steps (long
        epochs, e.g. an LLM's); ``None``: after every epoch.
    :param overrides: Lightning Trainer arguments that win over the config.

    Loggers come from ``trainer.logger`` (:func:`palr_core.tracking.training_loggers`), and the
    Trainer flags users reach for (``log_every_n_steps``, ``fast_dev_run``, ``limit_*_batches``,
    ``profiler``, any other through ``trainer.extra``) from the config; ``log_every_n_steps`` set
    here by a component is its default, which the config's wins over. Lightning's start-up banners
    and tips are silenced at their logger; its progress bar is shown on a terminal only (a log
    file would get one line per refresh), without the logger's ``v_num``; elsewhere each epoch
    writes one log line (:class:`EpochLog`). ``trainer.enable_progress_bar=false`` turns both off.
    """
    from ..tracking import training_loggers

    work_dir = Path(work_dir)
    epochs = epoch_budget(config, max_epochs)
    if epochs is None and not (monitor and patience > 0) and config.max_time is None:
        raise ValueError("training would never stop: give the component a max_epochs, early-stopping "
                         "patience, or set trainer.max_epochs / trainer.max_time")
    cbs = list(callbacks or [])
    folder = work_dir / "checkpoints"
    if monitor is not None:  # first, so that it is trainer.checkpoint_callback
        cbs.append(MovableCheckpoint(dirpath=folder, monitor=monitor, mode=mode, save_top_k=1, filename="best"))
        if patience > 0:
            cbs.append(EarlyStopping(monitor=monitor, mode=mode, patience=patience))
    # Lightning's save_last writes only when another checkpoint was saved (an improvement): a
    # monitor-less top-1 checkpoint named "last" is rewritten after every epoch (and every N steps)
    last = {"dirpath": folder, "filename": "last", "save_top_k": 1, "enable_version_counter": False}
    cbs.append(MovableCheckpoint(**last))
    if last_every_n_steps:
        cbs.append(_MidEpochCheckpoint(**last, every_n_train_steps=last_every_n_steps))
    cbs.append(RandomStateCheckpoint())
    cbs.append(_GlooExitGrace())
    bar = config.enable_progress_bar and on_terminal()
    if bar:
        cbs.append(_Bar())
    elif log_lines(config.enable_progress_bar):
        cbs.append(EpochLog(work_dir.name, monitor, mode, max_time=config.max_time))
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
        enable_progress_bar=bar,
        deterministic=config.deterministic,
        default_root_dir=str(work_dir),
        logger=training_loggers(config, work_dir),
        callbacks=cbs,
        enable_model_summary=False,
        enable_checkpointing=True,
        num_sanity_val_steps=0,
        fast_dev_run=config.fast_dev_run,
    )
    for flag in ("limit_train_batches", "limit_val_batches"):
        if getattr(config, flag) is not None:
            kwargs[flag] = getattr(config, flag)
    if config.profiler:
        kwargs["profiler"] = _profiler(config.profiler, work_dir)
    kwargs.update(overrides)
    if config.log_every_n_steps is not None:
        kwargs["log_every_n_steps"] = config.log_every_n_steps
    kwargs.update(config.extra or {})
    quiet_lightning()
    return L.Trainer(**kwargs)


class _Bar(TQDMProgressBar):
    """Lightning's bar without ``v_num`` (the logger's version folder, which reads as a metric)."""

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class EpochLog(Callback):
    """One log line per training epoch, for output that is not a terminal: the epoch (of the
    budget), the mean training loss, the ``monitor`` metric (and the best so far), the time so far
    and the estimated time left, which early stopping can only shorten.

    :param name: what trains (the training folder's name, e.g. ``retriever_training``).
    :param mode: ``max`` or ``min``: which ``monitor`` value is best.
    :param max_time: ``trainer.max_time`` (``DD:HH:MM:SS``), which caps the estimate.
    """

    def __init__(self, name: str, monitor: str | None = None, mode: str = "max", max_time: str | None = None) -> None:
        self.name, self.monitor, self.mode, self.best = name, monitor, mode, None
        self.time_cap = None if max_time is None else sum(
            int(part) * unit for part, unit in zip(max_time.split(":"), (86400, 3600, 60, 1)))
        self.start, self.first_epoch, self.loss, self.batches = 0.0, 0, None, 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.first_epoch = time.perf_counter(), trainer.current_epoch  # a resumed fit starts later
        best = getattr(trainer.checkpoint_callback, "best_model_score", None) if self.monitor else None
        self.best = None if best is None else float(best)  # a resumed fit's best so far

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.loss, self.batches = None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # summed on the device: no synchronisation per batch
            self.loss = loss.detach().float() if self.loss is None else self.loss + loss.detach().float()
            self.batches += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after the epoch's validation
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        import logging

        epoch, budget = trainer.current_epoch + 1, trainer.max_epochs
        elapsed = time.perf_counter() - self.start
        parts = [f"epoch {epoch}" + (f"/{budget}" if budget and budget > 0 else "")]
        if self.loss is not None and self.batches:
            parts.append(f"loss {float(self.loss) / self.batches:.4f}")
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is not None:
            value = float(value)
            if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
                self.best = value
            parts.append(f"{self.monitor} {value:.4f} (best {self.best:.4f})")
        parts.append(f"{duration(elapsed)} elapsed")
        left = None
        done = epoch - self.first_epoch
        if budget and budget > 0 and done > 0:
            left = elapsed / done * (budget - epoch)
        if self.time_cap is not None:
            left = min(left if left is not None else math.inf, max(0.0, self.time_cap - elapsed))
        parts.append(f"ETA {duration(left)}" if left is not None else "ETA unknown (until early stopping)")
        logging.getLogger("palr").info("%s: %s", self.name, ", ".join(parts))


def _profiler(name: str, work_dir: Path):
    """Lightning's profiler ``name``, writing its report to ``<work_dir>/fit-profile.txt``."""
    from lightning.pytorch import profilers

    classes = {"simple": profilers.SimpleProfiler, "advanced": profilers.AdvancedProfiler,
               "pytorch": profilers.PyTorchProfiler}
    return classes[name](dirpath=str(work_dir), filename="profile")


def quiet_lightning() -> None:
    """Lightning's "GPU available", "TPU available" banners and its tips go through these loggers,
    and its "Received SIGTERM" note through the signal connector's; palr says what runs where, and
    where a signal stopped the run, itself. Warnings are left as they are."""
    import logging

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch.trainer.connectors.signal_connector"):
        logging.getLogger(name).setLevel(logging.WARNING)


class LengthBucketSampler(torch.utils.data.Sampler):
    """A shuffled order of rows in which each run of ``batch_size`` rows has similar lengths.

    Every epoch the rows are permuted, cut into windows of ``window`` batches, each window is
    sorted by length and cut into batches, and the batches are shuffled. When padding is trimmed
    per batch (:func:`~palr_core.kit.retrievers.trim_padding`, or a collator padding to the longest
    row), a batch then costs its own longest row instead of the longest row in a random sample (on
    ML-100K at maxlen 200 almost every random batch of 256 holds a 200-item user, while half the
    positions are padding). Equal lengths give a plain shuffle. Under DDP Lightning replaces any
    sampler with its DistributedSampler, which shuffles without bucketing.

    Epoch ``e``'s order is drawn from ``(seed, e)`` alone. Lightning calls :meth:`set_epoch` before
    each training epoch, and the iterator tells a ``StatefulDataLoader`` where in its epoch it is,
    so a run resumed from a checkpoint sees the same batches as one that was never interrupted;
    iterating without ``set_epoch`` moves on to the next epoch's draw.
    """

    def __init__(self, lengths: Sequence[int] | torch.Tensor, batch_size: int, window: int = 50,
                 seed: int = 0) -> None:
        # numpy, not torch: a torch Generator or tensor here breaks pickling into ddp_spawn workers
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.window = window
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def order(self, epoch: int) -> list[int]:
        """The rows in epoch ``epoch``'s order."""
        rng = np.random.default_rng((self.seed, epoch))
        order = rng.permutation(len(self.lengths))
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = order[start:start + span]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        return [int(i) for b in rng.permutation(len(batches)) for i in batches[b]]

    def __iter__(self):
        iterator = _EpochIterator(self, self.epoch)
        self.epoch += 1
        return iterator


class _EpochIterator:
    """One epoch of a :class:`LengthBucketSampler`, with its position as ``torchdata`` state."""

    def __init__(self, sampler: LengthBucketSampler, epoch: int) -> None:
        self.sampler, self.epoch, self.position = sampler, epoch, 0
        self.rows = sampler.order(epoch)

    def __iter__(self):
        return self

    def __next__(self) -> int:
        if self.position >= len(self.rows):
            raise StopIteration
        self.position += 1
        return self.rows[self.position - 1]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state["epoch"] != self.epoch:
            self.epoch, self.rows = state["epoch"], self.sampler.order(state["epoch"])
        self.position = state["position"]


def fit(trainer, module, train_loader, val_loader=None) -> str | None:
    """``trainer.fit``, resuming from ``checkpoints/last.ckpt`` when an earlier fit in the same
    folder was interrupted (loaded with ``weights_only=True``: a crafted file cannot run code).

    :returns: the checkpoint resumed from, or ``None``.
    """
    last = Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    resume = str(last) if last.is_file() else None
    if resume:  # an empty, torn, crafted or foreign last.ckpt: one line naming it, not Lightning's traceback
        state = read_checkpoint(last, needs=("state_dict", "loops", "optimizer_states"))
        check_weights(last, state["state_dict"], module)
    sampler = getattr(train_loader, "sampler", None)
    if resume and hasattr(sampler, "set_epoch"):
        # Lightning builds the first epoch's iterator before it calls set_epoch, which is right for a
        # fresh fit but would replay epoch 0's order in a resumed one: start at the epoch it resumes
        progress = state["loops"]["fit_loop"]
        sampler.set_epoch(progress["epoch_progress"]["current"]["processed"])  # the epoch it continues
    trainer.fit(module, train_loader, val_loader, ckpt_path=resume, weights_only=True)
    return resume


def resumable_loader(dataset, batch_size: int, sampler, num_workers: int = 0, collate_fn=None):
    """A DataLoader whose position in an epoch is saved in checkpoints and restored on resume
    (``torchdata``'s ``StatefulDataLoader``), over ``sampler`` (which should draw epoch ``e``'s
    order from ``(seed, e)``, as :class:`~palr_core.kit.retrievers.LengthBucketSampler` does)."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    return StatefulDataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                              num_workers=num_workers, persistent_workers=num_workers > 0)


class RandomStateCheckpoint(Callback):
    """Saves Python's, numpy's and torch's (CPU and CUDA) random states in every checkpoint and
    restores them on resume, so dropout, negative sampling and anything else drawn after the
    checkpoint is drawn as in an uninterrupted run. Stored as plain lists and tensors, which
    ``torch.load(weights_only=True)`` reads."""

    KEY = "palr_random_state"

    def __init__(self) -> None:
        self._again: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        version, state, gauss = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint[self.KEY] = {
            "python": [version, list(state), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        saved = checkpoint.get(self.KEY)
        if saved is None:  # written by an older palr: resume without it
            return
        self._restore(saved)
        # a checkpoint taken mid-epoch resumes with a data loader iterator the uninterrupted run did
        # not create, and creating one draws from the global generator: restore once more after it
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]
        self._again = saved if progress["processed"] < progress["started"] else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._again is not None:
            self._restore(self._again)
            self._again = None

    @staticmethod
    def _restore(saved: dict) -> None:
        version, state, gauss = saved["python"]
        random.setstate((version, tuple(state), gauss))
        kind, keys, pos, has_gauss, cached = saved["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(saved["torch"])
        if saved["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda"])


class MovableCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that keeps its best score when the run folder was moved or
    copied: Lightning forgets it when the saved ``dirpath`` differs, so a worse epoch would then
    replace ``best.ckpt``. Paths of the old folder are read as the same files in the new one."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:
            def moved(path):
                return str(Path(self.dirpath) / Path(path).name) if path else path

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          "best_model_path": moved(state_dict.get("best_model_path")),
                          "kth_best_model_path": moved(state_dict.get("kth_best_model_path")),
                          "last_model_path": moved(state_dict.get("last_model_path")),
                          "best_k_models": {moved(k): v for k, v in state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state_dict)


class _MidEpochCheckpoint(MovableCheckpoint):
    """Every N steps, but never after an epoch's last batch: Lightning resumes a checkpoint taken
    there as if the next epoch had run too (it skips it), and the epoch-end checkpoint follows anyway."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx + 1 < trainer.num_training_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class _GlooExitGrace(Callback):
    """Lets a gloo process group's worker threads finish before the process exits.

    A gloo worker thread drops each collective it ran (DDP's gradient buckets) after the caller
    has seen it complete, and dropping it takes the GIL (it holds a Python object). When the
    process reaches interpreter finalization first, as a ``ddp_spawn`` worker that has nothing to
    save does right after its fit, the thread's GIL request ends it with ``pthread_exit`` and the
    process aborts: "terminate called without an active exception", SIGABRT, and the parent
    raises and loses the run (once in four CI runs). ``destroy_process_group`` at exit does not
    stop it: DDP keeps the group alive. A process that trained in a gloo group sleeps
    :data:`GLOO_EXIT_GRACE_S` at exit, before finalization, which releases the GIL to those
    threads: in ``benchmarks/gloo_exit.py``, beside other work (load 3 on 2 cores), 19 of 100
    two-process jobs aborted without it and none of 100 with it. The sleep is
    registered whether the fit ends well or not: unlike destroying the group, it cannot wait on
    work a failed rank left in flight."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if (torch.distributed.is_available() and torch.distributed.is_initialized()
                and torch.distributed.get_backend() == "gloo"):
            atexit.unregister(_gloo_exit_grace)  # once per process, however many fits
            atexit.register(_gloo_exit_grace)


GLOO_EXIT_GRACE_S = 0.25


def _gloo_exit_grace() -> None:
    time.sleep(GLOO_EXIT_GRACE_S)


class FolderInUse(RunFolderError):
    """A training folder holds another configuration's checkpoints."""


def claim_folder(folder: Path, fingerprint: dict, what: str) -> None:
    """Make ``folder`` this training's: record ``fingerprint`` (what the checkpoints depend on), or
    refuse when the folder already holds checkpoints of a different one, naming what differs.

    :param what: the component, for messages (``retriever 'sasrec'``).
    """
    folder = Path(folder)
    stamp = folder / "fingerprint.json"
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))  # as it reads back
    if stamp.is_file():
        old = json.loads(stamp.read_text())
        if old != fingerprint:
            changed = [k for k in sorted(set(old) | set(fingerprint)) if old.get(k) != fingerprint.get(k)]
            raise FolderInUse(f"{folder} holds checkpoints of {what} with another {', '.join(changed)}; "
                              "resuming them would mix two runs: use another work folder, or delete this one")
        return
    write_atomic(stamp, json.dumps(fingerprint, indent=1, sort_keys=True, default=str))
