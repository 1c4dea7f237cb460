"""Two choices inside palr's CPU kernels, timed on SmolLM2-135M's shapes: the block attention's
query block (``palr.plugins.llama_lora.kernels.QUERY_BLOCK``) and dropout masks applied by multiplying
with 0/1 in the input's dtype instead of a boolean ``where``.

One torch thread, bf16, a micro-batch of 2 examples of ``--length`` tokens (9 query heads, 3
key/value heads, head size 64, hidden size 576). Each variant runs forward and backward (the
attention) or once (the masks) ``--repeat`` times per round, the variants alternating over
``--rounds`` rounds; the table gives each one's median milliseconds. transformers' SDPA
attention is timed beside the blocks for reference.

    python benchmarks/llm_ops.py    # ~1 min on one core

Prints a table and writes ``benchmarks/results/llm_ops.json`` (with the 1-minute load average
before and after).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_cost import REPO, run_meta, write_results  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "llm_ops.json"
HEADS, KV_HEADS, HEAD_DIM, HIDDEN = 9, 3, 64, 576


def attention_step(block: int | None, length: int):
    """One forward and backward of causal attention over a fresh micro-batch: palr's block
    attention with ``block`` queries per block, or SDPA (``None``)."""
    from palr.plugins.llama_lora import kernels

    query = torch.randn(2, HEADS, length, HEAD_DIM, dtype=torch.bfloat16, requires_grad=True)
    key = torch.randn(2, KV_HEADS, length, HEAD_DIM, dtype=torch.bfloat16, requires_grad=True)
    value = torch.randn(2, KV_HEADS, length, HEAD_DIM, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(2, length, HEADS, HEAD_DIM, dtype=torch.bfloat16)

    def run():
        if block is None:
            repeat = HEADS // KV_HEADS
            out = torch.nn.functional.scaled_dot_product_attention(
                query, key.repeat_interleave(repeat, 1), value.repeat_interleave(repeat, 1), is_causal=True)
            out.transpose(1, 2).backward(grad)
        else:
            kernels.QUERY_BLOCK = block
            kernels.BlockAttention.apply(query, key, value, None, HEAD_DIM**-0.5).backward(grad)

    return run


def mask_step(kind: str, length: int):
    """A dropout mask applied to a micro-batch's hidden states: ``mul`` (0/1 in bf16) or ``where``
    (boolean)."""
    hidden = torch.randn(2, length, HIDDEN, dtype=torch.bfloat16)
    keep = torch.rand(2, length, HIDDEN) > 0.05
    ones = keep.to(torch.bfloat16)
    zero = torch.zeros((), dtype=torch.bfloat16)
    if kind == "mul":
        return lambda: hidden * ones
    return lambda: torch.where(keep, hidden, zero)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, default=610, help="tokens per example (the profile's micro-batches: 610)")
    p.add_argument("--blocks", type=int, nargs="+", default=[64, 96, 128, 160, 208, 256])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeat", type=int, default=20, help="runs per variant and round")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    variants = {**{f"attention, block {b}": attention_step(b, args.length) for b in args.blocks},
                "attention, SDPA": attention_step(None, args.length),
                "dropout mask, mul": mask_step("mul", args.length),
                "dropout mask, where": mask_step("where", args.length)}
    for run in variants.values():  # first calls: kernels compiled, memory mapped
        run()
    times = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            for _ in range(args.repeat):
                run()
            times[name].append((time.perf_counter() - start) / args.repeat * 1e3)
    rows = [{"variant": name, "median_ms": round(statistics.median(ms), 3), "ms_per_round": [round(m, 3) for m in ms]}
            for name, ms in times.items()]
    meta = run_meta(load_start, threads=1, length=args.length, micro_batch=2, dtype="bfloat16")
    print(f"\none torch thread, bf16, 2 x {args.length} tokens; load {meta['load_average_1min']}")
    print("| variant | median ms | per round |")
    print("|---|---:|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['median_ms']} | {', '.join(str(m) for m in r['ms_per_round'])} |")
    write_results(args.out, meta, rows)


if __name__ == "__main__":
    main()
