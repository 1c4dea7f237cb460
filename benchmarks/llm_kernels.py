"""Hand-written CPU kernels beside the library paths they would replace, side by side in one
process: which kernel earns its place.

palr 0.2's ``llama_lora`` ranker shipped such kernels (``plugins/llama_lora/kernels.py``); this
benchmark showed none beating the library by 10 % and palr 0.3 removed them. ``--kernels FILE``
loads a kernels module from a file to time it again (``git show 7587822:plugins/llama_lora/kernels.py
> /tmp/kernels.py``, or a candidate of your own with the same function names); without it only the
library paths are timed.

SmolLM2-135M's shapes (hidden 576, 9 query heads sharing 3 key/value heads of 64, a micro-batch of
2 examples of ``--length`` tokens), in bf16 and float32. Each op's paths alternate within every
round (``--rounds``, each path run ``repeat`` times per round, ``repeat`` sized to about
``--target`` seconds by a first timing); a row gives the median over rounds of the milliseconds per
forward and backward (ranking rows: forward only, under ``no_grad``), and its ratio to the fastest
library path of its op and dtype (below 1: faster than every library path).

- ``attention (training)``: palr's block-causal attention; transformers' SDPA function
  (``is_causal``); FlexAttention with a causal block mask, compiled; transformers' eager attention,
  compiled.
- ``attention (ranking)``: the same forward only, on the ``score`` decoder's packed mask (a prompt,
  then candidate blocks that each see the prompt and themselves), which SDPA and the eager
  attention read as a float mask and FlexAttention as a block mask that skips fully masked blocks.
- ``dropout``: LoRA's input dropout (p = 0.05): ``BulkDropout``; ``torch.nn.functional.dropout``;
  the same compiled.
- ``lora projection``: an adapted q_proj (bf16 or float32 base, peft's float32 rank-8 adapter,
  dropout 0.05): palr's fused forward; peft's own ``Linear.forward``; the same compiled.
- ``rms norm``: a frozen ``LlamaRMSNorm`` of hidden states: palr's ``RMSNorm``; transformers'; the
  same compiled.
- ``ranking logits``: the ``score`` decoder's log-likelihood of 20 candidate blocks of 12 tokens
  after each of 2 prompts (49,152-word LM head): the head over every position (what
  ``model(...).logits`` computes by default); the head at the read positions only, as
  ``decoding.packed_block_scores`` does; the head at the positions ``logits_to_keep`` (an index
  tensor) keeps, as ``LlamaForCausalLM.forward`` slices them.
- ``training step`` (``--step-layers`` layers of SmolLM2 from a random init in the dtype the
  ranker's ``dtype: auto`` picks on this CPU, LoRA as the ranker sets it): ``answer_loss``, backward and AdamW inside ``cpu_training_kernels`` and outside
  it (SDPA).

A compiled path that fails (no compiler, an inductor limitation) keeps its error text in its row.

    python benchmarks/llm_kernels.py --kernels /tmp/kernels.py          # ~8 min on two loaded cores
    python benchmarks/llm_kernels.py --kernels /tmp/kernels.py --quick  # ~3 min

Prints a markdown table and writes ``benchmarks/results/llm_kernels.json`` (the CPU model, torch
version, ``git describe --always --dirty`` and the 1-minute load average before and after).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "llm_kernels.json"
HEADS, KV_HEADS, HEAD_DIM, HIDDEN, VOCAB = 9, 3, 64, 576, 49152
DROPOUT = 0.05
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


#: the kernels module's file (``--kernels``); None: time the library paths only
KERNELS_FILE: Path | None = None


@functools.cache
def _kernels():
    """The module ``--kernels`` names (it may need torch, transformers and peft), or an empty
    namespace: each op then times its library paths only."""
    if KERNELS_FILE is None:
        import types

        return types.SimpleNamespace()
    import importlib.util

    spec = importlib.util.spec_from_file_location("palr_cpu_kernels", KERNELS_FILE)
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)
    return kernels


def _module(training: bool = True) -> torch.nn.Module:
    """What transformers' attention functions read from the attention module."""
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups = True, HEADS // KV_HEADS
    return module.train(training)


def _compiled(fn):
    """``torch.compile(fn)``, its failure held until called (the row records it)."""
    return torch.compile(fn, dynamic=False)


def _attention_inputs(length: int, dtype: torch.dtype, grad: bool):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, HEADS, length, HEAD_DIM, generator=g).to(dtype).requires_grad_(grad)
    k = torch.randn(2, KV_HEADS, length, HEAD_DIM, generator=g).to(dtype).requires_grad_(grad)
    v = torch.randn(2, KV_HEADS, length, HEAD_DIM, generator=g).to(dtype).requires_grad_(grad)
    out_grad = torch.randn(2, length, HEADS, HEAD_DIM, generator=g).to(dtype)
    return q, k, v, out_grad


def _packed_mask(length: int, prompt: int, blocks: int, block: int) -> torch.Tensor:
    """``decoding.packed_block_scores``'s boolean mask for one row: the prompt causal, each candidate
    block the prompt and itself (causal), padding rows the first token."""
    allowed = torch.zeros(length, length, dtype=torch.bool)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed[:prompt, :prompt] = causal[:prompt, :prompt]
    for b in range(blocks):
        start = prompt + b * block
        allowed[start:start + block, :prompt] = True
        allowed[start:start + block, start:start + block] = causal[:block, :block]
    allowed[prompt + blocks * block:, 0] = True
    return allowed


def attention_training(length: int, dtype: torch.dtype) -> dict:
    kernels = _kernels()
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    q, k, v, out_grad = _attention_inputs(length, dtype, True)
    module, scale = _module(), HEAD_DIM**-0.5
    causal = torch.full((length, length), torch.finfo(dtype).min, dtype=dtype).triu(1)[None, None]

    def backward(fn):
        def run():
            fn().backward(out_grad)
            q.grad = k.grad = v.grad = None
        return run

    paths = {("library", "sdpa"): backward(lambda: sdpa_attention_forward(module, q, k, v, None, scaling=scale)[0])}
    if hasattr(kernels, "block_causal_attention"):
        paths[("palr", "block-causal")] = backward(
            lambda: kernels.block_causal_attention(module, q, k, v, None, scaling=scale)[0])
    eager = _compiled(lambda q, k, v: eager_attention_forward(module, q, k, v, causal, scaling=scale)[0])
    paths[("library", "compiled eager")] = backward(lambda: eager(q, k, v))

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = create_block_mask(lambda b, h, i, j: i >= j, None, None, length, length, device="cpu")
    flex = _compiled(flex_attention)
    paths[("library", "compiled flex")] = backward(
        lambda: flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True).transpose(1, 2))
    return paths


def attention_ranking(length: int, dtype: torch.dtype) -> dict:
    kernels = _kernels()
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.llama.modeling_llama import eager_attention_forward

    q, k, v, _ = _attention_inputs(length, dtype, False)
    module, scale = _module(False), HEAD_DIM**-0.5
    blocks, block = 20, 12
    allowed = _packed_mask(length, length - blocks * block, blocks, block)
    mask = torch.zeros(length, length, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    mask = mask[None, None].expand(2, 1, length, length)

    def forward(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    paths = {("library", "sdpa"): forward(lambda: sdpa_attention_forward(module, q, k, v, mask, scaling=scale))}
    if hasattr(kernels, "block_causal_attention"):
        paths[("palr", "block-causal")] = forward(
            lambda: kernels.block_causal_attention(module, q, k, v, mask, scaling=scale))
    eager = _compiled(lambda q, k, v: eager_attention_forward(module, q, k, v, mask, scaling=scale)[0])
    paths[("library", "compiled eager")] = forward(lambda: eager(q, k, v))

    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = create_block_mask(lambda b, h, i, j: allowed[i, j], None, None, length, length, device="cpu")
    flex = _compiled(flex_attention)
    paths[("library", "compiled flex")] = forward(
        lambda: flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True))
    return paths


def _hidden(length: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, length, HIDDEN, generator=g).to(dtype).requires_grad_(True)
    return x, torch.randn(2, length, HIDDEN, generator=g).to(dtype)


def _backward(fn, x, out_grad, params=()):
    def run():
        fn(x).backward(out_grad)
        x.grad = None
        for p in params:
            p.grad = None
    return run


def dropout(length: int, dtype: torch.dtype) -> dict:
    kernels = _kernels()

    x, out_grad = _hidden(length, dtype)
    drop = lambda h: torch.nn.functional.dropout(h, DROPOUT, training=True)  # noqa: E731
    paths = {("library", "torch dropout"): _backward(drop, x, out_grad),
             ("library", "compiled dropout"): _backward(_compiled(drop), x, out_grad)}
    if hasattr(kernels, "BulkDropout"):
        paths[("palr", "BulkDropout")] = _backward(kernels.BulkDropout(DROPOUT).train(), x, out_grad)
    return paths


def lora_projection(length: int, dtype: torch.dtype) -> dict:
    kernels = _kernels()
    from peft import LoraConfig, get_peft_model

    class Projection(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = torch.nn.Linear(HIDDEN, HIDDEN, bias=False)

        def forward(self, x):
            return self.q_proj(x)

    torch.manual_seed(0)
    model = get_peft_model(Projection().to(dtype),
                           LoraConfig(r=8, lora_alpha=16, lora_dropout=DROPOUT, target_modules=["q_proj"])).train()
    layer = model.base_model.model.q_proj
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.02)
    params = [p for p in layer.parameters() if p.requires_grad]
    x, out_grad = _hidden(length, dtype)
    peft_forward = lambda h: type(layer).forward(layer, h)  # noqa: E731
    paths = {("library", "peft"): _backward(peft_forward, x, out_grad, params),
             ("library", "compiled peft"): _backward(_compiled(peft_forward), x, out_grad, params)}
    if hasattr(kernels, "fused_lora_forward"):
        paths[("palr", "LoraDelta")] = _backward(lambda h: kernels.fused_lora_forward(layer, h), x, out_grad, params)
    return paths


def rms_norm(length: int, dtype: torch.dtype) -> dict:
    kernels = _kernels()
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(HIDDEN, eps=1e-5).requires_grad_(False)
    norm.weight.copy_(torch.rand(HIDDEN, generator=torch.Generator().manual_seed(2)) + 0.5)
    norm.to(dtype)
    x, out_grad = _hidden(length, dtype)
    paths = {("library", "LlamaRMSNorm"): _backward(norm, x, out_grad),
             ("library", "compiled LlamaRMSNorm"): _backward(_compiled(norm), x, out_grad)}
    if hasattr(kernels, "fused_rms_norm_forward"):
        paths[("palr", "RMSNorm")] = _backward(lambda h: kernels.fused_rms_norm_forward(norm, h), x, out_grad)
    return paths


def ranking_logits(length: int, dtype: torch.dtype) -> dict:
    """Log-likelihood of each candidate block's tokens from the body's last hidden states."""
    g = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False).to(dtype).requires_grad_(False)
    hidden = torch.randn(2, length, HIDDEN, generator=g).to(dtype)
    blocks, block = 20, 12
    prompt = length - blocks * block
    ids = torch.randint(0, VOCAB, (2, length), generator=g)
    read = torch.tensor([p for b in range(blocks)  # the position predicting each block token
                         for p in [prompt - 1, *range(prompt + b * block, prompt + (b + 1) * block - 1)]])
    wanted = ids[:, prompt:, None]  # (2, blocks * block, 1): the block tokens, both rows alike
    keep, where = read.unique(return_inverse=True)  # logits_to_keep: each read position once
    chunk = 256  # decoding.READ_CHUNK

    def full():  # model(...).logits: every position
        return head(hidden)[:, read].float().log_softmax(-1).gather(-1, wanted)

    def today():  # decoding.packed_block_scores: the head at the read positions, a chunk at a time
        rows, goals = hidden[:, read].reshape(-1, HIDDEN), wanted.reshape(-1, 1)
        return torch.cat([head(rows[s:s + chunk]).float().log_softmax(-1).gather(1, goals[s:s + chunk])
                          for s in range(0, len(rows), chunk)])

    def to_keep():  # LlamaForCausalLM.forward(logits_to_keep=keep): lm_head(hidden_states[:, keep, :])
        return head(hidden[:, keep, :])[:, where].float().log_softmax(-1).gather(-1, wanted)

    def forward(fn):
        def run():
            with torch.no_grad():
                fn()
        return run

    return {("palr", "read positions (today)"): forward(today), ("library", "full head"): forward(full),
            ("library", "logits_to_keep"): forward(to_keep)}


def training_step(length: int, layers: int) -> dict:
    """One optimizer step of a SmolLM2-shaped LLaMA (random init, bf16 base, LoRA as the ranker
    sets it) on 2 examples: inside ``cpu_training_kernels`` and outside it."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cpu_training_kernels = getattr(_kernels(), "cpu_training_kernels", None)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=1536, num_hidden_layers=layers,
                         num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, rms_norm_eps=1e-5,
                         rope_theta=100000.0, tie_word_embeddings=True, max_position_embeddings=2048)
    base = LlamaForCausalLM(config).to(step_dtype())
    base.set_attn_implementation("sdpa")
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=DROPOUT, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      task_type="CAUSAL_LM")  # the ranker's LoraSettings
    model = get_peft_model(base, lora).train()
    ids = torch.randint(100, 40000, (2, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :length - 60] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(kernels: bool):
        def run():
            with cpu_training_kernels(model) if kernels else _nothing():
                _answer_loss(model, ids, mask, labels).backward()
            optimizer.step()
            optimizer.zero_grad()
        return run

    paths = {("library", "sdpa, peft, transformers"): step(False)}
    if cpu_training_kernels is not None:
        paths[("palr", "cpu_training_kernels")] = step(True)
    return paths


def step_dtype() -> torch.dtype:
    """What the ranker's ``dtype: auto`` gives a frozen base on this CPU: bf16 with bf16
    instructions (``avx512_bf16``/``amx_bf16``), else float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    return torch.bfloat16 if "avx512_bf16" in flags or "amx_bf16" in flags else torch.float32


def _answer_loss(model, ids, mask, labels):
    """``training.answer_loss``: cross-entropy with the LM head at the answer positions only."""
    base = model.get_base_model()
    hidden = base.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    read = targets != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][read]).float()
    return torch.nn.functional.cross_entropy(logits, targets[read])


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _first_call(run) -> tuple[float | None, str | None]:
    """Seconds of a second call after a first (compilation, allocation), or the error."""
    try:
        run()
        start = time.perf_counter()
        run()
        return time.perf_counter() - start, None
    except Exception as error:  # noqa: BLE001  (a compiled path that cannot run here: recorded)
        text = f"{type(error).__name__}: {error}".strip()
        return None, text.splitlines()[0][:300]


def measure(op: str, dtype: str, paths: dict, rounds: int, target: float) -> list[dict]:
    """Each path's median ms per call over ``rounds`` rounds, the paths alternating in each."""
    rows, runs = {}, {}
    for (kind, path), run in paths.items():
        seconds, error = _first_call(run)
        rows[path] = {"op": op, "dtype": dtype, "path": path, "kind": kind}
        if error:
            rows[path]["error"] = error
            print(f"  {op} {dtype} {path}: {error}", flush=True)
        else:
            runs[path] = (run, max(1, round(target / max(seconds, 1e-6))))
    times = {path: [] for path in runs}
    for _ in range(rounds):
        for path, (run, repeat) in runs.items():
            start = time.perf_counter()
            for _ in range(repeat):
                run()
            times[path].append((time.perf_counter() - start) / repeat * 1e3)
    for path, ms in times.items():
        rows[path].update(ms=round(statistics.median(ms), 3), repeat=runs[path][1],
                          spread=round((max(ms) - min(ms)) / statistics.median(ms), 2))
    library = [r["ms"] for r in rows.values() if r["kind"] == "library" and "ms" in r]
    for r in rows.values():
        if "ms" in r and library:
            r["vs_library"] = round(r["ms"] / min(library), 2)
    return list(rows.values())


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "?"
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "commit": commit or "?"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (pinned)")
    p.add_argument("--length", type=int, default=610, help="tokens per example")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target", type=float, default=0.25, help="seconds per path and round")
    p.add_argument("--step-layers", type=int, default=4, help="layers of the training-step model; 0: no step")
    p.add_argument("--quick", action="store_true", help="3 rounds of about 0.08 s, a 2-layer step")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--kernels", type=Path, help="a kernels module's file to time beside the library paths")
    args = p.parse_args()
    global KERNELS_FILE
    if args.kernels is not None and not args.kernels.is_file():
        p.error(f"--kernels: {args.kernels} is not a file")
    KERNELS_FILE = args.kernels
    if args.quick:
        args.rounds, args.target, args.step_layers = 3, 0.08, min(args.step_layers, 2)
    torch.set_num_threads(args.threads)
    load = [os.getloadavg()]
    started = time.perf_counter()
    ops = {"attention (training)": attention_training, "attention (ranking)": attention_ranking,
           "dropout": dropout, "lora projection": lora_projection, "rms norm": rms_norm,
           "ranking logits": ranking_logits}
    rows = []
    for op, build in ops.items():
        for dtype, torch_dtype in DTYPES.items():
            print(f"{op}, {dtype}", flush=True)
            rows += measure(op, dtype, build(args.length, torch_dtype), args.rounds, args.target)
            torch._dynamo.reset()  # each op's compiled graphs stand alone
    if args.step_layers:
        print(f"training step, {args.step_layers} layers", flush=True)
        dtype = {v: k for k, v in DTYPES.items()}[step_dtype()]
        rows += measure(f"training step ({args.step_layers} layers)", dtype, training_step(args.length, args.step_layers),
                        args.rounds, args.target)
    load.append(os.getloadavg())
    meta = {"command": " ".join(["llm_kernels.py", *sys.argv[1:]]), **machine(), "threads": args.threads,
            "length": args.length, "micro_batch": 2, "rounds": args.rounds,
            "load_average": [[round(x, 2) for x in avg] for avg in load], "seconds": round(time.perf_counter() - started),
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    print(f"\n{meta['cpu']}, {args.threads} threads, 2 x {args.length} tokens, {args.rounds} rounds; "
          f"load (1, 5, 15 min) {meta['load_average'][0]} -> {meta['load_average'][1]}")
    print(table(rows))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")


def table(rows: list[dict]) -> str:
    lines = ["| op | dtype | path | ms | vs fastest library path |", "|---|---|---|---:|---:|"]
    for r in rows:
        name = f"**{r['path']}**" if r["kind"] == "palr" else r["path"]
        if "error" in r:
            lines.append(f"| {r['op']} | {r['dtype']} | {name} | failed: {r['error'][:90]} | |")
        else:
            lines.append(f"| {r['op']} | {r['dtype']} | {name} | {r['ms']} | {r.get('vs_library', '')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
