"""One LoRA training step of SmolLM2-135M under each cost lever, on random tokens: which lever buys what.

Every lever runs in its own process (its own peak resident memory) with the same batch of random
token ids (``--batch`` examples of ``--prompt`` prompt tokens and ``--answer`` answer tokens), one
warm-up step, then ``--steps`` timed steps of forward, backward and AdamW on the LoRA weights:

- ``full``: transformers' own loss (logits for the whole vocabulary at every position), float32
  (palr's training step before the LM head moved to the answer positions);
- ``answer``: the LM head on answer positions only (``palr.plugins.llama_lora.training.answer_loss``);
- ``answer-bf16``: the same with the frozen base in bf16 (palr's default on CPUs with bf16);
- ``answer-autocast``: float32 weights under ``torch.autocast("cpu", bfloat16)`` instead;
- ``answer-bf16-nodropout``: ``answer-bf16`` with ``ranker.lora.dropout=0`` (peft then draws no
  dropout mask on each adapted projection's input);
- ``answer-bf16-eager``: ``answer-bf16`` with transformers' eager attention (batched matrix
  multiplications and a softmax) instead of torch's fused ``scaled_dot_product_attention``;
- ``answer-bf16-eager-nodropout``: both of the last two.

    python benchmarks/llm_levers.py --threads 1                 # ~15 min on one core
    python benchmarks/llm_levers.py --threads 1 --batch 2 --levers answer-bf16 full
    python benchmarks/llm_levers.py --threads 1 --batch 2 --levers answer-bf16 answer-bf16-nodropout \
        --steps 4 --out benchmarks/results/llm_levers_dropout.json    # ~4 min on one core

Prints a table and writes ``benchmarks/results/llm_levers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEVERS = ("full", "answer", "answer-bf16", "answer-autocast", "answer-bf16-nodropout", "answer-bf16-eager",
          "answer-bf16-eager-nodropout")


def lever_step(lever: str, batch: int, prompt: int, answer: int):
    """SmolLM2-135M with a fresh LoRA adapter set up as ``lever`` says, on ``batch`` random examples
    of ``prompt`` + ``answer`` tokens: one training step (forward, backward, AdamW; returns the
    loss)."""
    import torch
    from palr.plugins.llama_lora.config import LoraSettings
    from palr.plugins.llama_lora.model import wrap_lora
    from palr.plugins.llama_lora.training import answer_loss

    from palr_core.config import default_cache_dir
    from palr_core.kit.llm import load_causal_lm
    from palr_core.plugins import load_registry

    dtype = "bfloat16" if lever.startswith("answer-bf16") else "float32"
    model, _ = load_causal_lm("smollm2-135m", default_cache_dir(), dtype, models=load_registry().language_models)
    if "eager" in lever:
        model.set_attn_implementation("eager")
    model = wrap_lora(model, LoraSettings(dropout=0.0) if lever.endswith("nodropout") else LoraSettings(), False)
    model.train()
    ids = torch.randint(100, 40000, (batch, prompt + answer), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :prompt] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> float:
        if lever == "full":
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=lever == "answer-autocast"):
                loss = answer_loss(model, ids, mask, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    return step


def step_rate(lever: str, threads: int, batch: int, prompt: int, answer: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    step = lever_step(lever, batch, prompt, answer)
    step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    seconds = (time.perf_counter() - start) / steps
    return {"lever": lever, "threads": threads, "batch": batch, "tokens_per_step": batch * (prompt + answer),
            "step_s": round(seconds, 2), "tokens_per_s": round(batch * (prompt + answer) / seconds, 1),
            "loss": round(loss, 4), "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, nargs="+", default=[8, 2], help="examples per step (each size is a row)")
    p.add_argument("--prompt", type=int, default=550)
    p.add_argument("--answer", type=int, default=60)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "llm_levers.json"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(step_rate(**json.loads(args.worker))))
        return
    load = [round(os.getloadavg()[0], 2)]
    rows = []
    for batch in args.batch:
        for lever in args.levers:
            spec = {"lever": lever, "threads": args.threads, "batch": batch, "prompt": args.prompt,
                    "answer": args.answer, "steps": args.steps}
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, check=True,
                                 capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    load.append(round(os.getloadavg()[0], 2))
    print("\n| lever | batch | tokens/s | step s | peak RSS GB | loss |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['lever']} | {r['batch']} | {r['tokens_per_s']} | {r['step_s']} | {r['peak_rss_gb']} | {r['loss']} |")
    meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "load_average_1min": load,
            "date": time.strftime("%Y-%m-%d %H:%M")}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
