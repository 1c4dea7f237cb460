"""Shared fixtures: small synthetic data, a run context in tmp_path, the real-data directory, a local web server."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

# Two pytest-xdist workers share the 2 cores CI has: each worker, and every run it starts, gets one
# torch thread; two threads each oversubscribe the cores and the suite takes about 1.6x as long.
# Set before torch is imported (palr_core's imports below may bring it in).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from palr_core import RunContext, TrainingData  # noqa: E402
from palr_core.pipeline import seed_stage  # noqa: E402
from palr_core.plugins import load_registry  # noqa: E402
from palr_core.testing import tiny_context, tiny_data  # noqa: E402

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
def default_synthetic():
    """palr-run's default dataset (``synthetic`` with its defaults), preprocessed and split: the data
    every retriever's "beats popularity" test learns on (:func:`palr_core.testing.check_retriever`)."""
    from palr.plugins.synthetic.dataset import SyntheticConfig

    return tiny_data(users=SyntheticConfig.users, franchises=SyntheticConfig.franchises, seed=SyntheticConfig.seed)


@pytest.fixture(scope="session")
def small_synthetic():
    """A small synthetic dataset (preprocessed SequenceData), quick enough for any test."""
    return tiny_data().data


@pytest.fixture(scope="session")
def small_split():
    return tiny_data().split


@pytest.fixture
def training_data() -> TrainingData:
    return tiny_data().training


@pytest.fixture
def run_context(tmp_path) -> RunContext:
    return tiny_context(tmp_path, catalog=tiny_data().catalog)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global random state, as every pipeline stage does."""
    seed_stage(0, "test")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def http_server():
    """``serve(directory) -> base URL``: a web server on localhost for download tests (no network needed)."""
    servers = []

    def serve(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def read_only():
    """``make(folder)``: the folder, and everything below it, read-only until the test ends. For a
    user, its write bits are removed; root writes through those, so for root it becomes a read-only
    bind mount of itself (the test is skipped where mounting is not allowed)."""
    import shutil
    import stat
    import subprocess

    undo = []

    def make(folder: Path) -> Path:
        if os.geteuid() != 0:
            paths = [folder, *folder.rglob("*")]
            for path in paths:
                path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            undo.append(lambda: [path.chmod(path.stat().st_mode | stat.S_IWUSR) for path in paths])
            return folder
        mount = shutil.which("mount")
        if mount is None or subprocess.run([mount, "--bind", str(folder), str(folder)], capture_output=True).returncode:
            pytest.skip("root writes into read-only folders, and this machine allows no read-only mount")
        undo.append(lambda: subprocess.run(["umount", str(folder)], check=True))
        if subprocess.run([mount, "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode:
            pytest.skip("root writes into read-only folders, and this machine allows no read-only mount")
        return folder

    yield make
    for step in reversed(undo):
        step()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


#: the test files that take longest, in that order (a full run's ``--durations``). Each runs on one
#: xdist worker (``--dist loadfile``, in collection order: ``--no-loadscope-reorder``), so they go
#: first: one started last would run alone while the other worker idles.
LONGEST_FIRST = ("test_smollm2.py", "test_doc_commands.py", "test_scaffold.py", "test_retriever_devices.py",
                 "test_ecosystem.py", "test_store.py", "test_gpu_benchmark.py", "test_cli.py")


def pytest_collection_modifyitems(items):
    order = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: a file's tests keep their order
