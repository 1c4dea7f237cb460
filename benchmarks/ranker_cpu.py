"""Throughput of the llama_lora ranker: training tokens/s and ranking users/s for both decoders.

CPU (default): the tiny LLaMA on ML-100K (``--data ml-100k``, from ../shared/data) or the
synthetic data, popularity candidates. ``--gpu``: a LLaMA-7B-shaped model with random weights
in bf16 — LoRA training step time, tokens/s, model FLOPs utilisation and peak memory, and ranking
latency for 50 candidates per user with both decoders. Prints a table and writes
``benchmarks/results/ranker_{cpu,gpu}.json``.

    nice python benchmarks/ranker_cpu.py --data ml-100k --users 40
    python benchmarks/ranker_cpu.py --gpu          # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from palr_core import RankRequest, RunContext, TrainerConfig, TrainingData
from palr_core.config import default_cache_dir
from palr_core.pipeline import prepare_data
from palr_core.plugins import load_registry

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_data(name: str, registry):
    """Preprocessed sequences of ``ml-100k`` (shared data) or ``synthetic``."""
    if name == "ml-100k":
        dataset = registry.build("dataset", "movielens", {"variant": "ml-100k", "root": str(SHARED / "ml-100k"),
                                                          "progress": False})
    else:
        dataset = registry.build("dataset", "synthetic", {})
    context = RunContext(seed=0, work_dir=Path("/tmp"), cache_dir=default_cache_dir())
    return prepare_data(dataset, context, k_core=5)


def requests_for(registry, training, split, context, users: int, k: int = 50) -> list[RankRequest]:
    retriever = registry.build("retriever", "popularity", {})
    retriever.fit(training, context)
    histories = split.histories("test")[:users]
    ids, _ = retriever.retrieve(histories, k)
    return [RankRequest(user=u, history=h, candidates=c) for u, (h, c) in enumerate(zip(histories, ids))]


def cpu_benchmark(args) -> list[dict]:
    registry = load_registry()
    data, split = load_data(args.data, registry)
    training = TrainingData(split.train, split.valid, data.catalog)
    work = Path(args.work_dir)
    context = RunContext(seed=0, work_dir=work / f"run{time.time_ns()}", cache_dir=work / "cache",
                         trainer=TrainerConfig(accelerator="cpu", enable_progress_bar=False), catalog=data.catalog)
    ranker = registry.build("ranker", "llama_lora", {"epochs": 1, "instructions": {"user_fraction": args.fraction}})
    start = time.perf_counter()
    ranker.fit(training, context)
    fit_s = time.perf_counter() - start
    rows = [{"what": f"training (tiny LLaMA, {ranker.fit_state['examples']} examples, 1 epoch)",
             "seconds": round(fit_s, 2), "rate": round(ranker.fit_state["tokens"] / fit_s, 1), "unit": "tokens/s"}]
    requests = requests_for(registry, training, split, context, args.users)
    for decoder in ("score", "generate"):
        ranker.config.decoder = decoder
        start = time.perf_counter()
        ranker.rank(requests, context)
        seconds = time.perf_counter() - start
        rows.append({"what": f"ranking, {decoder} decoder ({len(requests)} users x 50 candidates)",
                     "seconds": round(seconds, 2), "rate": round(len(requests) / seconds, 3), "unit": "users/s"})
    meta = {"data": args.data, "users": data.stats.users, "items": data.stats.items,
            "threads": torch.get_num_threads()}
    return _report("ranker_cpu", rows, meta)


def gpu_benchmark(args) -> list[dict]:
    """LLaMA-7B shape, random bf16 weights, LoRA r=8 on q/k/v/o; never run without a CUDA GPU."""
    from palr.plugins.llama_lora.config import LoraSettings
    from palr.plugins.llama_lora.decoding import ItemCoder, generate_rankings, score_rankings
    from palr.plugins.llama_lora.model import train_tokenizer, wrap_lora
    from palr.plugins.llama_lora.prompts import build_prompt, default_templates
    from transformers import LlamaConfig, LlamaForCausalLM

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA GPU (none visible)")
    registry = load_registry()
    data, split = load_data(args.data, registry)
    catalog = data.catalog
    tokenizer = train_tokenizer([catalog.render(i) for i in range(len(catalog))], 32000)
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model = wrap_lora(model, LoraSettings(), train_base=False)
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    batch, length = args.gpu_batch, args.gpu_length
    ids = torch.randint(10, len(tokenizer), (batch, length), device="cuda")
    times = []
    torch.cuda.reset_peak_memory_stats()
    for step in range(args.gpu_steps + 2):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= 2:  # warm-up steps excluded
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times))
    tokens_s = batch * length / step_s
    peak = _peak_flops()
    rows = [{"what": f"LoRA training step (batch {batch} x {length} tokens, bf16, grad ckpt)",
             "seconds": round(step_s, 4), "rate": round(tokens_s, 1), "unit": "tokens/s"},
            {"what": "model FLOPs utilisation (6 N tokens / s / peak bf16)", "seconds": None,
             "rate": round(6 * n_params * tokens_s / peak, 4) if peak else None, "unit": "MFU"},
            {"what": "peak GPU memory, training", "seconds": None,
             "rate": round(torch.cuda.max_memory_allocated() / 2**30, 2), "unit": "GiB"}]
    model.eval()
    training = TrainingData(split.train, split.valid, catalog)
    context = RunContext(seed=0, work_dir=Path(args.work_dir), cache_dir=Path(args.work_dir),
                         trainer=TrainerConfig(), catalog=catalog)
    requests = requests_for(registry, training, split, context, args.users)
    coder = ItemCoder(tokenizer, catalog)
    prompts = [coder.prompt(build_prompt(default_templates(), "retrieval", catalog, r.history[-20:],
                                         r.candidates, n=10), 2048) for r in requests]
    for decoder in ("score", "generate"):
        torch.cuda.synchronize()
        start = time.perf_counter()
        if decoder == "score":
            for prompt, request in zip(prompts, requests):
                score_rankings(model, coder, prompt, request.candidates)
        else:
            for k in range(0, len(requests), 8):
                generate_rankings(model, coder, prompts[k:k + 8], [r.candidates for r in requests[k:k + 8]], 10)
        torch.cuda.synchronize()
        per_user = (time.perf_counter() - start) / len(requests)
        rows.append({"what": f"ranking latency, {decoder} decoder (50 candidates)", "seconds": round(per_user, 4),
                     "rate": round(1 / per_user, 3), "unit": "users/s"})
    meta = {"device": torch.cuda.get_device_name(), "params": n_params, "peak_bf16_flops": peak}
    return _report("ranker_gpu", rows, meta)


def _peak_flops() -> float | None:
    """Dense bf16 peak of known GPUs (vendor datasheets, without sparsity)."""
    name = torch.cuda.get_device_name()
    for key, flops in {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}.items():
        if key in name:
            return flops
    return None


def _report(name: str, rows: list[dict], meta: dict) -> list[dict]:
    print(f"\n{name}: {json.dumps(meta)}")
    print("| measurement | seconds | rate | unit |\n|---|---:|---:|---|")
    for row in rows:
        print(f"| {row['what']} | {row['seconds']} | {row['rate']} | {row['unit']} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=["ml-100k", "synthetic"], default="ml-100k")
    parser.add_argument("--users", type=int, default=40, help="users ranked per decoder")
    parser.add_argument("--fraction", type=float, default=0.1, help="share of users fine-tuned on")
    parser.add_argument("--work-dir", default="/tmp/palr-bench")
    parser.add_argument("--gpu", action="store_true", help="the LLaMA-7B-shaped GPU benchmark")
    parser.add_argument("--gpu-batch", type=int, default=4)
    parser.add_argument("--gpu-length", type=int, default=1024)
    parser.add_argument("--gpu-steps", type=int, default=10)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.data == "ml-100k" and not (SHARED / "ml-100k").is_dir():
        args.data = "synthetic"
    gpu_benchmark(args) if args.gpu else cpu_benchmark(args)


if __name__ == "__main__":
    main()
