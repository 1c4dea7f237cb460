"""Same command, same bytes: ``trainer.threads=auto`` reads only facts that stay put between runs."""

from __future__ import annotations

import os

import pytest

from palr_core.config import TrainerConfig


@pytest.mark.parametrize("load", [0.0, 1.7, 3.0, 40.0])
def test_auto_threads_do_not_follow_the_machine_load(monkeypatch, load):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # four CPUs this process may use
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert TrainerConfig().cpu_threads() == 4


def test_auto_threads_take_omp_num_threads_whatever_the_load(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(os, "getloadavg", lambda: (40.0, 40.0, 40.0))
    assert TrainerConfig().cpu_threads() == 3
