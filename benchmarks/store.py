"""One sweep run twice, without and with the store of trained stages, side by side in one run.

The sweep varies a setting that cannot change the retriever (by default ``eval.max_users`` over
SASRec on the default synthetic data, trained to early stopping, no ranker), so with the store its
first job trains SASRec and the others read it. Both sweeps start from an empty cache (the data is
preprocessed once by a warm-up run that trains nothing). Prints each sweep's wall time, how many
of its jobs trained the retriever, and whether the two sweeps' results tables are identical job by
job; writes ``benchmarks/results/store.json``.

    OMP_NUM_THREADS=1 python benchmarks/store.py
    python benchmarks/store.py --sweep eval.candidates=20,50,100 --set dataset.users=300
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sweep(overrides: list[str], folder: Path, env: dict) -> dict:
    """Run ``palr-run -m`` and read every job's results, training and where its retriever came from."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", "from palr_core.cli import run; run()", "-m", *overrides,
                           f"hydra.sweep.dir={folder}"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"palr-run -m {' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    jobs = []
    for job in sorted((p for p in folder.iterdir() if (p / "metrics.json").is_file()), key=lambda p: int(p.name)):
        metrics = json.loads((job / "metrics.json").read_text())
        overrides = [line[2:] for line in (job / ".hydra" / "overrides.yaml").read_text().splitlines()
                     if line.startswith("- ")]
        jobs.append({"job": job.name, "overrides": overrides,
                     "trained_retriever": (job / "retriever_training" / "done.json").is_file(),
                     "read_from_store": (job / "retriever" / "stored.json").is_file(),
                     "fit_retriever_s": metrics["timings_s"]["fit_retriever"],
                     "training": metrics["training"].get("retriever", {}), "rows": metrics["rows"]})
    return {"seconds": round(seconds, 1), "jobs": jobs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="eval.max_users=200,400,600", help="the swept override")
    parser.add_argument("--set", nargs="*", default=[], help="more palr-run overrides for both sweeps")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "store.json")
    args = parser.parse_args()
    common = ["retriever=sasrec", "ranker=identity", "profile=none", "trainer.threads=1",
              "trainer.enable_progress_bar=false", *args.set, args.sweep]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PALR_CACHE_DIR": str(Path(tmp) / "cache"), "OMP_NUM_THREADS": "1"}
        warm_up = [*common[:-1], "trainer.max_epochs=1", "store.enabled=false", f"hydra.run.dir={tmp}/warm"]
        subprocess.run([sys.executable, "-c", "from palr_core.cli import run; run()", *warm_up],
                       env=env, capture_output=True, check=True)  # the data, preprocessed once for both
        without = sweep([*common, "store.enabled=false"], Path(tmp) / "without", env)
        with_store = sweep(common, Path(tmp) / "with", env)
    identical = [a["rows"] == b["rows"] and a["training"] == b["training"]
                 for a, b in zip(without["jobs"], with_store["jobs"])]
    result = {
        "command": f"python benchmarks/store.py --sweep {args.sweep}" + (f" --set {' '.join(args.set)}" if args.set else ""),
        "sweep": ["palr-run", "-m", *common],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "without_store": {"seconds": without["seconds"],
                          "retriever_trainings": sum(j["trained_retriever"] for j in without["jobs"])},
        "with_store": {"seconds": with_store["seconds"],
                       "retriever_trainings": sum(j["trained_retriever"] for j in with_store["jobs"]),
                       "read_from_store": sum(j["read_from_store"] for j in with_store["jobs"])},
        "time_ratio_without_over_with": round(without["seconds"] / with_store["seconds"], 2),
        "identical_results_per_job": identical,
        "jobs": {"without_store": without["jobs"], "with_store": with_store["jobs"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for name in ("without_store", "with_store"):
        print(f"{name:14} {result[name]['seconds']:7.1f} s, retriever trained {result[name]['retriever_trainings']}x, "
              "fit_retriever per job: " + ", ".join(f"{j['fit_retriever_s']:.1f} s" for j in result["jobs"][name]))
    print(f"time ratio {result['time_ratio_without_over_with']}x; identical results per job: {identical}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
