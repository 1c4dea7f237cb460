"""The GPU and multi-device settings on the CPU, for every built-in trained retriever:
bf16-mixed precision (the GPU default) and data-parallel training over two CPU processes (gloo,
Lightning's ddp_spawn)."""

import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
from palr.plugins.bert4rec.model import BERT4RecRetriever
from palr.plugins.lightgcn.model import LightGCNRetriever
from palr.plugins.sasrec.model import SASRecRetriever

from palr_core.kit.training import GLOO_EXIT_GRACE_S, make_trainer

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
def test_sasrec_under_ddp_matches_one_process_within_seed_noise(tmp_path):
    """Two gloo processes with half the batch each (the same examples per optimizer step) end
    within 0.02 test NDCG@10 of one process: on these 300 users, three one-process seeds spread
    over 0.0064 and DDP landed 0.0024 from its one-process twin (``benchmarks/ddp.py``)."""
    from palr_core.kit.retrievers import rank_from_scores
    from palr_core.metrics import metrics_from_ranks
    from palr_core.pipeline import seed_stage
    from palr_core.testing import tiny_context, tiny_data

    data = tiny_data(users=300, franchises=80)
    ndcg = {}
    for devices, batch in ((1, 64), (2, 32)):
        context = tiny_context(tmp_path / str(devices), catalog=data.catalog)
        context = replace(context, trainer=replace(context.trainer, devices=devices,
                                                   strategy="ddp_spawn" if devices > 1 else "auto"))
        seed_stage(0, "fit_retriever")
        retriever = SASRecRetriever(maxlen=30, hidden=32, heads=2, blocks=1, batch_size=batch, max_epochs=15,
                                    patience=100)
        retriever.fit(data.training, context)
        assert retriever.fit_summary["epochs"] == 15 and retriever.fit_summary["stopped_by"] == "max_epochs"
        import torch

        scores = retriever.score(data.split.histories("test"))
        ndcg[devices] = metrics_from_ranks(rank_from_scores(scores, torch.as_tensor(data.split.test)).numpy())["NDCG@10"]
    assert abs(ndcg[2] - ndcg[1]) < 0.02 and ndcg[2] > 0.03, ndcg


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lightgcn"])
def test_retriever_trains_with_ddp_on_two_cpu_processes(name, training_data, run_context, small_split):
    trainer = replace(run_context.trainer, accelerator="cpu", devices=2, strategy="ddp_spawn")
    retriever = RETRIEVERS[name](2)
    retriever.fit(training_data, replace(run_context, trainer=trainer))
    assert retriever.fit_summary["best_checkpoint"].endswith("best.ckpt")
    # the spawned processes' loops and callbacks stay there: the summary is read from last.ckpt
    assert retriever.fit_summary["epochs"] == 2 and retriever.fit_summary["stopped_by"] == "max_epochs"
    assert retriever.fit_summary["best_val_ndcg10"] > 0
    assert (run_context.work_dir / "retriever" / "retriever.pt").is_file()
    ids, scores = retriever.retrieve(small_split.histories("test"), 10)
    assert ids.shape == (len(small_split.test), 10) and np.isfinite(scores).all()


FIT_IN_A_GLOO_GROUP = """
import atexit, sys, time
import torch.distributed as dist
from lightning.pytorch.demos.boring_classes import BoringModel
from palr_core import TrainerConfig
from palr_core.kit.training import make_trainer

slept = []
time.sleep = slept.append
atexit.register(lambda: print("slept", slept))  # registered first, so it runs last
dist.init_process_group("gloo", init_method="file://" + sys.argv[1] + "/store", rank=0, world_size=1)
config = TrainerConfig(accelerator="cpu", enable_progress_bar=False, logger="none", limit_train_batches=2,
                       limit_val_batches=1)
make_trainer(config, sys.argv[1], max_epochs=1).fit(BoringModel())
slept.append("fit done")
"""


def test_a_process_that_trained_in_a_gloo_group_lets_its_threads_finish_at_exit(tmp_path):
    """After training in a gloo group (DDP on CPUs), the process sleeps at exit, before the
    interpreter tears down, so gloo's threads can drop their finished work while they may still
    take the GIL (otherwise a ddp_spawn worker sometimes aborted after its fit)."""
    script = tmp_path / "fit.py"
    script.write_text(textwrap.dedent(FIT_IN_A_GLOO_GROUP))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"slept {['fit done', GLOO_EXIT_GRACE_S]}"


def test_training_without_a_process_group_exits_at_once(run_context, tmp_path):
    """Without a process group nothing waits at exit."""
    import atexit

    from lightning.pytorch.demos.boring_classes import BoringModel

    before = atexit._ncallbacks()
    trainer = make_trainer(replace(run_context.trainer, limit_train_batches=2, limit_val_batches=1), tmp_path,
                           max_epochs=1)
    trainer.fit(BoringModel())
    assert atexit._ncallbacks() == before
