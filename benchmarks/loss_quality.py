"""SASRec's training losses side by side on real data: the full-logits softmax, the chunked exact
softmax palr uses (``loss=ce``) and the sampled, logQ-corrected softmax (``loss=sampled``).

Each kind is one ``palr.run`` in a fresh process, with the same seed, data, split and epoch
budget, ``ranker=identity profile=none``; ``ce_full`` is ``loss=ce`` with the chunk size raised
above every batch, so the whole logits matrix is built at once as before chunking. Then
``palr report`` compares them on the same test users (paired bootstrap and sign-flip tests,
reference ``ce_full``). Prints a table, writes ``benchmarks/results/loss_quality_<dataset>.json``
and leaves the run folders and report under ``--work``.

    python benchmarks/loss_quality.py --dataset ml-1m --root ../shared/data/ml-1m --epochs 10 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"ce_full": ["retriever.loss=ce"], "ce": ["retriever.loss=ce"],
         "sampled": ["retriever.loss=sampled", "retriever.negatives=256"]}
CHILD = """
import json, sys, time
kind, run_dir, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == "ce_full":
    import palr_core.kit.losses as losses
    losses.CHUNK_ELEMENTS = 2**62  # every batch in one chunk: F.cross_entropy on the whole logits
import palr
start = time.perf_counter()
result = palr.run(overrides, run_dir=run_dir)
print(json.dumps({"seconds": round(time.perf_counter() - start, 1), "timings": result.timings}))
"""


def run_kind(kind: str, dataset: list[str], epochs: int, threads: int, work: Path) -> dict:
    overrides = [*dataset, "retriever=sasrec", "ranker=identity", "profile=none", f"retriever.max_epochs={epochs}",
                 f"trainer.threads={threads}", "trainer.enable_progress_bar=false",
                 "store.enabled=false",  # ce_full and ce share a stage key: each must train for itself
                 *KINDS[kind]]
    run_dir = work / kind
    done = subprocess.run([sys.executable, "-c", CHILD, kind, str(run_dir), json.dumps(overrides)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-4000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row = next(r for r in metrics["rows"] if r["model"].startswith("retriever"))
    logs = sorted(run_dir.glob("retriever_training/logs/*/metrics.csv"))
    epochs_run = _epochs(logs[-1]) if logs else None
    fit = metrics["timings_s"]["fit_retriever"]
    return {"kind": kind, "overrides": overrides, "HR@10": row["HR@10"], "NDCG@10": row["NDCG@10"],
            "epochs": epochs_run, "fit_s": fit, "s_per_epoch": round(fit / epochs_run, 1) if epochs_run else None,
            "wall_s": child["seconds"], "peak_memory_gb": metrics.get("peak_memory_gb", {}).get("fit_retriever")}


def _epochs(path: Path) -> int:
    import csv

    with path.open() as fh:
        return len({row["epoch"] for row in csv.DictReader(fh) if row.get("epoch") not in (None, "")})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--root", help="dataset.root (the dataset's files)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/palr_loss_quality"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / f"loss_quality_{args.dataset}.json"
    dataset = [f"dataset={args.dataset}"] + ([f"dataset.root={args.root}"] if args.root else [])
    record = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "tree": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip(),
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": args.threads,
              "loadavg_before": [round(x, 2) for x in os.getloadavg()], "runs": []}
    for kind in args.kinds:
        start = time.perf_counter()
        record["runs"].append(run_kind(kind, dataset, args.epochs, args.threads, args.work))
        print(f"{kind}: {time.perf_counter() - start:.0f} s, NDCG@10 {record['runs'][-1]['NDCG@10']:.4f}", flush=True)
        out.write_text(json.dumps(record, indent=1) + "\n")
    report = subprocess.run(["palr", "report", *(str(args.work / k) for k in args.kinds), "-r", args.kinds[0],
                             "-o", str(args.work / "report")], capture_output=True, text=True)
    record["report"] = report.stdout[-6000:]
    record["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out.write_text(json.dumps(record, indent=1) + "\n")
    print("| loss | HR@10 | NDCG@10 | epochs | s/epoch | peak GB (fit) |\n|---|---:|---:|---:|---:|---:|")
    for r in record["runs"]:
        print(f"| {r['kind']} | {r['HR@10']:.4f} | {r['NDCG@10']:.4f} | {r['epochs']} | {r['s_per_epoch']} | "
              f"{r['peak_memory_gb']} |")
    print(report.stdout)
    print(f"load average before {record['loadavg_before']}, after {record['loadavg_after']}; wrote {out}")


if __name__ == "__main__":
    main()
