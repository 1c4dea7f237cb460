"""How fast a finished run answers: ``palr recommend`` from the shell, and ``load_run`` + ``recommend`` in Python.

Trains a run first unless ``--run-dir`` names a finished one (``--overrides`` are palr-run's), then:

1. ``palr recommend <run> -u <user>`` as a user types it, ``--repeats`` times: the wall-clock
   seconds from starting the command to its exit, which is when the one user's answer is printed.
   The user is one the run evaluated, so the answer is read from the run's
   ``recommendations.parquet``; then the same with ``--recompute``, which loads the run's models
   (the interpreter's start, imports, loading the run, retrieving and ranking);
2. the imports it starts with (torch, Lightning, transformers and peft, palr's API), each in a
   fresh interpreter;
3. in one process: ``palr.load_run`` once, then ``recommend(user, k)`` for ``--users`` users one
   at a time (median and 90th percentile) and ``recommend_many`` for the same users in one call.

Prints a table and writes ``benchmarks/results/recommend.json`` (``--name`` adds a suffix) with
the machine, its load average before and after, the date and the thread count.

    python benchmarks/recommend.py --run-dir outputs/<date>/<time> --threads 2
    python benchmarks/recommend.py --name ml-100k --threads 2 \\
        --overrides dataset=ml-100k dataset.root=../shared/data/ml-100k
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    """The CPU model and how many CPUs this process may use."""
    model = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} CPUs usable"


def command_seconds(run_dir: Path, user: str, threads: int, repeats: int, *extra: str) -> tuple[list[float], str]:
    """Wall-clock seconds of ``palr recommend run_dir -u user *extra``, start to exit, and its last output."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    times, out = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([shutil.which("palr") or "palr", "recommend", str(run_dir), "-u", user, *extra],
                              env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"palr recommend failed:\n{proc.stderr}")
        out = proc.stdout
    return times, out


#: what the command's start-up imports, each timed in a fresh interpreter: where the seconds go
IMPORTS = {"python alone": "pass", "torch": "import torch", "torch + lightning": "import torch, lightning",
           "torch + transformers + peft": "import torch, transformers, peft", "palr_core.api": "import palr_core.api",
           "palr_core.cli + pyarrow.parquet": "import palr_core.cli, pyarrow.parquet"}


def import_seconds(threads: int, repeats: int) -> dict[str, float]:
    """Median wall-clock seconds of ``python -c <import>`` for each of :data:`IMPORTS`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = {}
    for name, code in IMPORTS.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(time.perf_counter() - t0)
        out[name] = round(statistics.median(times), 2)
    return out


def spread(times: list[float]) -> dict:
    return {"median": round(statistics.median(times), 2), "min": round(min(times), 2), "max": round(max(times), 2),
            "each": [round(t, 2) for t in times]}


def shown(spread: dict) -> str:
    return f"{spread['median']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="", help="a suffix for the JSON file: recommend_<name>.json")
    parser.add_argument("--run-dir", help="a finished run (default: train one with --overrides)")
    parser.add_argument("--overrides", nargs="*", default=[], help="palr-run overrides for the run trained first")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="how many times the command is timed")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (pinned: shared machines oversubscribe)")
    args = parser.parse_args()

    load_before = os.getloadavg()
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        import palr

        t0 = time.perf_counter()
        run_dir = palr.run(args.overrides).run_dir
        print(f"trained {run_dir} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    import torch

    torch.set_num_threads(args.threads)
    import palr

    t0 = time.perf_counter()
    run = palr.load_run(run_dir)
    load_s = time.perf_counter() - t0
    users = run.users[:args.users]
    precomputed = run_dir / "recommendations.parquet"
    if not precomputed.is_file():
        raise SystemExit(f"{precomputed} is missing: the run was made with recommend.precompute=false or before palr "
                         "wrote it; run it again")
    import pyarrow.parquet as pq

    user = str(pq.read_table(precomputed, columns=["user"])["user"][0])  # an evaluated user: answered from the file
    command, answer = command_seconds(run_dir, user, args.threads, args.repeats)
    recompute, answer_recomputed = command_seconds(run_dir, user, args.threads, args.repeats, "--recompute")
    if answer_recomputed.splitlines()[0] != answer.splitlines()[0]:
        raise SystemExit(f"the file and the models answer differently:\n{answer}\n{answer_recomputed}")
    imports = import_seconds(args.threads, args.repeats)
    run.recommend(users[0], k=args.k)  # first call: lazy set-up (tries, caches) out of the timings
    each = []
    for u in users:
        t0 = time.perf_counter()
        run.recommend(u, k=args.k)
        each.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    run.recommend_many(users, k=args.k)
    batch_s = time.perf_counter() - t0

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "python": platform.python_version(), "torch": torch.__version__,
        "run_dir": str(run_dir), "overrides": args.overrides, "dataset": run.data.name,
        "catalog_items": len(run.data.catalog), "components": run.names,
        "candidates": run.config.eval.candidates, "k": args.k, "threads": args.threads,
        "command": f"palr recommend <run> -u {user}",
        "command_s": spread(command), "command_recompute_s": spread(recompute),
        "first_answer": answer.splitlines()[0] if answer else "", "imports_s": imports,
        "users": len(users), "load_run_s": round(load_s, 3),
        "recommend_one_user_ms": {"median": round(1000 * statistics.median(each), 1),
                                  "p90": round(1000 * sorted(each)[int(0.9 * (len(each) - 1))], 1)},
        "recommend_many_s": round(batch_s, 3),
        "recommend_many_per_user_ms": round(1000 * batch_s / len(users), 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"| dataset | ranker | palr recommend, one user: s (median of {args.repeats}; min-max) | "
          f"the same with --recompute: s | load_run s | recommend one user ms (median / p90) | "
          f"recommend_many per user ms |\n|---|---|---:|---:|---:|---:|---:|\n"
          f"| {run.data.name} | {run.names['ranker']} over {run.names['retriever']} | {shown(result['command_s'])} | "
          f"{shown(result['command_recompute_s'])} | "
          f"{load_s:.2f} | {result['recommend_one_user_ms']['median']} / {result['recommend_one_user_ms']['p90']} | "
          f"{result['recommend_many_per_user_ms']} |")
    print("| import (fresh interpreter, median) | s |\n|---|---:|\n"
          + "\n".join(f"| {name} | {seconds:.2f} |" for name, seconds in imports.items()))
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}; "
          f"{result['machine']}")
    out = REPO / "benchmarks" / "results" / f"recommend{'_' + args.name if args.name else ''}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
