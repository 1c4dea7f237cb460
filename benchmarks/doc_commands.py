"""Time the commands the README and docs/ give with a time mark (``# ~N s``), as written.

A page's command says how long it takes unless a test runs it (``# tested``) or it needs something
this machine may not have (``# needs ...``); ``tests/test_doc_commands.py`` enforces that rule, and
this script is where the time marks come from. Each selected command runs as written from the
repository root (where the docs' relative paths such as ``../shared/data`` resolve), one after the
other, with a fresh parsed-data cache; what they make in the root (``outputs/``, ``palr-mine/``) is
removed afterwards. The table gives the measured wall-clock time beside the page's mark, with the
load average before each command. Writes ``benchmarks/results/doc_commands.json``.

    python benchmarks/doc_commands.py                      # every timed command without `needs`
    python benchmarks/doc_commands.py --match lightgcn     # only commands containing a substring
    python benchmarks/doc_commands.py --page ranker.md     # only one page's commands
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.test_doc_commands import PAGES, _code, commands  # noqa: E402  (the page reader the rule uses)

#: the README's set-up lines: `.ci/run` runs them on a clean clone, the README states their times
SET_UP = ("pip install -c constraints-cpu.txt", "pytest ")
RESULTS = REPO / "benchmarks" / "results" / "doc_commands.json"
TIME_MARK = re.compile(r"#.*?(~\s*\d+(\.\d+)?\s*(s|ms|sec|seconds?|min|minutes?|h|hours?)\b[^#]*)", re.I)


def timed_commands(match: str | None, page_name: str | None = None) -> list[tuple[str, str, str]]:
    """(page, command, its time mark) for every command with a time mark and no ``needs``."""
    found = []
    for page in PAGES:
        if page_name and page.name != page_name:
            continue
        for command in commands(page):
            mark = TIME_MARK.search(command)
            if not mark or re.search(r"#.*\bneeds\b", command) or re.search(r"#.*\btested\b", command):
                continue
            if command.startswith(SET_UP):
                continue
            if match and match not in command:
                continue
            found.append((str(page.relative_to(REPO)), _code(command), mark.group(1).strip()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--match", help="only commands containing this substring")
    parser.add_argument("--page", help="only the commands of this page (its file name, e.g. ranker.md)")
    parser.add_argument("--list", action="store_true", help="list the commands, run nothing")
    args = parser.parse_args()
    selected = timed_commands(args.match, args.page)
    if args.list:
        for page, command, mark in selected:
            print(f"{page}: {command}   [{mark}]")
        return
    records = []
    present = set(REPO.iterdir())  # what the commands make at the root (outputs/, palr-mine/) is removed after
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "PALR_CACHE_DIR": str(Path(scratch) / "cache")}
        for page, command, mark in selected:
            load = os.getloadavg()[0]
            start = time.perf_counter()
            proc = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            records.append({"page": page, "command": command, "mark": mark, "seconds": round(seconds, 1),
                            "load_before": round(load, 2), "returncode": proc.returncode})
            status = "ok" if proc.returncode == 0 else f"FAILED ({proc.returncode})"
            print(f"{seconds:8.1f} s  load {load:4.2f}  {status:10s} [{mark}]  {page}: {command}", flush=True)
            if proc.returncode:
                print(proc.stderr[-2000:], file=sys.stderr)
    for made in sorted(set(REPO.iterdir()) - present):
        print(f"removing {made.relative_to(REPO)}, which the commands made")
        shutil.rmtree(made) if made.is_dir() and not made.is_symlink() else made.unlink()
    print(f"\n{'seconds':>8}  {'load':>5}  mark / command")
    for r in records:
        print(f"{r['seconds']:8.1f}  {r['load_before']:5.2f}  [{r['mark']}] {r['command']}")
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    on_pages = {_code(command) for page in PAGES for command in commands(page)}  # one no page shows any more goes
    kept = [r for r in previous if r["command"] not in {n["command"] for n in records} and r["command"] in on_pages]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(kept + [{**r, "cpus": os.cpu_count(),
                                           "date": time.strftime("%Y-%m-%d %H:%M")} for r in records],
                                  indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    if any(r["returncode"] for r in records):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
