"""Peak memory and time of the ``table`` dataset loading a large generated CSV log.

Writes an N-row ``user_id,item_id,timestamp,rating,review`` CSV into a temporary directory
(pyarrow, in 1M-row batches; the ``review`` text column is never read by the loader), then loads
it in a fresh process with ``TableDataset`` and reports the peak resident memory
(``VmHWM``) against the size of the file and of the kept arrays.

    nice python benchmarks/table_memory.py --rows 20000000
Prints a markdown table and writes ``benchmarks/results/table_memory[_strings][_rating<t>].json``.
``--string-ids`` measures ids like ``u123`` (object arrays: "kept arrays" counts their 8-byte
pointers, not the one string object per distinct id).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "table_memory.json"


def generate(path: Path, rows: int, string_ids: bool = False, seed: int = 0, batch: int = 1_000_000) -> None:
    """Write ``rows`` random events (1M users, 200k items, ratings 1-5, a short text column).

    ``string_ids`` writes ids like ``u123`` / ``B0123`` (the string-id code path) instead of integers.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    words = np.array(["great", "fine", "meh", "loved it", "would buy again", "broke after a week"])
    id_type = pa.string() if string_ids else pa.int64()
    with pacsv.CSVWriter(str(path), pa.schema([("user_id", id_type), ("item_id", id_type),
                                                ("timestamp", pa.int64()), ("rating", pa.int8()),
                                                ("review", pa.string())])) as writer:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            users, items = rng.integers(0, 1_000_000, n), rng.integers(0, 200_000, n)
            if string_ids:
                users, items = np.char.add("u", users.astype(str)), np.char.add("B0", items.astype(str))
            writer.write_table(pa.table({
                "user_id": users,
                "item_id": items,
                "timestamp": 1_500_000_000 + rng.integers(0, 10**8, n),
                "rating": rng.integers(1, 6, n).astype(np.int8),
                "review": words[rng.integers(0, len(words), n)],
            }))


def peak_rss() -> int:
    """Peak resident bytes of this process image.

    ``VmHWM`` where Linux provides it: ``getrusage``'s maxrss survives ``execve`` and so would
    report the parent's (the generator's) memory as this child's floor.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(path: Path, threshold: float | None) -> dict:
    """Load ``path`` in this process and return time, peak RSS and the kept arrays' size."""
    import palr.plugins.table.dataset  # noqa: F401  (import cost belongs to the baseline, not to loading)
    from palr.plugins.table.dataset import TableDataset

    baseline = peak_rss()
    params = {"interactions": str(path)}
    if threshold is not None:
        params.update(rating="rating", rating_threshold=threshold)
    t0 = time.perf_counter()
    raw = TableDataset(**params).load()
    seconds = time.perf_counter() - t0
    peak = peak_rss()
    kept = raw.log.users.nbytes + raw.log.items.nbytes + raw.log.timestamps.nbytes
    return {"rows_kept": len(raw.log), "load_s": round(seconds, 1), "baseline_rss_mb": round(baseline / 2**20),
            "peak_rss_mb": round(peak / 2**20), "load_mb": round((peak - baseline) / 2**20),
            "kept_arrays_mb": round(kept / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000_000])
    parser.add_argument("--rating-threshold", type=float, default=None)
    parser.add_argument("--string-ids", action="store_true", help="ids like u123/B0123 instead of integers")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.rating_threshold)))
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"log_{rows}.csv"
            t0 = time.perf_counter()
            generate(path, rows, args.string_ids)
            gen_s = time.perf_counter() - t0
            cmd = [sys.executable, __file__, "--measure", str(path)]
            if args.rating_threshold is not None:
                cmd += ["--rating-threshold", str(args.rating_threshold)]
            child = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            results.append({"rows": rows, "string_ids": args.string_ids, "file_mb": round(path.stat().st_size / 2**20), "generate_s": round(gen_s, 1),
                            "rating_threshold": args.rating_threshold, **child})
            path.unlink()
    print("| rows | ids | file MB | kept rows | load s | baseline RSS MB | peak RSS MB | peak - baseline MB "
          "| kept arrays MB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['rows']:,} | {'str' if r['string_ids'] else 'int'} | {r['file_mb']:,} | {r['rows_kept']:,} "
              f"| {r['load_s']} | {r['baseline_rss_mb']} | {r['peak_rss_mb']:,} | {r['load_mb']:,} "
              f"| {r['kept_arrays_mb']:,} |")
    suffix = ("_strings" if args.string_ids else "") + (f"_rating{args.rating_threshold:g}"
                                                        if args.rating_threshold is not None else "")
    out = RESULTS.with_name(f"table_memory{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
