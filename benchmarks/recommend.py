"""How fast a finished run answers: ``palr.load_run`` once, then ``recommend`` per user.

Trains a run first unless ``--run-dir`` names a finished one (``--overrides`` are palr-run's), then
in one process: the time to load the run (components rebuilt, data read from the cache, the
retriever's checkpoint and the ranker's adapter loaded; nothing trained), the time of
``recommend(user, k)`` for ``--users`` users one at a time (median and 90th percentile), and of
``recommend_many`` for the same users in one call. Prints a table and writes
``benchmarks/results/recommend_<name>.json`` with the load average and thread count.

    python benchmarks/recommend.py --name default --threads 2
    python benchmarks/recommend.py --name ml-100k --threads 2 \\
        --overrides dataset=ml-100k dataset.root=../shared/data/ml-100k
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="names the JSON file")
    parser.add_argument("--run-dir", help="a finished run (default: train one with --overrides)")
    parser.add_argument("--overrides", nargs="*", default=[], help="palr-run overrides for the run trained first")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (pinned: shared machines oversubscribe)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import palr

    load_before = os.getloadavg()
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        t0 = time.perf_counter()
        run_dir = palr.run(args.overrides).run_dir
        print(f"trained {run_dir} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    t0 = time.perf_counter()
    run = palr.load_run(run_dir)
    load_s = time.perf_counter() - t0
    users = run.users[:args.users]
    run.recommend(users[0], k=args.k)  # first call: lazy set-up (tries, caches) out of the timings
    each = []
    for user in users:
        t0 = time.perf_counter()
        run.recommend(user, k=args.k)
        each.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    run.recommend_many(users, k=args.k)
    batch_s = time.perf_counter() - t0

    result = {
        "run_dir": str(run_dir), "overrides": args.overrides, "dataset": run.data.name,
        "catalog_items": len(run.data.catalog), "components": run.names,
        "candidates": run.config.eval.candidates, "k": args.k, "users": len(users),
        "load_run_s": round(load_s, 3),
        "recommend_one_user_ms": {"median": round(1000 * statistics.median(each), 1),
                                  "p90": round(1000 * sorted(each)[int(0.9 * (len(each) - 1))], 1)},
        "recommend_many_s": round(batch_s, 3),
        "recommend_many_per_user_ms": round(1000 * batch_s / len(users), 1),
        "threads": args.threads, "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"| dataset | ranker | load_run s | recommend one user ms (median / p90) | recommend_many per user ms |\n"
          f"|---|---|---:|---:|---:|\n| {run.data.name} | {run.names['ranker']} over {run.names['retriever']} | "
          f"{load_s:.2f} | {result['recommend_one_user_ms']['median']} / {result['recommend_one_user_ms']['p90']} | "
          f"{result['recommend_many_per_user_ms']} |")
    out = REPO / "benchmarks" / "results" / f"recommend_{args.name}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
