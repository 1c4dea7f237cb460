"""Progress where output goes: log lines per epoch and per tenth of a loop without a terminal, and
Lightning's bar without ``v_num`` on one; the run's closing lines name its training curves."""

from __future__ import annotations

import logging
import re
import sys

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from palr_core import TrainerConfig
from palr_core.kit.training import EpochLog, make_trainer
from palr_core.progress import LogProgress, duration, progress


def test_a_run_writing_to_a_pipe_logs_each_epoch_and_names_its_curves(tmp_path):
    from tests.test_cli import palr_run

    proc = palr_run("retriever=sasrec", "trainer.max_epochs=2", "eval.max_users=20", "hydra.run.dir=run",
                    tmp_path=tmp_path)  # capture_output: stdout and stderr are pipes, not a terminal
    out = proc.stdout + proc.stderr
    epoch = r"retriever_training: epoch {}/2, loss \d+\.\d{{4}}, val/NDCG@10 \d\.\d{{4}} \(best \d\.\d{{4}}\), \d+ s elapsed, ETA "
    for n in (1, 2):
        assert re.search(epoch.format(n), out), out
        assert re.search(epoch.format(n), (tmp_path / "run" / "palr.log").read_text())
    assert "v_num" not in out and "it/s" not in out and "\r" not in out  # no bar redrawn into the pipe
    closing = out[out.index("Per-epoch training curves"):].splitlines()[0]
    assert "retriever_training/logs/version_0/metrics.csv" in closing
    assert (tmp_path / "run" / "retriever_training" / "logs" / "version_0" / "metrics.csv").is_file()


def test_a_loop_without_a_terminal_logs_a_line_per_tenth_and_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="palr")
    bar = progress(45, "ranking (score)", enabled=True)  # pytest's captured output is no terminal
    assert isinstance(bar, LogProgress)
    with bar:
        for _ in range(11):
            bar.update(4)
        bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(",")[0] for line in lines] == [f"ranking (score): {n}/45 users" for n in
                                                      (8, 12, 16, 20, 28, 32, 36, 40, 45)]  # every 5
    assert all(re.search(r", \d+ s elapsed, ETA \d+ s$", line) for line in lines)


def test_no_progress_when_it_is_turned_off(caplog):
    caplog.set_level(logging.INFO, logger="palr")
    with progress(10, "ranking", enabled=False) as bar:
        bar.update(10)
    assert not caplog.records


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (4.4, 65, 3 * 3600 + 7 * 60 + 5)] == ["4 s", "1 min 05 s", "3 h 07 min"]


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(8, 2)), batch_size=4)


def test_on_a_terminal_the_bar_shows_no_v_num(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    trainer = make_trainer(TrainerConfig(logger="csv"), tmp_path, max_epochs=1)
    module = Tiny()
    trainer.fit(module, loader())
    assert not any(isinstance(c, EpochLog) for c in trainer.callbacks)
    assert "v_num" in TQDMProgressBar().get_metrics(trainer, module)  # what Lightning's own bar shows
    assert "v_num" not in trainer.progress_bar_callback.get_metrics(trainer, module)


def test_without_a_terminal_a_training_has_no_bar_and_logs_its_epochs(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="palr")
    trainer = make_trainer(TrainerConfig(logger="none"), tmp_path / "ranker_training", max_epochs=3)
    trainer.fit(Tiny(), loader())
    assert trainer.progress_bar_callback is None
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ranker_training: epoch")]
    assert [line.split(",")[0] for line in lines] == [f"ranker_training: epoch {n}/3" for n in (1, 2, 3)]
    assert all(re.search(r"loss \d+\.\d{4}, \d+ s elapsed, ETA \d+ s$", line) for line in lines)
