"""Shared fixtures: small synthetic data, a run context in tmp_path, the real-data directory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from palr_core import RunContext, TrainerConfig, TrainingData, leave_one_out_split, preprocess
from palr_core.plugins import load_registry

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$PALR_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("PALR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set PALR_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def registry():
    return load_registry()


@pytest.fixture(scope="session")
def small_synthetic():
    """A small synthetic dataset (preprocessed SequenceData), quick enough for any test."""
    from palr_synthetic import SyntheticMovies

    return preprocess(SyntheticMovies(users=150, franchises=50).load(), k_core=5)


@pytest.fixture(scope="session")
def small_split(small_synthetic):
    return leave_one_out_split(small_synthetic)


@pytest.fixture
def training_data(small_synthetic, small_split) -> TrainingData:
    return TrainingData(train=small_split.train, valid=small_split.valid, catalog=small_synthetic.catalog)


@pytest.fixture
def run_context(tmp_path, small_synthetic) -> RunContext:
    trainer = TrainerConfig(max_epochs=3, accelerator="cpu", enable_progress_bar=False, patience=2)
    return RunContext(seed=0, work_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                      trainer=trainer, catalog=small_synthetic.catalog)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
