"""How palr's cost grows with the size of the log: generated logs of a given shape, the whole pipeline per size.

Three parts, each optional:

* ``--events``: per size, a seeded log of that many events (users and items scaled from ML-20M's
  shape, power-law popularity) written as Parquet, then ``palr-run dataset=table ...`` in a
  subprocess with ``retriever=popularity`` and with ``retriever=sasrec`` (one epoch, limited
  batches), ``ranker=identity profile=none``; per stage seconds (``metrics.json``) and the peak
  RSS of the run (``getrusage`` of the child).
* ``--loss-items``: the peak memory and time of one SASRec training step at that catalogue size
  (ML-20M: 26,744 items), the loss over full logits against the chunked one
  (``palr_core.kit.losses``), each in its own process.
* ``--retrieval-users``: full-catalogue top-50 retrieval (``TrainedRetriever.retrieve``: scoring,
  history masking, top-k) for that many users of the ML-20M shape, timed in-process.
* ``--preprocess-events``: per size, a generated Parquet log read, deduplicated, 5-cored and split
  (leave-one-out) alone, each in a fresh process: ``dataset.engine=duckdb`` at every size,
  ``engine=memory`` up to ``--memory-engine-max`` events; seconds, seconds per million events and
  peak RSS.

    nice python benchmarks/scale.py --events 1000000 5000000 --loss-items 26744 --retrieval-users 20000 --threads 2
    python benchmarks/scale.py --preprocess-events 1000000 5000000 20000000 100000000 200000000 \
        --out benchmarks/results/scale_preprocess.json

Prints a markdown table and writes ``benchmarks/results/scale.json`` (``--out`` to change), and
``scale.png`` beside it when matplotlib is installed. ``--preset ml-20m`` (or ``ml-25m``) adds
that dataset's whole shape as a size.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scale.json"

#: (users, items, events) of the MovieLens releases (their README files)
PRESETS = {"ml-20m": (138_493, 26_744, 20_000_263), "ml-25m": (162_541, 59_047, 25_000_095)}
SASREC_LIMITS = ["trainer.max_epochs=1", "trainer.limit_train_batches=100", "trainer.limit_val_batches=10",
                 "eval.max_users=5000"]


def shape_for(events: int, like: str = "ml-20m") -> tuple[int, int, int]:
    """(users, items, events): ``like``'s users and items scaled by ``events`` over its events."""
    users, items, total = PRESETS[like]
    return max(50, round(users * events / total)), max(50, round(items * events / total)), events


def generate(path: Path, users: int, items: int, events: int, exponent: float = 1.0, seed: int = 0,
             batch: int = 2_000_000) -> None:
    """Write a seeded ``user_id,item_id,timestamp`` Parquet log.

    Item ``i`` (0-based popularity rank) is drawn with probability proportional to
    ``(i + 1) ** -exponent``; users' activity follows the same law with half the exponent, so
    there are heavy and light users as in MovieLens. Ids are shuffled so rank is not id order.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    item_p = np.arange(1, items + 1, dtype=np.float64) ** -exponent
    user_p = np.arange(1, users + 1, dtype=np.float64) ** (-exponent / 2)
    item_ids, user_ids = rng.permutation(items), rng.permutation(users)
    item_cdf, user_cdf = np.cumsum(item_p / item_p.sum()), np.cumsum(user_p / user_p.sum())
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())])
    with pq.ParquetWriter(str(path), schema) as writer:
        for start in range(0, events, batch):
            n = min(batch, events - start)
            u = user_ids[np.minimum(np.searchsorted(user_cdf, rng.random(n)), users - 1)]
            i = item_ids[np.minimum(np.searchsorted(item_cdf, rng.random(n)), items - 1)]
            t = 1_000_000_000 + rng.integers(0, 10**8, n)
            writer.write_table(pa.table({"user_id": u, "item_id": i, "timestamp": t}, schema=schema))


def measured(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` through a fresh ``python scale.py _child`` so ``getrusage(RUSAGE_CHILDREN)`` sees it alone."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "_child", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    child = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_s": round(wall, 2), "peak_rss_mb": child["peak_rss_mb"], "stdout": child["stdout"]}


def child(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-5000:])
        sys.exit(done.returncode)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: kilobytes
    print(json.dumps({"peak_rss_mb": round(peak_kb / 1024), "stdout": done.stdout[-2000:]}))


def run_pipeline(log: Path, retriever: str, threads: int, work: Path, extra: list[str] = ()) -> dict:
    """``palr-run`` on the generated log; per stage seconds and the run's peak RSS. Each run has its
    own empty ``cache_dir``, so every run reads and preprocesses the log itself."""
    run_dir = work / f"run_{retriever}"
    cmd = ["palr-run", "dataset=table", f"dataset.interactions={log}", "dataset.title=null",
           f"retriever={retriever}", "ranker=identity", "profile=none", f"trainer.threads={threads}",
           "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", f"cache_dir={work / ('cache_' + retriever)}",
           *(SASREC_LIMITS if retriever == "sasrec" else []), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    result = measured(cmd, env)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ndcg = {row["model"]: row.get("NDCG@10") for row in metrics.get("rows", []) if isinstance(row, dict)}
    return {"retriever": retriever, "command": " ".join(cmd[:1] + cmd[2:]), "wall_s": result["wall_s"],
            "peak_rss_mb": result["peak_rss_mb"], "stages_s": metrics["timings_s"],
            "stage_peak_gb": metrics.get("peak_memory_gb"), "stats": metrics["stats"],
            "users_evaluated": metrics.get("users_evaluated"), "ndcg10": ndcg}


def _loss(kind: str, hidden, weight, targets):
    import torch.nn.functional as F

    from palr_core.kit.losses import CHUNK_ELEMENTS, full_cross_entropy

    if kind == "full":
        return F.cross_entropy(hidden @ weight.T, targets)
    if kind == "checkpoint":  # torch.utils.checkpoint per chunk, the alternative to the kit's Function
        from torch.utils.checkpoint import checkpoint

        chunk = max(1, CHUNK_ELEMENTS // len(weight))
        return sum(checkpoint(lambda h, t: F.cross_entropy(h @ weight.T, t, reduction="sum"),
                              hidden[s:s + chunk], targets[s:s + chunk], use_reentrant=False)
                   for s in range(0, len(hidden), chunk)) / len(hidden)
    return full_cross_entropy(hidden, weight, targets)


def _loss_inputs(items: int, rows: int):
    import torch

    torch.manual_seed(0)
    return (torch.randn(rows, 64, requires_grad=True), (torch.randn(items, 64) * 0.02).requires_grad_(),
            torch.randint(0, items, (rows,)))


def loss_step(items: int, kind: str, rows: int) -> dict:
    """One SASRec-sized training step's loss + backward (``rows`` positions of hidden 64 against
    ``items`` items) in this process: seconds and peak RSS growth over the set-up."""
    hidden, weight, targets = _loss_inputs(items, rows)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    loss = _loss(kind, hidden, weight, targets)
    loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": kind, "items": items, "rows": rows, "seconds": round(seconds, 3),
            "peak_rss_growth_mb": round((peak - before) / 1024), "loss": loss.item()}


def loss_timing(items: int, rows: int, rounds: int, threads: int) -> dict:
    """Median seconds of loss + backward per kind, the kinds interleaved round by round in one
    process (so that a change of machine load hits them alike)."""
    import torch

    torch.set_num_threads(threads)
    inputs = _loss_inputs(items, rows)
    seconds: dict[str, list[float]] = {"full": [], "checkpoint": [], "chunked": []}
    for _ in range(rounds):
        for kind in seconds:
            for t in inputs[:2]:
                t.grad = None
            start = time.perf_counter()
            _loss(kind, *inputs).backward()
            seconds[kind].append(time.perf_counter() - start)
    return {"items": items, "rows": rows, "rounds": rounds,
            "median_s": {k: round(float(np.median(v)), 3) for k, v in seconds.items()},
            "all_s": {k: [round(x, 3) for x in v] for k, v in seconds.items()}}


def use_kit_of(revision: str) -> None:
    """Swap in ``palr_core/kit/retrievers.py``'s padding, masking and top-k as they were at ``revision``
    (git), to time the retrieval path before a change with everything else as it is now."""
    import types

    import palr_core.kit.retrievers as kit

    source = subprocess.run(["git", "show", f"{revision}:palr_core/kit/retrievers.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    old = types.ModuleType("palr_core.kit._retrievers_then")
    old.__package__ = "palr_core.kit"
    exec(compile(source, f"retrievers.py@{revision}", "exec"), old.__dict__)
    for name in ("left_pad", "right_pad", "mask_history", "top_k_unseen"):
        setattr(kit, name, getattr(old, name))


def retrieval(users: int, threads: int, kit_revision: str | None = None) -> dict:
    """``TrainedRetriever.retrieve`` top-50 for ``users`` histories of the ML-20M shape (an untrained
    SASRec: the cost does not depend on the weights); ``kit_revision``: :func:`use_kit_of` first."""
    import torch
    from palr.plugins.sasrec.model import SASRecRetriever

    if kit_revision:
        use_kit_of(kit_revision)
    torch.set_num_threads(threads)
    n_users, items, events = PRESETS["ml-20m"]
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.zipf(1.6, users) + 19, 2000)  # ML-20M: at least 20 per user, heavy tail
    item_p = np.arange(1, items + 1, dtype=np.float64) ** -1.0
    histories = [rng.choice(items, size=min(n, items), replace=False, p=item_p / item_p.sum()) for n in lengths]
    sasrec = SASRecRetriever()
    sasrec.num_items = items
    sasrec.module = sasrec.build_module(items)
    start = time.perf_counter()
    ids, _ = sasrec.retrieve(histories, 50)
    seconds = time.perf_counter() - start
    assert not any(set(h.tolist()) & set(r.tolist()) for h, r in zip(histories[:100], ids[:100]))
    return {"kit": kit_revision or "current", "users": users, "items": items, "history_items": int(lengths.sum()), "seconds": round(seconds, 2),
            "users_per_s": round(users / seconds), "peak_rss_mb": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024)}


def preprocess_log(log: str, engine: str, memory_limit: str, threads: int) -> dict:
    """Read, dedup, 5-core and leave-one-out split ``log`` with the table dataset's ``engine``, in
    this process: seconds per step and the process's peak RSS."""
    import torch
    from palr.plugins.table.dataset import TableDataset

    from palr_core import leave_one_out_split, preprocess

    torch.set_num_threads(threads)
    dataset = TableDataset(interactions=log, title=None, engine=engine, memory_limit=memory_limit)
    start = time.perf_counter()
    data = dataset.load_sequences(5, None) if engine == "duckdb" else preprocess(dataset.load(None), k_core=5)
    preprocessed = time.perf_counter()
    split = leave_one_out_split(data)
    done = time.perf_counter()
    stats = data.stats
    return {"engine": engine, "memory_limit": memory_limit if engine == "duckdb" else None,
            "preprocess_s": round(preprocessed - start, 2), "split_s": round(done - preprocessed, 2),
            "seconds": round(done - start, 2), "users": stats.users, "items": stats.items,
            "interactions": stats.interactions, "test_rows": len(split.test),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def preprocessing(sizes: list[int], engines: list[str], memory_limit: str, memory_engine_max: int, threads: int,
                  record: dict, out: Path, exponent: float) -> None:
    """The preprocessing-only rows of :func:`main`, written after each run."""
    record["preprocess"] = []
    for events in sizes:
        users, items, _ = shape_for(events)
        with tempfile.TemporaryDirectory(prefix="palr_scale_") as tmp:
            log = Path(tmp) / "log.parquet"
            start = time.perf_counter()
            generate(log, users, items, events, exponent)
            generated = round(time.perf_counter() - start, 1)
            for engine in engines:
                if engine == "memory" and events > memory_engine_max:
                    continue
                row = {"events": events, "generate_s": generated, "parquet_mb": round(log.stat().st_size / 2**20),
                       **in_fresh_process("preprocess_log", str(log), engine, memory_limit, threads)}
                row["s_per_million_events"] = round(row["seconds"] / (events / 1e6), 2)
                record["preprocess"].append(row)
                print(f"{events:,} events, preprocessing with {engine}: {row['seconds']} s, {row['peak_rss_mb']:,} MB",
                      flush=True)
                write(record, out)


def in_fresh_process(function: str, *args) -> dict:
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import scale; "
            f"print(json.dumps(scale.{function}(*{args!r})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def linearity(record: dict) -> list[str]:
    """Per retriever and stage, the cost per event at the largest size over that at the smallest
    (1.0: linear in events; the per-event cost of fixed work falls below 1)."""
    lines = []
    for retriever in dict.fromkeys(r["retriever"] for s in record["sizes"] for r in s["runs"]):
        points = [(s["events"], r) for s in record["sizes"] for r in s["runs"] if r["retriever"] == retriever]
        if len(points) < 2:
            continue
        (small, first), (large, last) = points[0], points[-1]
        stages = [st for st in first["stages_s"] if first["stages_s"][st] > 0 and last["stages_s"].get(st, 0) > 0]
        if not lines:
            lines = ["", "| retriever | sizes | per-event cost, largest / smallest size |",
                     "|---|---|---|"]
        ratios = {st: (last["stages_s"][st] / large) / (first["stages_s"][st] / small) for st in stages}
        ratios["wall"] = (last["wall_s"] / large) / (first["wall_s"] / small)
        lines.append(f"| {retriever} | {small:,} → {large:,} | " + ", ".join(f"{st} {x:.2f}x" for st, x in ratios.items())
                     + " |")
    return lines


def table(record: dict) -> str:
    lines = ["| events | users | items | interactions (5-core) | retriever | load | fit_retriever | retrieve "
             "| validate | rank | wall | peak RSS |", "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for size in record["sizes"]:
        for run in size["runs"]:
            s = run["stages_s"]
            lines.append(f"| {size['events']:,} | {size['users']:,} | {size['items']:,} | "
                         f"{run['stats']['interactions']:,} | {run['retriever']} | {s.get('load', 0):.1f} s | "
                         f"{s.get('fit_retriever', 0):.1f} s | {s.get('retrieve', 0):.1f} s | "
                         f"{s.get('validate', 0):.1f} s | {s.get('rank', 0):.1f} s | {run['wall_s']:.0f} s | "
                         f"{run['peak_rss_mb']:,} MB |")
    lines += linearity(record)
    if record.get("loss"):
        lines += ["", "| loss step | items | rows | seconds | peak RSS growth |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r['kind']} | {r['items']:,} | {r['rows']:,} | {r['seconds']} | {r['peak_rss_growth_mb']:,} MB |"
                  for r in record["loss"]]
    if record.get("loss_timing"):
        t = record["loss_timing"]
        lines += ["", f"Loss + backward, median of {t['rounds']} interleaved rounds ({t['rows']:,} rows x "
                  f"{t['items']:,} items): " + ", ".join(f"{k} {v} s" for k, v in t["median_s"].items())]
    if record.get("preprocess"):
        lines += ["", "| events | engine | interactions (5-core) | read + dedup + 5-core | split | s per 1M events "
                  "| peak RSS |", "|---:|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['events']:,} | {r['engine']} | {r['interactions']:,} | {r['preprocess_s']} s | "
                  f"{r['split_s']} s | {r['s_per_million_events']} | {r['peak_rss_mb']:,} MB |"
                  for r in record["preprocess"]]
    if record.get("retrieval"):
        lines += ["", "| retrieval (SASRec top-50, history masked) | kit | users | items | seconds | users/s "
                  "| peak RSS |", "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| | {r['kit']} | {r['users']:,} | {r['items']:,} | {r['seconds']} | {r['users_per_s']:,} | "
                  f"{r['peak_rss_mb']:,} MB |" for r in record["retrieval"]]
    return "\n".join(lines)


def plot(record: dict, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (time_ax, rss_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for retriever in ("popularity", "sasrec"):
        points = [(s["events"], r) for s in record["sizes"] for r in s["runs"] if r["retriever"] == retriever]
        if points:
            x = [p[0] for p in points]
            time_ax.plot(x, [p[1]["wall_s"] for p in points], "o-", label=retriever)
            rss_ax.plot(x, [p[1]["peak_rss_mb"] for p in points], "o-", label=retriever)
    for ax, label in ((time_ax, "wall seconds"), (rss_ax, "peak RSS (MB)")):
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_xlabel("events"), ax.set_ylabel(label), ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def write(record: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_child":
        return child(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, nargs="*", default=[], help="log sizes (events) to run")
    parser.add_argument("--preset", choices=sorted(PRESETS), nargs="*", default=[], help="whole dataset shapes to run")
    parser.add_argument("--exponent", type=float, default=1.0, help="item popularity power-law exponent")
    parser.add_argument("--retrievers", nargs="+", default=["popularity", "sasrec"])
    parser.add_argument("--loss-items", type=int, default=0, help="catalogue size of the loss-memory rows (0: none)")
    parser.add_argument("--loss-rows", type=int, default=128 * 100, help="positions in that training step")
    parser.add_argument("--loss-rounds", type=int, default=0, help="interleaved timing rounds of the three "
                        "losses in one process (0: none)")
    parser.add_argument("--retrieval-users", type=int, default=0, help="users of the retrieval timing (0: none)")
    parser.add_argument("--retrieval-baseline", metavar="REV", help="also time retrieval with the kit's "
                        "padding/masking/top-k of this git revision")
    parser.add_argument("--preprocess-events", type=int, nargs="*", default=[],
                        help="log sizes (events) to preprocess alone")
    parser.add_argument("--engines", nargs="+", default=["duckdb", "memory"], choices=["duckdb", "memory"])
    parser.add_argument("--memory-limit", default="4GB", help="DuckDB's memory limit (dataset.memory_limit)")
    parser.add_argument("--memory-engine-max", type=int, default=20_000_000,
                        help="largest log preprocessed with engine=memory as well")
    parser.add_argument("--set", nargs="*", default=[], metavar="OVERRIDE",
                        help="further palr-run overrides of every pipeline run, e.g. dataset.engine=duckdb")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    record = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "tree": commit, "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "threads": args.threads, "loadavg_before": [round(x, 2) for x in os.getloadavg()], "sizes": []}
    shapes = [shape_for(e) for e in args.events] + [PRESETS[p] for p in args.preset]
    for users, items, events in shapes:
        with tempfile.TemporaryDirectory(prefix="palr_scale_") as tmp:
            log = Path(tmp) / "log.parquet"
            start = time.perf_counter()
            generate(log, users, items, events, args.exponent)
            size = {"users": users, "items": items, "events": events, "exponent": args.exponent,
                    "generate_s": round(time.perf_counter() - start, 1), "parquet_mb": round(log.stat().st_size / 2**20),
                    "runs": []}
            for retriever in args.retrievers:
                size["runs"].append(run_pipeline(log, retriever, args.threads, Path(tmp), args.set))
                print(f"{events:,} events, {retriever}: {size['runs'][-1]['wall_s']} s, "
                      f"{size['runs'][-1]['peak_rss_mb']} MB", flush=True)
            record["sizes"].append(size)
            write(record, args.out)  # what is done so far survives an interrupted run
    if args.preprocess_events:
        preprocessing(args.preprocess_events, args.engines, args.memory_limit, args.memory_engine_max, args.threads,
                      record, args.out, args.exponent)
    if args.loss_items:
        record["loss"] = [in_fresh_process("loss_step", args.loss_items, kind, args.loss_rows)
                          for kind in ("full", "checkpoint", "chunked")]
    if args.loss_items and args.loss_rounds:
        record["loss_timing"] = in_fresh_process("loss_timing", args.loss_items, args.loss_rows, args.loss_rounds,
                                                 args.threads)
    if args.retrieval_users:
        revisions = ([args.retrieval_baseline] if args.retrieval_baseline else []) + [None]
        record["retrieval"] = [in_fresh_process("retrieval", args.retrieval_users, args.threads, rev)
                               for rev in revisions]
    record["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    write(record, args.out)
    print(table(record))
    print(f"load average before {record['loadavg_before']}, after {record['loadavg_after']}; wrote {args.out}")
    if record["sizes"] and plot(record, args.out.with_suffix(".png")):
        print(f"plot: {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
