"""The typed run configuration: the one place where palr's own settings and their defaults live.

``conf/config.yaml`` only chooses a component per group; every value comes from these dataclasses
(run-wide settings) or from each component's config dataclass (its own settings). Hydra checks the
top-level keys against :class:`PalrConfig`, and :func:`palr_core.pipeline.run_pipeline` receives
the composed config as a :class:`PalrConfig`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING

__all__ = ["TrainerConfig", "PreprocessConfig", "EvalConfig", "PalrConfig", "default_cache_dir",
           "store_schema"]


@dataclass
class TrainerConfig:
    """Lightning Trainer settings shared by every trained component (``palr-run trainer=gpu``).

    How long a component trains (its epochs and early-stopping patience) is the component's own
    setting (e.g. ``retriever.max_epochs``); this group says where and how it trains.

    :param accelerator: ``cpu``, ``gpu`` or ``auto``.
    :param devices: number of devices or ``auto``.
    :param strategy: ``auto``, ``ddp``, ``ddp_spawn``, ``fsdp``... (Lightning strategy names).
    :param precision: ``32-true``, ``bf16-mixed``, ``16-mixed``...
    :param max_epochs: an upper bound on every component's epochs (``null``: each component's own);
        ``trainer.max_epochs=1`` makes a quick smoke run of any pipeline.
    :param max_time: wall-clock cap on each training, ``"DD:HH:MM:SS"`` (``null``: none). Training
        stops at the end of the step that crosses it and the best checkpoint so far is kept, so a
        time-boxed run (a sweep on a budget) still ends with a model and its metrics.
    :param check_val_every_n_epoch: validate every N epochs.
    :param gradient_clip_val: clip gradients to this norm (``null``: no clipping).
    :param accumulate_grad_batches: gradient accumulation steps.
    :param enable_progress_bar: show progress bars (Lightning's, and palr's own long loops).
    :param num_workers: DataLoader worker processes.
    :param deterministic: ask torch for deterministic kernels.
    """

    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_epochs: int | None = None
    max_time: str | None = None
    check_val_every_n_epoch: int = 1
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    enable_progress_bar: bool = True
    num_workers: int = 0
    deterministic: bool = False


@dataclass
class PreprocessConfig:
    """:param k_core: iterative k-core threshold for users and items (the paper: 5)."""

    k_core: int = 5


@dataclass
class EvalConfig:
    """How the rows of the results table are evaluated.

    :param ks: cut-offs for HR@K and NDCG@K.
    :param candidates: the retriever's top-K handed to the ranker (the paper: 50).
    :param max_users: evaluate a seeded sample of this many test users (``null``: all).
    """

    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    candidates: int = 50
    max_users: int | None = None


@dataclass
class PalrConfig:
    """One experiment. The four component groups hold ``{"name": <registered name>, **params}``.

    :param seed: the one seed of the run (data sampling, initialisation, training order, decoding).
    :param cache_dir: a directory shared across runs (downloads, parsed data, converted models,
        profiles); ``null``: ``$PALR_CACHE_DIR``, else ``~/.cache/palr``.
    """

    dataset: Any = MISSING
    retriever: Any = MISSING
    profile: Any = MISSING
    ranker: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    seed: int = 42
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cache_dir: str | None = None


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$PALR_CACHE_DIR``, else ``~/.cache/palr`` (``~`` expanded)."""
    chosen = cache_dir if cache_dir is not None else os.environ.get("PALR_CACHE_DIR") or "~/.cache/palr"
    return Path(chosen).expanduser()


def store_schema() -> None:
    """Make the schema available to ``config.yaml``'s defaults list as ``palr_schema``, and offer
    ``trainer=cpu``: :class:`TrainerConfig`'s own defaults, which the other trainer presets extend."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="palr_schema", node=PalrConfig)
    store.store(group="trainer", name="cpu", node={}, provider="palr")
