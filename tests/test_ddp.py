"""Data-parallel retriever training: two CPU processes (gloo) through Lightning's ddp_spawn."""

from dataclasses import replace

import numpy as np
import pytest
from palr_lightgcn import LightGCNRetriever
from palr_sasrec import SASRecRetriever

RETRIEVERS = {
    "sasrec": lambda: SASRecRetriever(maxlen=20, hidden=16, heads=2, blocks=1, batch_size=32, max_epochs=2),
    # its sparse graph is a module attribute, not a buffer: each process must receive it intact
    "lightgcn": lambda: LightGCNRetriever(hidden=16, layers=2, lr=0.01, batch_size=256, max_epochs=2),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RETRIEVERS))
def test_retriever_trains_with_ddp_on_two_cpu_processes(name, training_data, run_context, small_split):
    trainer = replace(run_context.trainer, accelerator="cpu", devices=2, strategy="ddp_spawn")
    retriever = RETRIEVERS[name]()
    retriever.fit(training_data, replace(run_context, trainer=trainer))
    assert retriever.fit_summary["best_checkpoint"].endswith("best.ckpt")
    assert (run_context.work_dir / "retriever" / "retriever.pt").is_file()
    ids, scores = retriever.retrieve(small_split.histories("test"), 10)
    assert ids.shape == (len(small_split.test), 10) and np.isfinite(scores).all()
