"""MovieLens releases and the ``movielens`` dataset's options (no heavy imports: read at start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option

BASE_URL = "https://files.grouplens.org/datasets/movielens"
FORMATS = ("auto", "official", "chrono")


@dataclass(frozen=True)
class Variant:
    """One MovieLens release: its archive, published MD5 (GroupLens' ``.md5`` sidecar) and files."""

    folder: str
    checksum: str
    ratings: str
    items: str

    @property
    def url(self) -> str:
        return f"{BASE_URL}/{self.folder}.zip"


VARIANTS = {
    "ml-100k": Variant("ml-100k", "md5:0e33842e24a9c977be4e0107933c0723", "u.data", "u.item"),
    "ml-1m": Variant("ml-1m", "md5:c4d9eecfca2ab87c1945afe126590906", "ratings.dat", "movies.dat"),
    "ml-20m": Variant("ml-20m", "md5:cd245b17a1ae2cc31bb14903e1204af3", "ratings.csv", "movies.csv"),
    "ml-25m": Variant("ml-25m", "md5:6b51fb2759a8657d3bfcbfc42b592ada", "ratings.csv", "movies.csv"),
}


@dataclass
class MovieLensConfig:
    """Which MovieLens release, where its files are and how to read them (presets:
    ``dataset=ml-100k``, ``ml-1m``, ``ml-20m``, ``ml-25m``).

    :param variant: ``ml-100k``, ``ml-1m``, ``ml-20m`` or ``ml-25m`` (required).
    :param root: directory holding the files; ``null`` downloads the official zip into
        ``<cache_dir>/datasets`` and checks GroupLens' published MD5.
    :param format: ``auto`` (detect from the files in ``root``), ``official`` or ``chrono`` (derived:
        ``user item`` per line, file order = time).
    :param on_bad_lines: ``error`` (stop at the first malformed line) or ``skip`` (skip and count).
    :param url: archive URL (default: the GroupLens URL of ``variant``).
    :param checksum: ``md5:<hex>``/``sha256:<hex>`` of the archive (default: GroupLens' published
        MD5 when ``url`` is the default, else none); ``""`` disables the check.
    :param progress: show a progress bar while downloading.
    """

    variant: str = option("???", choices=tuple(VARIANTS))
    root: str | None = None
    format: str = option("auto", choices=FORMATS)
    on_bad_lines: str = option("error", choices=("error", "skip"))
    url: str | None = None
    checksum: str | None = None
    progress: bool = True
