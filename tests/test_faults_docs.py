"""docs/reliability.md cannot drift from the fault suite: the page names every test of the suite
under the guarantee it holds, and only tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE = sorted({*REPO.glob("tests/test_faults*.py"), *(REPO / "tests" / f"test_{name}.py" for name in
                                                         ("seams", "refusals", "recommend_file"))})


def test_the_reliability_page_names_exactly_the_tests_of_the_fault_suite():
    page = set(re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`", (REPO / "docs" / "reliability.md").read_text()))
    missing = [f"{f}::{t}" for f, t in sorted(page) if not re.search(rf"^def {t}\(", (REPO / f).read_text(), re.M)]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
    suite = {(str(p.relative_to(REPO)), t) for p in SUITE for t in re.findall(r"^def (test_\w+)\(", p.read_text(), re.M)}
    unnamed = sorted(f"{f}::{t}" for f, t in suite - page)
    assert not unnamed, f"tests of the fault suite that docs/reliability.md does not list: {unnamed}"
