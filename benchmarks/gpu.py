"""palr on a GPU machine: SASRec on MovieLens 1M to early stopping, SmolLM2-135M LoRA fine-tuning
and ranking, and SASRec data-parallel over every visible GPU, each as the ``palr-run`` a user
would type, in one run.

Per stage it prints and records the wall time, the stage timings and peak memory palr writes into
``metrics.json``, and the test metrics; for the LLM, fine-tuning tokens per second with its model
FLOPs utilisation (``4 x parameters x tokens/s`` over the device's dense bf16 peak: LoRA computes
no weight gradient for the frozen base, attention FLOPs left out) and ranked users per second.

    python benchmarks/gpu.py                     # needs a CUDA GPU and ../shared/data; ~15 min on one H100-class GPU
    python benchmarks/gpu.py --only sasrec ddp   # a subset of the stages; needs a CUDA GPU
    python benchmarks/gpu.py --dry               # the same stages on the CPU at toy size; ~2 min on 2 CPU cores

``--dry`` runs every stage on the CPU with the embedded synthetic data, the tiny LLaMA and two
gloo processes for DDP: what the tests run, to keep the GPU script working without a GPU. To keep
it short, its SASRec and LLM stages run in this process (``palr.run``, what ``palr-run`` runs),
sparing two processes' imports; the DDP stage is ``palr-run``'s own processes, as on a GPU.
Writes ``benchmarks/results/gpu.json`` (``gpu_dry.json`` with ``--dry``): the device, torch
version, load average before and after, and one record per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PALR_SHARED_DATA", REPO.parent / "shared" / "data"))
RESULTS = REPO / "benchmarks" / "results"
#: dense bf16 peak TFLOP/s by device name (the vendors' data sheets, without sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0}
#: SmolLM2-135M's parameters (its GGUF, as transformers loads it)
SMOLLM2_PARAMETERS = 134_515_008


def stages(dry: bool) -> dict[str, list[str]]:
    """Each stage's ``palr-run`` arguments: the real ones, or their toy CPU version (``dry``)."""
    if dry:
        toy = ["dataset=synthetic", "dataset.users=150", "eval.max_users=30", "trainer.enable_progress_bar=false"]
        return {
            "sasrec": [*toy, "retriever=sasrec", "retriever.max_epochs=2", "ranker=identity", "profile=none"],
            "llm": [*toy, "retriever=popularity", "profile=none", "ranker=llama_lora", "ranker.epochs=1",
                    "ranker.tiny.hidden_size=32", "ranker.tiny.layers=1", "ranker.retriever_weight=0",
                    "ranker.instructions.user_fraction=0.3", "eval.candidates=20"],
            "ddp": [*toy, "retriever=sasrec", "retriever.max_epochs=2", "ranker=identity", "profile=none",
                    "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"],
        }
    ml1m = ["dataset=ml-1m", f"dataset.root={DATA / 'ml-1m'}", "trainer=gpu", "trainer.enable_progress_bar=false"]
    return {
        "sasrec": [*ml1m, "retriever=sasrec", "ranker=identity", "profile=none"],
        "llm": ["dataset=ml-100k", f"dataset.root={DATA / 'ml-100k'}", "trainer=gpu",
                "trainer.enable_progress_bar=false", "retriever=sasrec", "profile=keywords", "ranker=llama_lora",
                "ranker.model=smollm2-135m", "ranker.retriever_weight=0", "eval.max_users=500"],
        "ddp": [*ml1m, "retriever=sasrec", "ranker=identity", "profile=none", "trainer=ddp"],
    }


def device() -> dict:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = next((tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)
        return {"device": name, "count": torch.cuda.device_count(), "peak_bf16_tflops": peak}
    return {"device": "cpu", "count": os.cpu_count(), "peak_bf16_tflops": None}


def run_stage(name: str, args: list[str], folder: Path, peak_tflops: float | None, in_process: bool = False) -> dict:
    """One ``palr-run`` in its own folder and process; what its ``metrics.json`` says, summarised.

    ``in_process``: ``palr.run`` (what ``palr-run`` runs) in this process instead, sparing a new
    process's imports (most of a toy stage's time on a CPU); not for ``trainer=ddp``."""
    started = time.perf_counter()
    if in_process:
        import traceback

        import palr

        try:
            palr.run(args, run_dir=folder / name)
        except (Exception, SystemExit) as exc:  # recorded as a failed stage, as a failed process is
            tail = traceback.format_exception_only(exc)[-1].strip()
            return {"stage": name, "args": args, "failed": tail, "wall_s": round(time.perf_counter() - started, 1)}
    else:
        # the palr-run script itself: Lightning's ddp strategy starts its other processes by running
        # the same command line again, which ``python -c`` cannot give it
        command = shutil.which("palr-run") or str(Path(sys.executable).with_name("palr-run"))
        proc = subprocess.run([command, *args, f"hydra.run.dir={folder / name}"], cwd=folder, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            return {"stage": name, "args": args, "failed": " / ".join(tail),
                    "wall_s": round(time.perf_counter() - started, 1)}
    wall = time.perf_counter() - started
    metrics = json.loads((folder / name / "metrics.json").read_text())
    timings = metrics["timings_s"]
    record = {"stage": name, "args": args, "wall_s": round(wall, 1), "timings_s": timings,
              "peak_memory_gb": metrics.get("peak_memory_gb"), "training": metrics.get("training", {}),
              "rows": {row["model"]: {k: row[k] for k in ("HR@10", "NDCG@10")} for row in metrics["rows"]},
              "users": metrics.get("users_evaluated")}
    ranker = metrics.get("training", {}).get("ranker") or {}
    if ranker.get("tokens") and timings.get("fit_ranker"):
        tokens_per_s = ranker["tokens"] * max(1, ranker.get("epochs", 1)) / timings["fit_ranker"]
        record["fine_tuning_tokens_per_s"] = round(tokens_per_s, 1)
        if peak_tflops and "smollm2" in " ".join(args):
            record["mfu"] = round(4 * SMOLLM2_PARAMETERS * tokens_per_s / (peak_tflops * 1e12), 4)
    if timings.get("rank") and metrics.get("users_evaluated"):
        record["ranked_users_per_s"] = round(metrics["users_evaluated"] / timings["rank"], 2)
    return record


def table(records: list[dict]) -> str:
    lines = ["| stage | wall s | train s | HR@10 | NDCG@10 | tokens/s | MFU | users/s | peak GB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        if "failed" in r:
            lines.append(f"| {r['stage']} | {r['wall_s']} | failed: {r['failed']} |  |  |  |  |  |  |")
            continue
        last = list(r["rows"].values())[-1]
        train = r["timings_s"].get("fit_retriever", 0) + r["timings_s"].get("fit_ranker", 0)
        peak = max((r["peak_memory_gb"] or {}).values(), default=0)
        lines.append(f"| {r['stage']} | {r['wall_s']} | {train:.1f} | {last['HR@10']:.4f} | {last['NDCG@10']:.4f} | "
                     f"{r.get('fine_tuning_tokens_per_s', '')} | {r.get('mfu', '')} | "
                     f"{r.get('ranked_users_per_s', '')} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true", help="toy sizes on the CPU (what the tests run)")
    parser.add_argument("--only", nargs="+", choices=("sasrec", "llm", "ddp"), help="run these stages only")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, if not in the table")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/gpu.json (gpu_dry.json with --dry)")
    args = parser.parse_args(argv)
    import torch

    if not args.dry and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: run on a GPU machine, or add --dry for the CPU check")
    info = device()
    peak = args.peak_tflops or info["peak_bf16_tflops"]
    chosen = {k: v for k, v in stages(args.dry).items() if not args.only or k in args.only}
    load = [os.getloadavg()]
    records = []
    with tempfile.TemporaryDirectory(prefix="palr-gpu-") as folder:
        for name, stage_args in chosen.items():
            print(f"{name}: palr-run {' '.join(stage_args)}", flush=True)
            # --dry: the stages but DDP (whose processes rerun the palr-run command) in this process
            in_process = args.dry and name != "ddp"
            records.append(run_stage(name, stage_args, Path(folder), peak, in_process))
    load.append(os.getloadavg())
    meta = {"command": " ".join(["gpu.py", *(argv if argv is not None else sys.argv[1:])]), **info,
            "torch": torch.__version__, "load_average": [[round(x, 2) for x in avg] for avg in load],
            "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    print(f"\n{info['device']} x {info['count']}, torch {torch.__version__}, load {meta['load_average']}")
    print(table(records))
    out = args.out or RESULTS / ("gpu_dry.json" if args.dry else "gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "stages": records}, indent=1) + "\n")
    return 1 if any("failed" in r for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
