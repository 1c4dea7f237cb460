"""SASRec trained data-parallel over two CPU processes (Lightning's ``ddp_spawn``, gloo) beside
the same training in one process, and one process under other seeds: is DDP within seed noise?

300 synthetic users (``palr_core.testing.tiny_data``), hidden 32, 15 epochs; one process takes
batches of 64, each DDP process 32 (the same 64 per optimizer step). Test NDCG@10 and HR@10 over
the whole catalogue, and the seconds each fit took.

    python benchmarks/ddp.py      # ~3 min on 2 CPU cores

Prints one line per run and writes ``benchmarks/results/ddp.json``.
"""

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(out: Path = REPO / "benchmarks" / "results" / "ddp.json") -> None:
    import torch
    from palr.plugins.sasrec.model import SASRecRetriever

    from palr_core.kit.retrievers import rank_from_scores
    from palr_core.metrics import metrics_from_ranks
    from palr_core.pipeline import seed_stage
    from palr_core.testing import tiny_context, tiny_data

    d = tiny_data(users=300, franchises=80)
    results = {}
    for label, devices, batch, seed in [("one", 1, 64, 0), ("one-seed1", 1, 64, 1), ("one-seed2", 1, 64, 2),
                                        ("ddp", 2, 32, 0), ("ddp-seed1", 2, 32, 1)]:
        ctx = tiny_context(Path(tempfile.mkdtemp()), catalog=d.catalog, seed=seed)
        if devices > 1:
            ctx = replace(ctx, trainer=replace(ctx.trainer, devices=2, strategy="ddp_spawn"))
        seed_stage(seed, "fit_retriever")
        retriever = SASRecRetriever(maxlen=30, hidden=32, heads=2, blocks=1, batch_size=batch, max_epochs=15,
                                    patience=100)
        started = time.time()
        retriever.fit(d.training, ctx)
        seconds = time.time() - started
        scores = retriever.score(d.split.histories("test"))
        m = metrics_from_ranks(rank_from_scores(scores, torch.as_tensor(d.split.test)).numpy())
        results[label] = {"NDCG@10": round(m["NDCG@10"], 4), "HR@10": round(m["HR@10"], 4), "s": round(seconds, 1),
                          **retriever.fit_summary}
        print(label, results[label], flush=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":  # ddp_spawn starts its processes from this file: the guard keeps them out of main()
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "benchmarks" / "results" / "ddp.json")
