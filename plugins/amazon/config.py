"""Amazon review releases and the ``amazon`` dataset's options (no heavy imports: read at start-up)."""

from __future__ import annotations

from dataclasses import dataclass, field

from palr_core import option

UCSD = "https://datarepo.eng.ucsd.edu/mcauley_group/data"
CATEGORIES = {
    "2014": ["Amazon_Instant_Video", "Apps_for_Android", "Automotive", "Baby", "Beauty", "Books",
             "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry",
             "Digital_Music", "Electronics", "Grocery_and_Gourmet_Food", "Health_and_Personal_Care",
             "Home_and_Kitchen", "Kindle_Store", "Movies_and_TV", "Musical_Instruments",
             "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies", "Sports_and_Outdoors",
             "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games"],
    "2018": ["AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive",
             "Books", "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry",
             "Digital_Music", "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food",
             "Home_and_Kitchen", "Industrial_and_Scientific", "Kindle_Store", "Luxury_Beauty",
             "Magazine_Subscriptions", "Movies_and_TV", "Musical_Instruments", "Office_Products",
             "Patio_Lawn_and_Garden", "Pet_Supplies", "Prime_Pantry", "Software",
             "Sports_and_Outdoors", "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games"],
}
FORMATS = ("auto", "reviews", "ratings", "tsv", "s3rec")


@dataclass
class AmazonConfig:
    """Which Amazon category and release, where the files are and how to read them.

    :param category: e.g. ``Beauty`` (2014) or ``All_Beauty`` (2018), as in the file names (required).
    :param release: ``"2014"`` or ``"2018"``.
    :param root: directory holding the files; ``null`` downloads the official 5-core reviews and
        metadata from the UCSD mirror into ``<cache_dir>/datasets``.
    :param format: ``auto``, ``reviews``, ``ratings``, ``tsv`` or ``s3rec`` (see the module doc).
    :param on_bad_lines: ``error`` (stop at the first malformed line) or ``skip`` (skip and count).
    :param missing_title: title shown for a product without one (counted in ``report``).
    :param url: base URL the files are downloaded from (default: the UCSD mirror of ``release``).
    :param checksums: ``{file name: "sha256:<hex>"}`` to verify downloads (none are published).
    :param progress: progress bars while downloading and reading large files.
    """

    category: str = "???"
    release: str = option("2014", choices=tuple(CATEGORIES))
    root: str | None = None
    format: str = option("auto", choices=FORMATS)
    on_bad_lines: str = option("error", choices=("error", "skip"))
    missing_title: str = "unknown title"
    url: str | None = None
    checksums: dict = field(default_factory=dict)
    progress: bool = True
