"""Load + preprocess time of the real datasets, cold (empty parsed-data cache) and warm (cached).

Usage: ``python benchmarks/datasets.py [--data ../shared/data] [--repeats 3]``. Prints a markdown
table and writes ``benchmarks/results/datasets.json``. Datasets whose copy is absent are skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from palr_core import RunContext
from palr_core.pipeline import cached_preprocess
from palr_core.plugins import load_registry

REPO = Path(__file__).resolve().parents[1]
#: (row label, registered dataset, params, folder under --data)
DATASETS = [
    ("ML-1M", "movielens", {"variant": "ml-1m"}, "ml-1m"),
    ("ML-100K", "movielens", {"variant": "ml-100k"}, "ml-100k"),
    ("Beauty", "amazon", {"category": "Beauty"}, "amazon-beauty"),
]


def time_once(registry, name: str, params: dict, cache: Path) -> dict:
    """Seconds to build + load, and to preprocess (5-core, through palr-run's cache), plus the statistics."""
    t0 = time.perf_counter()
    dataset = registry.build("dataset", name, params)
    raw = dataset.load(RunContext(seed=0, work_dir=cache / "run", cache_dir=cache))
    t1 = time.perf_counter()
    data = cached_preprocess(raw, 5, cache)
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "preprocess_s": t2 - t1, "total_s": t2 - t0,
            "from_cache": dataset.report.get("from_cache"), "stats": data.stats.as_dict()}


def bench(registry, label, name, params, root: Path, repeats: int) -> list[dict]:
    rows = []
    for mode in ("cold", "warm"):
        runs = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as cache:
                p = {**params, "root": str(root), "progress": False}
                if mode == "warm":
                    time_once(registry, name, p, Path(cache))  # fill the cache
                runs.append(time_once(registry, name, p, Path(cache)))
        assert all(r["from_cache"] == (mode == "warm") for r in runs)
        median = {k: statistics.median(r[k] for r in runs) for k in ("load_s", "preprocess_s", "total_s")}
        rows.append({"dataset": label, "mode": mode, "repeats": repeats, **median, "stats": runs[0]["stats"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("PALR_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "datasets.json")
    args = parser.parse_args()
    registry = load_registry()
    rows = []
    for label, name, params, folder in DATASETS:
        if (args.data / folder).is_dir():
            rows += bench(registry, label, name, params, args.data / folder, args.repeats)
    print("| dataset | cache | load (s) | preprocess (s) | total (s) | users | items | interactions |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r["stats"]
        print(f"| {r['dataset']} | {r['mode']} | {r['load_s']:.3f} | {r['preprocess_s']:.3f} | "
              f"{r['total_s']:.3f} | {s['users']:,} | {s['items']:,} | {s['interactions']:,} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "median_of": args.repeats}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nmedian of {args.repeats} runs; written to {args.out}")


if __name__ == "__main__":
    main()
