"""Start-up time of palr's quick commands beside ``import lightning``: ``palr-run --help`` and a config
error should not import the training stack; ``palr plugins`` imports every plugin's class to check it.

Each command runs in a fresh process, alternating with the others so that they share the machine's
load, ``--repeats`` times; the table gives the median wall-clock seconds and whether the command
imported torch. ``--baseline-ref REV`` also times ``palr plugins`` of an earlier commit, checked out
into a temporary folder and put first on ``PYTHONPATH``, in the same rounds. Writes
``benchmarks/results/startup.json``.

    python benchmarks/startup.py --repeats 5 --baseline-ref b64071f
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: label -> Python code run with ``python -c`` (a palr command, then a check of what it imported)
COMMANDS = {
    "palr plugins": "from palr_core.cli import main; main(['plugins'])",
    "palr-run --help": "import sys; sys.argv = ['palr-run', '--help']\nfrom palr_core.cli import run\ntry: run()\n"
                       "except SystemExit: pass",
    "palr-run retriever.layer=2 (a config error)": "import sys; sys.argv = ['palr-run', 'retriever.layer=2']\n"
                                                    "from palr_core.cli import run\ntry: run()\nexcept SystemExit: pass",
    "python -c 'import lightning'": "import lightning",
}
PROBE = "\nimport sys as _s; print('TORCH' if 'torch' in _s.modules else 'NO-TORCH', file=_s.stderr)"


def time_once(code: str, cwd: str, pythonpath: str | None = None) -> tuple[float, bool]:
    env = {**os.environ, "PALR_CACHE_DIR": str(Path(cwd) / "cache")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code + PROBE], cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{code!r} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start, "NO-TORCH" not in proc.stderr


def checkout(ref: str, folder: Path) -> str:
    """``ref``'s tree in ``folder``; returns the PYTHONPATH that makes its palr_core and plugins win."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    folder.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    plugins = sorted(str(p) for p in (folder / "plugins").iterdir() if p.is_dir())
    return os.pathsep.join([str(folder), str(folder / "plugins"), *plugins])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-ref", help="also time `palr plugins` of this commit (e.g. b64071f)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {label: [] for label in COMMANDS}
    torch: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as cwd:
        commands = {label: (code, None) for label, code in COMMANDS.items()}
        if args.baseline_ref:
            path = checkout(args.baseline_ref, Path(cwd) / "baseline")
            commands[f"palr plugins at {args.baseline_ref}"] = (COMMANDS["palr plugins"], path)
            times[f"palr plugins at {args.baseline_ref}"] = []
        for _ in range(args.repeats):
            for label, (code, pythonpath) in commands.items():
                seconds, torch[label] = time_once(code, cwd, pythonpath)
                times[label].append(seconds)
    rows = [{"command": label, "median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
             "imports_torch": torch[label]} for label, t in times.items()]
    print("| command | median s | min s | imports torch |\n|---|---:|---:|---|")
    for r in rows:
        print(f"| `{r['command']}` | {r['median_s']} | {r['min_s']} | {'yes' if r['imports_torch'] else 'no'} |")
    meta = {"repeats": args.repeats, "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nload average before / after: {load_before} / {meta['load_average_after']}; written to {args.out}")


if __name__ == "__main__":
    main()
