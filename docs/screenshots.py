"""Build the docs site, serve it, and take a full-page screenshot of every page in headless Chromium.

    python docs/screenshots.py /tmp/shots                  # desktop, 1280 px wide
    python docs/screenshots.py /tmp/shots-mobile --width 390
    python docs/screenshots.py /tmp/shots --pages index retrievers reference/data
    python docs/screenshots.py /tmp/shots --site site      # shoot an already built site, no build

Writes ``<out>/<page>.png`` (``reference/kit/llm`` -> ``reference-kit-llm.png``), one per page of
the built site, and prints each file with its height. Needs Chromium (Debian: ``apt-get install
chromium``; or pass ``--chromium /path/to/chrome``). The build is ``mkdocs build --strict`` into a
temporary folder (unless ``--site`` names a built one), so a warning stops the check before any
screenshot. Full page: each page is
loaded once to measure its height at the chosen width (a script the server adds to the page writes
it into the title, which ``--dump-dom`` prints), then shot with a window that tall.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MEASURE = (b"<script>addEventListener('load', () => setTimeout(() => {document.title = "
           b"'palr-height=' + document.documentElement.scrollHeight}, 300))</script>")
MAX_HEIGHT = 16000  # Chromium's largest screenshot is about 16k pixels tall


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site; with ``?measure`` an HTML page also reports its height in its title."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("?measure"):
            return super().do_GET()
        file = Path(self.translate_path(self.path.removesuffix("?measure")))
        body = file.read_bytes().replace(b"</body>", MEASURE + b"</body>")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def pages(site: Path) -> list[str]:
    """Every page of the built site, as its path without ``.html`` (mkdocs.yml: use_directory_urls: false)."""
    found = []
    for html in sorted(site.rglob("*.html")):
        page = html.relative_to(site).as_posix().removesuffix(".html")
        if page != "404" and not page.startswith(("search/", "assets/")):
            found.append(page)
    return found


def chromium(binary: str, width: int, height: int, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:  # one profile per browser: they run in parallel
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the screenshots (created)")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels")
    parser.add_argument("--pages", nargs="*", help="pages to shoot, e.g. index reference/data (default: all)")
    parser.add_argument("--site", type=Path, help="a site already built (default: build one, strictly)")
    parser.add_argument("--jobs", type=int, default=2, help="browsers run at once")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser")
                        or shutil.which("google-chrome"), help="the browser binary")
    args = parser.parse_args(argv)
    if not args.chromium:
        parser.error("no Chromium found: apt-get install chromium, or pass --chromium")
    args.out.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        site = args.site or Path(tmp) / "site"
        if not args.site:
            build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                                   cwd=REPO, capture_output=True, text=True)
            if build.returncode != 0:
                print(build.stderr, file=sys.stderr)
                return build.returncode
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 functools.partial(Handler, directory=str(site)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        wanted = [p.strip("/").removesuffix(".html") or "index" for p in args.pages] if args.pages else pages(site)
        try:
            with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
                shots = list(pool.map(functools.partial(shoot, args, base), wanted))
        finally:
            server.shutdown()
    for page, png, height, error in shots:
        print(f"FAILED {page}.html: {error}" if error else f"{png}  {args.width}x{height}",
              file=sys.stderr if error else sys.stdout)
    return int(any(error for *_, error in shots))


def shoot(args: argparse.Namespace, base: str, page: str) -> tuple[str, Path, int, str]:
    """Measure one page's height at the width, then screenshot it whole."""
    url = base + page + ".html"
    dom = chromium(args.chromium, args.width, 1000, "--virtual-time-budget=3000", "--dump-dom",
                   url + "?measure").stdout
    measured = re.search(r"palr-height=(\d+)", dom)
    height = min(int(measured.group(1)), MAX_HEIGHT) if measured else 2000
    png = args.out / (page.replace("/", "-") + ".png")
    png.unlink(missing_ok=True)
    shot = chromium(args.chromium, args.width, height, f"--screenshot={png}", url)
    return page, png, height, "" if png.exists() else shot.stderr[-500:] or "no screenshot written"


if __name__ == "__main__":
    sys.exit(main())
