"""Every shell command in the README and docs/ runs as written: a test runs it, or the page says
how long it takes (or what it needs: data, a GPU, a cluster, a server it starts).

A command's trailing comment carries the mark: ``# tested`` (run by this file for the pages in
``RUN_HERE``, in order, in an empty folder; by the test file named in ``RUN_ELSEWHERE`` for the
others), a time such as ``# ~20 min on 2 CPU cores``, or ``# needs ...`` / ``# starts a server``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: pages whose ``# tested`` commands (and then Python blocks) this file runs, top to bottom
RUN_HERE = ["docs/recommend.md", "docs/tracking.md"]
#: pages whose commands another test file runs from the page itself
RUN_ELSEWHERE = {"docs/sweeps.md": "tests/test_ecosystem.py", "docs/plugins.md": "tests/test_scaffold.py"}
#: settings added to a page's ``palr-run`` commands when this file runs them, so that they cost the test
#: less (the page's own times are for the commands as written): recommend.md's pipeline (SASRec, keyword
#: profiles, the tiny LLaMA ranker, retriever_weight=auto) with a smaller tiny LLaMA fine-tuned on fewer
#: users and tuned on fewer (a third of the CPU time); tracking.md's sweep on a third of the synthetic data
TEST_SETTINGS = {"docs/recommend.md": ("ranker.tiny.hidden_size=32", "ranker.tiny.layers=1",
                                       "ranker.instructions.user_fraction=0.05", "eval.tune_users=20"),
                 "docs/tracking.md": ("dataset.users=200", "dataset.franchises=60")}

MARK = re.compile(r"#.*(\btested\b|~\s*\d+(\.\d+)?\s*(s|ms|sec|seconds?|min|minutes?|h|hours?)\b|\bneeds\b|"
                  r"starts a server)", re.I)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def commands(page: Path) -> list[str]:
    """The shell commands of a page: every line of a ``bash``/``sh`` block (a ``\\`` continues it),
    or, in a block that shows a transcript, the lines after ``$ ``."""
    found = []
    for language, body in FENCE.findall(page.read_text()):
        if language not in ("bash", "sh", "shell", "console", ""):
            continue
        lines = body.replace("\\\n", " ").splitlines()
        transcript = any(line.startswith("$ ") for line in lines)
        if language == "" and not transcript:
            continue  # an output block
        for line in lines:
            if transcript:
                if line.startswith("$ "):
                    found.append(line[2:])
            elif line.strip() and not line.lstrip().startswith("#"):
                found.append(line.strip())
    return found


def _code(command: str) -> str:
    """The command without its trailing comment (a ``#`` after a space, outside quotes)."""
    quote = None
    for i, char in enumerate(command):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or command[i - 1].isspace()):
            return command[:i].strip()
    return command.strip()


def _all_commands():
    return [pytest.param(page, command, id=f"{page.relative_to(REPO)}:{_code(command)[:60]}")
            for page in PAGES for command in commands(page)]


@pytest.mark.parametrize("page, command", _all_commands())
def test_every_command_is_tested_or_says_its_time(page, command):
    relative = str(page.relative_to(REPO))
    assert MARK.search(command), (f"{relative}: `{command}` says neither `# tested` nor its time "
                                  "(`# ~N min on 2 CPU cores`) nor what it needs (`# needs ...`)")
    assert "=~" not in _code(command), f"{relative}: `{command}`: Hydra cannot parse `~` (use $HOME)"
    if re.search(r"#.*\btested\b", command):
        assert relative in RUN_HERE or relative in RUN_ELSEWHERE, (
            f"{relative}: `{command}` says tested, but no test runs this page's commands")


def _python_blocks(page: Path) -> list[str]:
    return [body for language, body in FENCE.findall(page.read_text()) if language == "python"]


@pytest.mark.slow
@pytest.mark.parametrize("relative", RUN_HERE)
def test_pages_run_as_written(relative, tmp_path):
    """The page's tested commands, then its Python blocks, in one empty folder, as a reader would
    (``palr-run`` with the page's :data:`TEST_SETTINGS` added)."""
    page = REPO / relative
    env = {**os.environ, "PALR_CACHE_DIR": str(tmp_path / ".cache")}
    for command in commands(page):
        if not re.search(r"#.*\btested\b", command):
            continue
        code = _code(command)
        if code.startswith("palr-run "):
            code = " ".join((code, *TEST_SETTINGS.get(relative, ())))
        proc = subprocess.run(["bash", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{relative}: `{command}` failed:\n{proc.stdout}\n{proc.stderr}"
    for block in _python_blocks(page):
        proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"{relative}: a Python block failed:\n{block}\n{proc.stdout}\n{proc.stderr}"


#: a page teaches one task; beyond this it is two pages (the issue's "one page per task")
MAX_PAGE_LINES = 300
MAX_README_LINES = 120
LINK = re.compile(r"\]\(([^)\s]+)\)")


#: reference pages, one section per entry, that grow with what they list
LONG_PAGES = {"benchmarks.md"}


def test_readme_and_every_page_stay_short():
    long = [f"{p.relative_to(REPO)}: {n} lines" for p in PAGES if p.name not in LONG_PAGES
            if (n := len(p.read_text().splitlines())) > (MAX_README_LINES if p.name == "README.md" else MAX_PAGE_LINES)]
    assert not long, f"over {MAX_README_LINES} (README) or {MAX_PAGE_LINES} lines (a page): {long}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_names_a_file_that_exists(page):
    """Outside code blocks, a link that is not a URL or an #anchor names a file (relative to its page)."""
    text = FENCE.sub("", page.read_text())
    missing = []
    for target in LINK.findall(text):
        path = target.split("#")[0]
        if not path or re.match(r"[a-z]+:", path):
            continue
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(REPO)} links to missing files: {missing}"
