"""The GPU and multi-device settings on the CPU, for every built-in trained retriever:
bf16-mixed precision (the GPU default) and data-parallel training over two CPU processes (gloo,
Lightning's ddp_spawn)."""

from dataclasses import replace

import numpy as np
import pytest
from palr_bert4rec.model import BERT4RecRetriever
from palr_lightgcn.model import LightGCNRetriever
from palr_sasrec.model import SASRecRetriever

RETRIEVERS = {
    "sasrec": lambda epochs: SASRecRetriever(maxlen=20, hidden=16, heads=2, blocks=1, batch_size=32,
                                             max_epochs=epochs),
    "bert4rec": lambda epochs: BERT4RecRetriever(maxlen=20, hidden=32, heads=2, blocks=1, dropout=0.1,
                                                 lr=5e-3, batch_size=64, max_epochs=epochs),
    # its sparse graph is a module attribute, not a buffer: each DDP process must receive it intact,
    # and the sparse product must stay float32 under bf16 autocast
    "lightgcn": lambda epochs: LightGCNRetriever(hidden=16, layers=2, lr=0.01, batch_size=256,
                                                 max_epochs=epochs),
}


@pytest.mark.parametrize("name", sorted(RETRIEVERS))
def test_gpu_settings_run_on_cpu(name, training_data, run_context, small_split):
    """bf16-mixed precision (the GPU default) goes through the same code path on the CPU."""
    trainer = replace(run_context.trainer, precision="bf16-mixed", accelerator="cpu")
    retriever = RETRIEVERS[name](1)
    retriever.fit(training_data, replace(run_context, trainer=trainer))
    ids, scores = retriever.retrieve(small_split.histories("test")[:5], 10)
    assert np.isfinite(scores).all() and ids.shape == (5, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lightgcn", "sasrec"])
def test_retriever_trains_with_ddp_on_two_cpu_processes(name, training_data, run_context, small_split):
    trainer = replace(run_context.trainer, accelerator="cpu", devices=2, strategy="ddp_spawn")
    retriever = RETRIEVERS[name](2)
    retriever.fit(training_data, replace(run_context, trainer=trainer))
    assert retriever.fit_summary["best_checkpoint"].endswith("best.ckpt")
    assert (run_context.work_dir / "retriever" / "retriever.pt").is_file()
    ids, scores = retriever.retrieve(small_split.histories("test"), 10)
    assert ids.shape == (len(small_split.test), 10) and np.isfinite(scores).all()
