"""The documentation site builds with ``mkdocs build --strict`` and has no broken internal link.

Strict turns every mkdocs warning into a failure: a page link that does not resolve, a page missing
from the nav, a docstring cross-reference (mkdocstrings/autorefs) without a target. On top of that
this test reads the built HTML and checks every internal ``href`` and ``<img src>`` against the
files of the site, which also covers links mkdocs does not validate (theme, generated pages).
"""

from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")
yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow  # about 5-10 s: mkdocstrings loads and renders the whole API


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and ((tag == "a" and name == "href") or (tag in ("img", "script") and name == "src")
                          or (tag == "link" and name == "href")):
                self.links.append((tag, value))


def _nav_pages(nav) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _target(site: Path, page: Path, link: str) -> Path | None:
    """The file an internal link points to, or None for a link that leaves the site or the page."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith(("#", "mailto:", "javascript:", "data:")):
        return None
    path = unquote(parts.path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (page.parent / path)
    return Path(os.path.normpath(target))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                           cwd=REPO, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
    return out


def test_every_nav_page_is_built(site):
    pages = _nav_pages(yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    assert "index.md" in pages and any(p.startswith("reference/") for p in pages)
    for page in pages:
        html = site / (page.removesuffix(".md") + ".html")  # use_directory_urls: false: a.md -> a.html
        assert html.is_file(), f"nav page {page} was not built ({html.relative_to(site)} missing)"


def test_no_broken_internal_links_or_images(site):
    """Every internal link names a file: opened from disk (file://), a link to a folder would show a
    folder listing, not the folder's index.html, so a folder counts as broken."""
    broken = []
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for tag, link in parser.links:
            target = _target(site, page, link)
            if target is not None and not target.is_file():
                broken.append(f"{page.relative_to(site)}: <{tag}> {link}")
    assert not broken, "broken links in the built site:\n" + "\n".join(broken)


def test_public_api_table_lists_all_of_palr_core(site):
    import palr_core

    html = (site / "reference" / "palr_core.html").read_text(encoding="utf-8")
    missing = [name for name in palr_core.__all__ if f"<code>{name}</code>" not in html]
    assert not missing, f"reference/palr_core is missing {missing}"


def test_docstring_markup_is_rendered_not_shown_raw(site):
    """reST roles (:class:`X`) and literal-block markers (::) are turned into Markdown."""
    raw = []
    for page in sorted((site / "reference").rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        for marker in (":class:", ":func:", ":meth:", ":mod:", ":data:", ":attr:", "======"):
            if marker in text:
                raw.append(f"{page.relative_to(site)}: {marker}")
    assert not raw, "raw reST in the API reference:\n" + "\n".join(raw)
