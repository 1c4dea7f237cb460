"""Data-parallel retriever training: two CPU processes (gloo) through Lightning's ddp_spawn."""

from dataclasses import replace

import numpy as np
import pytest
from palr_sasrec import SASRecRetriever


@pytest.mark.slow
def test_sasrec_trains_with_ddp_on_two_cpu_processes(training_data, run_context, small_split):
    trainer = replace(run_context.trainer, accelerator="cpu", devices=2, strategy="ddp_spawn")
    sasrec = SASRecRetriever(maxlen=20, hidden=16, heads=2, blocks=1, batch_size=32, max_epochs=2)
    sasrec.fit(training_data, replace(run_context, trainer=trainer))
    assert sasrec.fit_summary["best_checkpoint"].endswith("best.ckpt")
    assert (run_context.work_dir / "retriever" / "retriever.pt").is_file()
    ids, scores = sasrec.retrieve(small_split.histories("test"), 10)
    assert ids.shape == (len(small_split.test), 10) and np.isfinite(scores).all()
