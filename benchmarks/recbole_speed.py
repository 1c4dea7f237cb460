"""Side by side on ML-100K: RecBole 1.2.1 SASRec's first epoch against palr's SASRec, same architecture.

Usage::

    nice python benchmarks/recbole_speed.py                          # install RecBole if needed, run both
    nice python benchmarks/recbole_speed.py --skip-recbole-install   # reuse the RecBole venv as it is
    nice python benchmarks/recbole_speed.py --palr-only --target-ndcg 0.0459

Both sides: SASRec with CE loss over the full catalogue, maxlen 200, hidden 64, 2 blocks, 2 heads,
FFN 256, batch 256, Adam lr 0.001, ML-100K ``u.data``, 5-core (iterative on both sides),
leave-one-out by timestamp, validation NDCG@10/HR@10 over every item with the history masked.
Each side keeps its own default dropout (RecBole's SASRec 0.5 on hidden states and 0.5 on
attention weights, palr's 0.2 on hidden states) and its own way of building training rows
(RecBole: one row per prefix of every training sequence; palr: one row per user, next-item loss
at every position).

RecBole needs numpy<2, so it runs in its own virtual environment (default
``~/.cache/palr/bench/recbole-venv``), in a subprocess that runs this same file with
``--recbole-worker`` (that mode imports nothing from palr). RecBole's training time is the wall
clock of its ``Trainer._train_epoch`` calls, not counting its data preparation; palr's is the
wall clock from the ``fit`` call (module, loaders and Trainer construction included) to the end of
the first validation at or above RecBole's measured validation NDCG@10, validations included.
Writes ``benchmarks/results/recbole_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results" / "recbole_speed.json"
BENCH_CACHE = Path.home() / ".cache" / "palr" / "bench"

RECBOLE_VERSION = "1.2.1"
#: not "ml-100k": for that name RecBole reads the copy bundled in its package, not ``data_path``
RECBOLE_DATASET = "ml100k-udata"
#: the CPU wheel these machines resolve locally; an unpinned torch pulls GBs of CUDA wheels
TORCH_PIN = "torch==2.13.0"
#: the packages RecBole's venv needs (RecBole 1.2.1 uses numpy APIs removed in numpy 2)
RECBOLE_REQUIREMENTS = [TORCH_PIN, f"recbole=={RECBOLE_VERSION}", "numpy<2"]
#: the imports the worker uses (not recbole.quick_start: it imports ray, which needs pkg_resources)
RECBOLE_IMPORT_CHECK = ("import recbole; from recbole.config import Config; "
                        "from recbole.data import create_dataset, data_preparation; "
                        "from recbole.trainer import Trainer; "
                        "from recbole.model.sequential_recommender import SASRec; "
                        "import numpy, torch; print(recbole.__version__, numpy.__version__, torch.__version__)")

#: the shared architecture, as palr's ``conf/retriever/sasrec.yaml`` keys
ARCH = {"maxlen": 200, "hidden": 64, "blocks": 2, "heads": 2, "batch_size": 256, "loss": "ce", "lr": 0.001}
#: the same architecture as RecBole config keys (the rest are RecBole's SASRec defaults)
RECBOLE_CONFIG = {
    "MAX_ITEM_LIST_LENGTH": ARCH["maxlen"], "hidden_size": ARCH["hidden"], "inner_size": 4 * ARCH["hidden"],
    "n_layers": ARCH["blocks"], "n_heads": ARCH["heads"], "train_batch_size": ARCH["batch_size"],
    "loss_type": "CE", "learning_rate": ARCH["lr"], "train_neg_sample_args": None,
    "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
    "user_inter_num_interval": "[5,inf)", "item_inter_num_interval": "[5,inf)",
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["Hit", "NDCG"], "topk": [10], "valid_metric": "NDCG@10", "metric_decimal_place": 6,
    "eval_batch_size": 4096, "use_gpu": False, "show_progress": False, "seed": 42, "reproducibility": True,
}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_average()[0]:.2f}] {message}", flush=True)


# -- RecBole's virtual environment ---------------------------------------------------------------
def _run_step(what: str, command: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise SystemExit(f"{what} failed (exit {code}); last lines of {log}:\n{tail}")


def recbole_versions(python: Path) -> str | None:
    """``"<recbole> <numpy> <torch>"`` when the venv imports what the worker needs, else None."""
    if not python.is_file():
        return None
    done = subprocess.run([str(python), "-c", RECBOLE_IMPORT_CHECK], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_recbole_venv(venv: Path, install: bool) -> Path:
    """The venv's python, creating the venv and installing RecBole into it when needed."""
    python = venv / "bin" / "python"
    versions = recbole_versions(python)
    if versions:
        say(f"RecBole venv {venv}: recbole/numpy/torch {versions}")
        return python
    if not install:
        raise SystemExit(f"no working RecBole {RECBOLE_VERSION} in {venv} (checked: {RECBOLE_IMPORT_CHECK!r}); "
                         f"run without --skip-recbole-install to create it")
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / "recbole-venv-install.log"
    log.write_text("")
    if not python.is_file():
        say(f"creating a virtual environment for RecBole at {venv} (log: {log})")
        _run_step("creating the RecBole venv", [sys.executable, "-m", "venv", str(venv)], log)
    constraints = venv / "palr-constraints.txt"
    constraints.write_text(f"{TORCH_PIN}\nnumpy<2\n")
    say(f"pip install {' '.join(RECBOLE_REQUIREMENTS)} into it (a few minutes; log: {log})")
    _run_step("pip install of RecBole", [str(python), "-m", "pip", "install", "-c", str(constraints),
                                         *RECBOLE_REQUIREMENTS], log)
    versions = recbole_versions(python)
    if not versions:
        check = subprocess.run([str(python), "-c", RECBOLE_IMPORT_CHECK], capture_output=True, text=True)
        raise SystemExit(f"RecBole installed into {venv} but does not import:\n{check.stderr[-3000:]}")
    say(f"RecBole venv ready: recbole/numpy/torch {versions}")
    return python


def write_atomic_files(u_data: Path, data_dir: Path) -> Path:
    """ML-100K ``u.data`` as RecBole's ``<data_dir>/<RECBOLE_DATASET>/<RECBOLE_DATASET>.inter``."""
    if not u_data.is_file():
        raise SystemExit(f"{u_data} not found (ML-100K's official u.data)")
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for row in u_data.read_text().splitlines():
        if row.strip():
            lines.append("\t".join(row.split()[:4]))
    target = data_dir / RECBOLE_DATASET / f"{RECBOLE_DATASET}.inter"
    text = "\n".join(lines) + "\n"
    if not target.is_file() or target.read_text() != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return target


def run_recbole(python: Path, data_dir: Path, work_dir: Path, epochs: int) -> dict:
    """RecBole's SASRec for ``epochs`` epochs in a subprocess; its per-epoch times and metrics."""
    work_dir.mkdir(parents=True, exist_ok=True)
    config = {**RECBOLE_CONFIG, "data_path": str(data_dir), "epochs": epochs,
              "checkpoint_dir": str(work_dir / "saved")}
    config_file, out_file = work_dir / "config.json", work_dir / "result.json"
    config_file.write_text(json.dumps(config, indent=2))
    out_file.unlink(missing_ok=True)
    command = [str(python), str(Path(__file__).resolve()), "--recbole-worker", str(config_file), str(out_file)]
    say(f"RecBole {RECBOLE_VERSION} SASRec, {epochs} epoch(s), in {work_dir}")
    code = subprocess.run(command, cwd=work_dir).returncode
    if code or not out_file.is_file():
        raise SystemExit(f"the RecBole run failed (exit {code}); its log is under {work_dir / 'log'}")
    return json.loads(out_file.read_text())


def recbole_worker(config_file: Path, out_file: Path) -> None:
    """Runs inside RecBole's venv: data preparation, then per epoch a timed train pass and validation."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    settings = json.loads(config_file.read_text())
    epochs = settings["epochs"]
    config = Config(model="SASRec", dataset=RECBOLE_DATASET, config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    started = time.perf_counter()
    dataset = create_dataset(config)
    filtered = {"users": dataset.user_num - 1, "items": dataset.item_num - 1, "interactions": dataset.inter_num}
    train_data, valid_data, _ = data_preparation(config, dataset)
    prep_s = time.perf_counter() - started
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    batches = len(train_data)
    stats = {**filtered, "training_rows": len(train_data.dataset), "batches_per_epoch": batches,
             "torch_threads": torch.get_num_threads(), "data_preparation_s": round(prep_s, 1)}
    say(f"[recbole] data ready in {prep_s:.1f} s: {json.dumps(stats)}")

    progress = {"batch": 0, "epoch": 0, "start": 0.0}
    original_loss = model.calculate_loss

    def counted_loss(interaction):  # progress every ~5% of an epoch
        progress["batch"] += 1
        done = progress["batch"]
        if done == 1 or done % max(1, batches // 20) == 0:
            elapsed = time.perf_counter() - progress["start"]
            eta = elapsed / max(done - 1, 1) * (batches - done + 1) if done > 1 else float("nan")
            say(f"[recbole] epoch {progress['epoch'] + 1}: batch {done}/{batches}, {elapsed:.0f} s, "
                f"~{eta:.0f} s to go")
        return original_loss(interaction)

    model.calculate_loss = counted_loss
    history = []
    for epoch in range(epochs):
        progress.update(batch=0, epoch=epoch, start=time.perf_counter())
        started, cpu = time.perf_counter(), time.process_time()
        loss = trainer._train_epoch(train_data, epoch)
        train_s, train_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        load_after_train = load_average()
        started = time.perf_counter()
        _, result = trainer._valid_epoch(valid_data)
        valid_s = time.perf_counter() - started
        history.append({"epoch": epoch + 1, "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu_s, 1),
                        "valid_s": round(valid_s, 1),
                        "loss": float(loss), "val_NDCG@10": float(result["ndcg@10"]),
                        "val_HR@10": float(result["hit@10"]), "load_average_after_train": load_after_train})
        say(f"[recbole] epoch {epoch + 1}: trained in {train_s:.1f} s ({train_cpu_s:.0f} CPU s), validated in {valid_s:.1f} s, "
            f"val NDCG@10 {result['ndcg@10']:.4f} HR@10 {result['hit@10']:.4f}")
    out_file.write_text(json.dumps({"stats": stats, "epochs": history}, indent=2))


# -- palr ------------------------------------------------------------------------------------------
def run_palr(target_ndcg: float, overrides: list[str], max_epochs: int | None) -> dict:
    """palr's SASRec at :data:`ARCH` (plus ``overrides``) to early stopping, timed against ``target_ndcg``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from retrievers import ValidationClock, load_split, parse_overrides

    from palr_core import RunContext, TrainerConfig, TrainingData, metrics_from_ranks, rank_from_lists
    from palr_core.plugins import load_registry

    data, split = load_split("ml-100k")
    say(f"[palr] ML-100K after 5-core: {data.stats.as_dict()}")
    arch = [f"{k}={v}" for k, v in ARCH.items()]
    capped = [f"max_epochs={max_epochs}"] if max_epochs else []
    params = parse_overrides(arch + capped + overrides)
    retriever = load_registry().build("retriever", "sasrec", params)
    clock = ValidationClock(verbose=True, prefix="[palr] ")
    with tempfile.TemporaryDirectory() as tmp:
        context = RunContext(seed=42, work_dir=Path(tmp), cache_dir=Path(tmp) / "cache",
                             trainer=TrainerConfig(accelerator="cpu", enable_progress_bar=False),
                             catalog=data.catalog)
        load_before = load_average()
        clock.start_now()
        started = time.perf_counter()
        retriever.fit(TrainingData(split.train, split.valid, data.catalog), context, callbacks=[clock])
        fit_s = time.perf_counter() - started
        load_after = load_average()
    ids, _ = retriever.retrieve(split.histories("test"), 10)
    test = metrics_from_ranks(rank_from_lists(ids, split.test), (10,))
    reached = clock.first_at(target_ndcg)
    summary = retriever.fit_summary
    best = max(clock.curve, key=lambda row: row[1]) if clock.curve else None
    return {"params": params, "dataset": data.stats.as_dict(), "target_val_NDCG@10": target_ndcg,
            "s_to_target": reached[0] if reached else None, "cpu_s_to_target": reached[3] if reached else None,
            "epoch_at_target": clock.curve.index(reached) + 1 if reached else None,
            "val_at_target": {"NDCG@10": reached[1], "HR@10": reached[2]} if reached else None,
            "converged_fit_s": round(fit_s, 1), "epochs": summary.get("epochs"),
            "stopped_by": summary.get("stopped_by"),
            "best_val": {"NDCG@10": best[1], "HR@10": best[2]} if best else None,
            "test": {"HR@10": test["HR@10"], "NDCG@10": test["NDCG@10"]},
            "val_curve_s_ndcg_hr": clock.curve, "load_average_before": load_before,
            "load_average_after": load_after}


def table(result: dict) -> str:
    recbole, palr = result.get("recbole"), result["palr"]
    first = recbole["epochs"][0] if recbole else None
    rows = ["| measure | value |", "|---|---:|"]
    if first:
        rows += [f"| RecBole {RECBOLE_VERSION} SASRec epoch 1 training s | {first['train_s']} |",
                 f"| RecBole val NDCG@10 / HR@10 after epoch 1 | {first['val_NDCG@10']:.4f} / {first['val_HR@10']:.4f} |",
                 f"| RecBole training rows (prefixes) / batches | {recbole['stats']['training_rows']} / "
                 f"{recbole['stats']['batches_per_epoch']} |",
                 f"| load average after RecBole's epoch 1 (1/5/15 min) | {first['load_average_after_train']} |"]
        rows += [f"| RecBole epoch {e['epoch']} training s, val NDCG@10 / HR@10 | {e['train_s']}, "
                 f"{e['val_NDCG@10']:.4f} / {e['val_HR@10']:.4f} |" for e in recbole["epochs"][1:]]
    at = palr["val_at_target"]
    reached = (f"{palr['s_to_target']} (epoch {palr['epoch_at_target']}, val NDCG@10 {at['NDCG@10']:.4f} "
               f"HR@10 {at['HR@10']:.4f})") if at else "not reached"
    rows.append(f"| palr SASRec s to val NDCG@10 ≥ {palr['target_val_NDCG@10']:.4f} | {reached} |")
    if first and palr["s_to_target"]:
        rows += [f"| ratio: RecBole epoch 1 s / palr s to the same NDCG@10 | "
                 f"**{first['train_s'] / palr['s_to_target']:.1f}×** |",
                 f"| same in process CPU seconds: RecBole {first['train_cpu_s']} / palr {palr['cpu_s_to_target']} | "
                 f"{first['train_cpu_s'] / palr['cpu_s_to_target']:.1f}× |"]
    best, test = palr["best_val"], palr["test"]
    rows += [f"| palr SASRec whole fit s (epochs, stopped by) | {palr['converged_fit_s']} ({palr['epochs']}, "
             f"{palr['stopped_by']}) |",
             f"| palr best val NDCG@10 / HR@10 | {best['NDCG@10']:.4f} / {best['HR@10']:.4f} |",
             f"| palr test NDCG@10 / HR@10 | {test['NDCG@10']:.4f} / {test['HR@10']:.4f} |",
             f"| load average before / after palr's fit | {palr['load_average_before']} / "
             f"{palr['load_average_after']} |"]
    if first:
        rows.append(f"| palr converged fit s / RecBole epoch 1 s | {palr['converged_fit_s'] / first['train_s']:.2f} |")
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--recbole-worker":
        recbole_worker(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=BENCH_CACHE / "recbole-venv",
                        help="RecBole's virtual environment (created if missing)")
    parser.add_argument("--work-dir", type=Path, default=BENCH_CACHE / "recbole-work",
                        help="RecBole's atomic files, config, logs")
    parser.add_argument("--skip-recbole-install", action="store_true",
                        help="use the venv as it is; fail if RecBole does not import there")
    parser.add_argument("--recbole-epochs", type=int, default=1)
    parser.add_argument("--palr-only", action="store_true", help="skip RecBole; compare with --target-ndcg")
    parser.add_argument("--target-ndcg", type=float, default=None,
                        help="validation NDCG@10 palr must reach (default: RecBole's measured epoch-1 value)")
    parser.add_argument("--palr-max-epochs", type=int, default=None, help="cap palr's epochs (default: yaml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override a palr SASRec key on top of the shared architecture")
    args = parser.parse_args()
    if args.palr_only and args.target_ndcg is None:
        parser.error("--palr-only needs --target-ndcg (RecBole's validation NDCG@10 to reach)")

    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu_count": os.cpu_count(),
                    "load_average_start": load_average(), "recbole": None}
    if not args.palr_only:
        python = ensure_recbole_venv(args.venv, install=not args.skip_recbole_install)
        data_dir = args.work_dir / "data"
        write_atomic_files(DATA / "ml-100k" / "u.data", data_dir)
        result["recbole"] = run_recbole(python, data_dir, args.work_dir, args.recbole_epochs)
        result["recbole"]["config"] = RECBOLE_CONFIG
    target = args.target_ndcg if args.target_ndcg is not None else result["recbole"]["epochs"][0]["val_NDCG@10"]
    say(f"palr SASRec {ARCH} {args.set}: timing to val NDCG@10 >= {target:.4f}, then to early stopping")
    result["palr"] = run_palr(target, args.set, args.palr_max_epochs)
    result["load_average_end"] = load_average()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
