"""How often a two-process gloo DDP run aborts at exit, with and without palr's exit grace.

A gloo worker thread drops each finished collective after its caller moved on, and dropping it
takes the GIL; a process that reaches interpreter finalization first aborts ("terminate called
without an active exception"). ``palr_core.kit.training`` makes a process that trained in a gloo
group sleep ``GLOO_EXIT_GRACE_S`` at exit. This runs ``--runs`` pairs of two-process
``torch.multiprocessing.spawn`` jobs (gloo, a small DDP model, a few steps, rank 0 a little
slower to finish, as in a ``ddp_spawn`` fit where rank 0 saves the weights), alternating without
and with the grace so both see the same load, and counts the jobs that died by a signal. Prints a
table and writes ``benchmarks/results/gloo_exit.json`` with the load average before and after and
Fisher's exact test.

    python benchmarks/gloo_exit.py --runs 100     # ~30 min on 2 cores beside a one-thread palr-run
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "gloo_exit.json"


def job(rank: int, port: int, grace: bool) -> None:
    import torch
    import torch.distributed as dist

    from palr_core.kit.training import _gloo_exit_grace  # what palr registers, not a copy of it

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    if grace:
        atexit.register(_gloo_exit_grace)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(64, 64),
                                                                          torch.nn.Linear(64, 1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(32, 64)).sum().backward()
        optimizer.step()
    if rank == 0:
        time.sleep(0.05)


def main() -> None:
    import scipy.stats
    import torch.multiprocessing as mp

    from palr_core.kit.training import GLOO_EXIT_GRACE_S

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200, help="jobs of each kind")
    p.add_argument("--port", type=int, default=36000, help="first of the TCP ports used (one per job)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    load_start = os.getloadavg()[0]
    started = time.perf_counter()
    died = {False: [], True: []}
    for i in range(args.runs):
        for grace in (False, True):
            try:
                mp.spawn(job, args=(args.port + 2 * (i % 500) + grace, grace), nprocs=2)
            except mp.ProcessExitedException as e:
                died[grace].append({"run": i, "process": e.error_index, "signal": e.signal_name})
                print(f"run {i} {'with' if grace else 'without'} grace: process {e.error_index} "
                      f"died by {e.signal_name}", flush=True)
    table = [[len(died[g]), args.runs - len(died[g])] for g in (False, True)]
    _, p_value = scipy.stats.fisher_exact(table, alternative="greater")
    rows = [{"grace_s": None, "runs": args.runs, "died": len(died[False]), "deaths": died[False]},
            {"grace_s": GLOO_EXIT_GRACE_S, "runs": args.runs, "died": len(died[True]), "deaths": died[True]}]
    meta = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "cores": os.cpu_count(),
            "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            "minutes": round((time.perf_counter() - started) / 60, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
            "fisher_exact_p_fewer_with_grace": float(f"{p_value:.3g}")}
    print(f"\nload {meta['load_average_1min']}; {meta['minutes']} min")
    print("| exit | jobs | died by a signal |\n|---|---:|---:|")
    for row in rows:
        print(f"| {'sleep ' + str(row['grace_s']) + ' s' if row['grace_s'] else 'at once'} | {row['runs']} "
              f"| {row['died']} |")
    print(f"Fisher's exact test, fewer deaths with the grace: p = {meta['fisher_exact_p_fewer_with_grace']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
