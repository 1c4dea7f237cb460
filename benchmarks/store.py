"""One sweep run twice, without and with the store of trained stages, side by side in one run.

The sweep varies settings of later stages (by default ``eval.max_users`` over SASRec on the
default synthetic data, no ranker), so with the store each distinct stage is trained once and the
other jobs read it. Both sweeps start from an empty store (the data is preprocessed once by a
warm-up run that trains nothing). Prints each sweep's wall time, how many of its jobs trained the
retriever and the ranker's fine-tuning, and whether the two sweeps' results tables are identical
job by job; writes ``benchmarks/results/store.json`` (``--out`` to change).

    OMP_NUM_THREADS=1 python benchmarks/store.py
    # 3 fusion weights x 2 LoRA ranks of the tiny LLaMA ranker over SASRec, on the default data
    python benchmarks/store.py --components ranker=llama_lora --sweep ranker.retriever_weight=0,1,4 ranker.lora.r=4,8
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
    """Run ``palr-run -m`` and read every job's results, training and where its stages came from."""
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
        log = (job / "palr.log").read_text()
        fine_tunes = "fit_ranker" in metrics["timings_s"] and (job / "llama_lora").is_dir()
        jobs.append({"job": job.name, "overrides": overrides,
                     "retriever": "read" if "retriever: read from the store" in log else "trained",
                     "ranker": ("read" if "ranker: read from the store" in log else "trained") if fine_tunes else None,
                     "fit_retriever_s": metrics["timings_s"]["fit_retriever"],
                     "fit_ranker_s": metrics["timings_s"].get("fit_ranker"),
                     "retriever_training": metrics["training"].get("retriever", {}), "rows": metrics["rows"]})
    return {"seconds": round(seconds, 1), "jobs": jobs}


def counts(jobs: list[dict]) -> dict:
    return {f"{stage}_{how}": sum(j[stage] == how for j in jobs) for stage in ("retriever", "ranker")
            for how in ("trained", "read")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", nargs="+", default=["eval.max_users=200,400,600"],
                        help="the swept overrides (their product is the sweep)")
    parser.add_argument("--components", nargs="*", default=[],
                        help="components instead of retriever=sasrec ranker=identity profile=none")
    parser.add_argument("--set", nargs="*", default=[], help="more palr-run overrides for both sweeps")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "store.json")
    args = parser.parse_args()
    chosen = {o.split("=")[0]: o for o in ["retriever=sasrec", "ranker=identity", "profile=none", *args.components]}
    common = [*chosen.values(), "trainer.threads=1", "trainer.enable_progress_bar=false", *args.set, *args.sweep]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PALR_CACHE_DIR": str(Path(tmp) / "cache"), "OMP_NUM_THREADS": "1"}
        data = [o for o in args.set if o.startswith(("dataset", "preprocess"))]
        warm_up = [*data, "retriever=popularity", "ranker=identity", "profile=none", "store.enabled=false",
                   f"hydra.run.dir={tmp}/warm"]
        subprocess.run([sys.executable, "-c", "from palr_core.cli import run; run()", *warm_up],
                       env=env, capture_output=True, check=True)  # the data, preprocessed once for both
        without = sweep([*common, "store.enabled=false"], Path(tmp) / "without", env)
        with_store = sweep(common, Path(tmp) / "with", env)
    identical = [a["rows"] == b["rows"] and a["retriever_training"] == b["retriever_training"]
                 for a, b in zip(without["jobs"], with_store["jobs"])]
    command = " ".join(["python benchmarks/store.py", *(["--components", *args.components] if args.components else []),
                        "--sweep", *args.sweep, *(["--set", *args.set] if args.set else [])])
    result = {
        "command": command,
        "sweep": ["palr-run", "-m", *common],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "threads": 1,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "without_store": {"seconds": without["seconds"], **counts(without["jobs"])},
        "with_store": {"seconds": with_store["seconds"], **counts(with_store["jobs"])},
        "time_ratio_without_over_with": round(without["seconds"] / with_store["seconds"], 2),
        "identical_results_per_job": identical,
        "jobs": {"without_store": without["jobs"], "with_store": with_store["jobs"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| sweep | jobs | seconds | retriever trained / read | ranker fine-tuned / read |\n|---|---:|---:|---|---|")
    for name in ("without_store", "with_store"):
        r = result[name]
        print(f"| {name.replace('_', ' ')} | {len(result['jobs'][name])} | {r['seconds']:.1f} | "
              f"{r['retriever_trained']} / {r['retriever_read']} | {r['ranker_trained']} / {r['ranker_read']} |")
    print(f"time ratio {result['time_ratio_without_over_with']}x; identical results per job: {identical}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
