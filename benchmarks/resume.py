"""A run killed in the middle of training, started again, against the same run never interrupted.

Runs ``palr-run`` twice with the same settings (SASRec on a real dataset, no ranker, so the
retriever's training is what is interrupted): once straight through, once killed with SIGKILL
halfway through epoch ``--kill-epoch`` and then started again in its folder. Prints both rows and
whether they are equal; writes ``benchmarks/results/resume_<dataset>.json``.

    python benchmarks/resume.py --dataset ml-100k --kill-epoch 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PALR_SHARED_DATA", REPO.parent / "shared" / "data"))


def palr_run(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from palr_core.cli import run; run()", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_mid_epoch(args: list[str], env: dict, run_dir: Path, epoch: int) -> dict:
    """Start the run and SIGKILL it halfway through ``epoch`` (0-based), judged by ``last.ckpt``,
    which is rewritten at the end of every epoch."""
    last = run_dir / "retriever_training" / "checkpoints" / "last.ckpt"
    proc, stamps, started = palr_run(args, env), [], time.perf_counter()
    while len(stamps) < epoch and proc.poll() is None:
        if last.exists() and (not stamps or last.stat().st_mtime_ns != stamps[-1][0]):
            stamps.append((last.stat().st_mtime_ns, time.perf_counter()))
        time.sleep(0.05)
    epoch_s = (stamps[-1][1] - stamps[0][1]) / max(1, len(stamps) - 1) if len(stamps) > 1 else 5.0
    time.sleep(epoch_s / 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"killed_after_s": round(time.perf_counter() - started, 1), "epoch_s": round(epoch_s, 1),
            "finished_before_kill": (run_dir / "metrics.json").exists()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"])
    parser.add_argument("--kill-epoch", type=int, default=3, help="kill halfway through this epoch (0-based)")
    parser.add_argument("--set", nargs="*", default=[], help="more palr-run overrides")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PALR_CACHE_DIR": str(Path(tmp) / "cache")}
        common = [f"dataset={args.dataset}", f"dataset.root={DATA / args.dataset}", "retriever=sasrec",
                  "ranker=identity", "profile=none", "trainer.enable_progress_bar=false", *args.set]
        whole, killed = Path(tmp) / "whole", Path(tmp) / "killed"
        started = time.perf_counter()
        if palr_run([*common, f"hydra.run.dir={whole}"], env).wait() != 0:
            raise SystemExit("the uninterrupted run failed")
        whole_s = time.perf_counter() - started
        kill = kill_mid_epoch([*common, f"hydra.run.dir={killed}"], env, killed, args.kill_epoch)
        if palr_run([*common, f"hydra.run.dir={killed}"], env).wait() != 0:
            raise SystemExit("the resumed run failed")
        rows = {name: json.loads((folder / "metrics.json").read_text())["rows"][0]
                for name, folder in (("uninterrupted", whole), ("killed and resumed", killed))}
        summary = json.loads((killed / "retriever_training" / "done.json").read_text())
    equal = rows["uninterrupted"] == rows["killed and resumed"]
    print("| run | HR@10 | NDCG@10 |\n|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['HR@10']:.4f} | {row['NDCG@10']:.4f} |")
    print(f"\nkilled {kill}; resumed from {summary.get('resumed_from')}; identical rows: {equal}")
    out = args.out or REPO / "benchmarks" / "results" / f"resume_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join(sys.argv), "overrides": common[:1] + common[2:], "kill": kill,
                               "uninterrupted_s": round(whole_s, 1), "rows": rows, "identical": equal,
                               "epochs": summary.get("epochs"), "stopped_by": summary.get("stopped_by"),
                               "load_average": os.getloadavg()}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
