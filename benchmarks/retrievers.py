"""Train palr's retrievers on real data and print HR@10/NDCG@10 beside the PALR paper's Table 2.

Usage (one dataset x model per process keeps the peak-memory figure per run)::

    nice python benchmarks/retrievers.py --dataset ml-100k --model sasrec popularity
    nice python benchmarks/retrievers.py --dataset ml-1m --model sasrec --set max_epochs=60

Full catalogue, leave-one-out, 5-core; every test user is ranked over every item with the user's
history masked. Appends one record per run to ``benchmarks/results/retrievers.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import yaml
from lightning.pytorch.callbacks import Callback

from palr_core import RunContext, TrainerConfig, TrainingData, metrics_from_ranks, rank_from_lists
from palr_core.config import default_cache_dir
from palr_core.pipeline import prepare_data, seed_stage
from palr_core.plugins import load_registry

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results" / "retrievers.json"

#: registered dataset name and params per benchmark dataset
DATASETS = {
    "ml-100k": ("movielens", {"variant": "ml-100k", "root": str(DATA / "ml-100k")}),
    "ml-1m": ("movielens", {"variant": "ml-1m", "root": str(DATA / "ml-1m")}),
    "beauty": ("amazon", {"category": "Beauty", "root": str(DATA / "amazon-beauty")}),
}
#: PALR paper, Table 2 (HR@10, NDCG@10)
PAPER = {
    ("ml-1m", "sasrec"): (0.1978, 0.1192),
    ("beauty", "sasrec"): (0.0617, 0.0283),
}


#: RecBole 1.2.1 SASRec's validation NDCG@10 on ML-100K after its first epoch (828 s on 2 CPU cores)
RECBOLE_FIRST_EPOCH_NDCG = 0.0459


class ValidationClock(Callback):
    """Wall-clock seconds at each validation, with the NDCG@10 and HR@10 reached.

    Time runs from ``start`` (set it just before ``fit`` to count palr's set-up too), else from the
    start of training. ``curve`` holds ``(seconds, NDCG@10, HR@10, process CPU seconds)`` per
    validation; CPU seconds (all threads) are less sensitive than wall clock to other jobs' load.
    """

    def __init__(self, verbose: bool = False, prefix: str = "") -> None:
        self.curve: list[tuple[float, float, float, float]] = []
        self.start: float | None = None
        self.cpu_start = time.process_time()
        self.verbose = verbose
        self.prefix = prefix

    def start_now(self) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_start(self, trainer, module) -> None:
        if self.start is None:
            self.start_now()

    def on_validation_end(self, trainer, module) -> None:
        metrics = trainer.callback_metrics
        if "val/NDCG@10" in metrics and not trainer.sanity_checking:
            row = (round(time.perf_counter() - self.start, 1), float(metrics["val/NDCG@10"]),
                   float(metrics.get("val/HR@10", float("nan"))), round(time.process_time() - self.cpu_start, 1))
            self.curve.append(row)
            if self.verbose:
                print(f"{self.prefix}epoch {trainer.current_epoch + 1}: {row[0]} s ({row[3]} CPU s), val NDCG@10 "
                      f"{row[1]:.4f} HR@10 {row[2]:.4f}", flush=True)

    def first_at(self, threshold: float) -> tuple[float, float, float, float] | None:
        """The first validation with NDCG@10 >= ``threshold``."""
        return next((row for row in self.curve if row[1] >= threshold), None)

    def seconds_to(self, threshold: float) -> float | None:
        row = self.first_at(threshold)
        return row[0] if row else None


def load_split(name: str, cache_dir: Path | None = None):
    """The benchmark dataset, preprocessed (5-core) and split as ``palr-run`` does."""
    registry = load_registry()
    kind, params = DATASETS[name]
    context = RunContext(seed=42, work_dir=Path(tempfile.mkdtemp()), cache_dir=cache_dir or default_cache_dir())
    return prepare_data(registry.build("dataset", kind, params), context, k_core=5)


def parse_overrides(overrides: list[str]) -> dict:
    """``key=value`` pairs (values YAML-typed) over the model's config dataclass defaults."""
    params = {}
    for item in overrides:
        key, _, value = item.partition("=")
        params[key] = yaml.safe_load(value)
    return params


def run(dataset: str, model: str, overrides: list[str], work_dir: Path,
        max_time: str | None = None) -> dict:
    data, split = load_split(dataset)
    registry = load_registry()
    retriever = registry.build("retriever", model, parse_overrides(overrides))
    trainer = TrainerConfig(accelerator="cpu", enable_progress_bar=False, max_time=max_time)
    context = RunContext(seed=42, work_dir=work_dir, cache_dir=work_dir / "cache", trainer=trainer,
                         catalog=data.catalog)
    clock = ValidationClock(verbose=True)
    seed_stage(context.seed, "fit_retriever")
    started = time.perf_counter()
    fit_kwargs = {"callbacks": [clock]} if model != "popularity" else {}
    retriever.fit(TrainingData(split.train, split.valid, data.catalog), context, **fit_kwargs)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    ids, _ = retriever.retrieve(split.histories("test"), 10)
    eval_s = time.perf_counter() - started
    metrics = metrics_from_ranks(rank_from_lists(ids, split.test), (10,))
    summary = getattr(retriever, "fit_summary", {})
    return {"dataset": dataset, "model": model, "overrides": overrides, **data.stats.as_dict(),
            "HR@10": metrics["HR@10"], "NDCG@10": metrics["NDCG@10"],
            "fit_s": round(fit_s, 1), "eval_all_users_s": round(eval_s, 2),
            "epochs": summary.get("epochs"), "stopped_by": summary.get("stopped_by"),
            "best_val_ndcg10": summary.get("best_val_ndcg10"),
            "val_ndcg10_curve": clock.curve,
            f"s_to_val_ndcg10_{RECBOLE_FIRST_EPOCH_NDCG}": clock.seconds_to(RECBOLE_FIRST_EPOCH_NDCG),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "paper": PAPER.get((dataset, model))}


def table(records: list[dict]) -> str:
    lines = ["| dataset | model | HR@10 | NDCG@10 | paper HR@10 | paper NDCG@10 | epochs (stopped by) | fit s "
             "| s to val NDCG@10 0.0459 | eval all users s | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        paper = r["paper"] or ("", "")
        lines.append(f"| {r['dataset']} | {r['model']} | {r['HR@10']:.4f} | {r['NDCG@10']:.4f} | "
                     f"{paper[0]} | {paper[1]} | {r['epochs']} ({r.get('stopped_by')}) | {r['fit_s']} | "
                     f"{r[f's_to_val_ndcg10_{RECBOLE_FIRST_EPOCH_NDCG}']} | {r['eval_all_users_s']} | {r['peak_rss_mb']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--model", nargs="+", default=["popularity", "sasrec"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override an option of the model's config dataclass, e.g. max_epochs=50")
    parser.add_argument("--max-time", metavar="DD:HH:MM:SS",
                        help="cap each model's training time; the best checkpoint so far is tested")
    args = parser.parse_args()
    records = []
    for model in args.model:
        with tempfile.TemporaryDirectory() as tmp:
            overrides = args.set if model != "popularity" else []
            records.append(run(args.dataset, model, overrides, Path(tmp), args.max_time))
        print(table(records[-1:]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps(previous + records, indent=2))
    print(table(records))


if __name__ == "__main__":
    main()
