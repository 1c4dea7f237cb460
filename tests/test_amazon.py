"""Amazon plugin: 2014/2018 official files and the derived layouts on tiny fixtures, errors, the real copy."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from palr.plugins.amazon.dataset import AmazonReviews

from palr_core import DataError, preprocess
from palr_core.kit.files import MissingDataError
from palr_core.testing import tiny_context


def make(root: Path, **params) -> AmazonReviews:
    return AmazonReviews(**{"root": str(root), "category": "Beauty", "progress": False, **params})


def ctx(tmp_path: Path):
    return tiny_context(tmp_path / "ctx")


def write_gz(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def review(user: str, asin: str, day: int) -> str:
    return json.dumps({"reviewerID": user, "asin": asin, "overall": 5.0, "unixReviewTime": day,
                       "reviewText": "fine"})


META_2014 = [
    "{'asin': 'B001', 'title': 'Rose &amp; Oud\\tSoap', 'brand': 'Acme', "
    "'categories': [['Beauty', 'Skin Care'], ['Beauty', 'Bath']]}",
    "{'asin': 'B002', 'categories': [['Beauty']]}",  # no title: fallback, counted
    "{'asin': 'B999', 'title': 'never reviewed'}",
]


def write_2014(root: Path) -> Path:
    write_gz(root / "reviews_Beauty_5.json.gz",
             [review("U1", "B002", 200), review("U1", "B001", 100), review("U2", "B001", 50)])
    write_gz(root / "meta_Beauty.json.gz", META_2014)
    return root


def sequences(ds: AmazonReviews, tmp_path: Path) -> dict:
    data = preprocess(ds.load(ctx(tmp_path)), k_core=1)
    return {u: [data.catalog.ids[i] for i in s] for u, s in zip(data.user_ids, data.sequences)}


def test_2014_reviews_in_time_order_with_python_literal_metadata(tmp_path):
    ds = make(write_2014(tmp_path))
    assert sequences(ds, tmp_path) == {"U1": ["B001", "B002"], "U2": ["B001"]}
    cat = ds.load(ctx(tmp_path)).catalog
    first = cat.ids.index("B001")
    assert cat.render(first) == "B001 (Rose & Oud Soap)"  # entities unescaped, tab collapsed
    assert cat.attributes["brand"][first] == ["Acme"]
    assert cat.attributes["categories"][first] == ["Beauty", "Skin Care", "Bath"]
    assert cat.domain == "products" and cat.show_id


def test_products_without_title_get_the_fallback_and_are_counted(tmp_path):
    ds = make(write_2014(tmp_path), missing_title="no title")
    cat = ds.load(ctx(tmp_path)).catalog
    assert cat.render(cat.ids.index("B002")) == "B002 (no title)"
    assert ds.report["items_without_title"] == 1


def test_metadata_is_never_evaluated_as_code(tmp_path):
    root = write_2014(tmp_path)
    marker = tmp_path / "pwned"
    write_gz(root / "meta_Beauty.json.gz",
             [f"{{'asin': 'B001', 'title': __import__('pathlib').Path('{marker}').touch()}}"])
    with pytest.raises(DataError, match=r"meta_Beauty\.json\.gz, line 1: expected a JSON object or Python dict"):
        make(root).load(ctx(tmp_path))
    assert not marker.exists()


def test_2014_ratings_csv_without_metadata(tmp_path):
    (tmp_path / "ratings_Beauty.csv").write_text("U1,B001,5.0,20\nU1,B002,4.0,10\n")
    ds = make(tmp_path)
    assert sequences(ds, tmp_path) == {"U1": ["B002", "B001"]}
    assert ds.report["format"] == "ratings" and ds.report["items_without_title"] == 2


def test_2018_json_metadata_and_item_first_ratings_csv(tmp_path):
    (tmp_path / "All_Beauty.csv").write_text("B001,U1,5.0,20\nB002,U1,4.0,10\n")
    write_gz(tmp_path / "meta_All_Beauty.json.gz",
             [json.dumps({"asin": "B001", "title": "Lotion", "brand": "X", "category": ["All Beauty"]})])
    ds = make(tmp_path, release="2018", category="All_Beauty")
    assert sequences(ds, tmp_path) == {"U1": ["B002", "B001"]}
    cat = ds.load(ctx(tmp_path)).catalog
    assert cat.titles[cat.ids.index("B001")] == "Lotion"
    assert cat.attributes["categories"][cat.ids.index("B001")] == ["All Beauty"]


def test_2018_five_core_reviews_json(tmp_path):
    write_gz(tmp_path / "Luxury_Beauty_5.json.gz", [review("U1", "B002", 9), review("U1", "B001", 3)])
    ds = make(tmp_path, release="2018", category="Luxury_Beauty")
    assert sequences(ds, tmp_path) == {"U1": ["B001", "B002"]} and ds.report["format"] == "reviews"


def test_empty_reviews_file_is_reported(tmp_path):
    write_gz(tmp_path / "reviews_Beauty_5.json.gz", [""])
    with pytest.raises(DataError, match=r"reviews_Beauty_5\.json\.gz is empty; expected one JSON review per line"):
        make(tmp_path).load(ctx(tmp_path))


def test_derived_tsv_keeps_file_order_for_same_day_ties(tmp_path):
    (tmp_path / "beauty_5core_interactions.tsv").write_text(
        "user_id\titem_id\ttimestamp\nU1\tB003\t86400\nU1\tB001\t86400\nU1\tB002\t0\n")
    (tmp_path / "item_titles.json").write_text(json.dumps({"B001": "One", "B003": "Three"}))
    ds = make(tmp_path)
    assert sequences(ds, tmp_path) == {"U1": ["B002", "B003", "B001"]}
    assert ds.report["format"] == "tsv" and ds.report["items_without_title"] == 1


def test_derived_s3rec_sequences_mapped_through_datamaps(tmp_path):
    (tmp_path / "Beauty.txt").write_text("1 2 1\n2 1\n")
    (tmp_path / "datamaps.json").write_text(json.dumps(
        {"id2user": {"1": "U1", "2": "U2"}, "id2item": {"1": "B001", "2": "B002"}}))
    assert sequences(make(tmp_path), tmp_path) == {"U1": ["B002", "B001"], "U2": ["B001"]}


def test_s3rec_line_with_unknown_id_is_reported(tmp_path):
    (tmp_path / "Beauty.txt").write_text("1 2\n1 7\n")
    (tmp_path / "datamaps.json").write_text(json.dumps({"id2user": {"1": "U1"}, "id2item": {"2": "B"}}))
    with pytest.raises(DataError, match=r"Beauty\.txt, line 2: expected 'user_id item_id \.\.\.'.*unknown: \['7'\]"):
        make(tmp_path).load(ctx(tmp_path))


def test_malformed_review_line_fails_with_line_number_or_is_skipped(tmp_path):
    write_gz(tmp_path / "reviews_Beauty_5.json.gz", [review("U1", "B001", 1), '{"asin": "B002"}'])
    with pytest.raises(DataError, match=r"reviews_Beauty_5\.json\.gz, line 2: expected a JSON object with reviewerID"):
        make(tmp_path).load(ctx(tmp_path))
    ds = make(tmp_path, on_bad_lines="skip")
    assert sequences(ds, tmp_path) == {"U1": ["B001"]} and ds.report["skipped_lines"] == 1


def test_tsv_with_wrong_header_is_reported(tmp_path):
    (tmp_path / "beauty_5core_interactions.tsv").write_text("user,item,time\nU1,B1,0\n")
    with pytest.raises(DataError, match="line 1: expected the header 'user_id<TAB>item_id<TAB>timestamp'"):
        make(tmp_path).load(ctx(tmp_path))


def test_unknown_category_suggests_close_names(tmp_path):
    with pytest.raises(MissingDataError, match=r"'Beuty' is not a 2014 category \(did you mean Beauty"):
        make(tmp_path, category="Beuty").load(ctx(tmp_path))
    with pytest.raises(MissingDataError, match="did you mean All_Beauty"):
        AmazonReviews(category="Beauty", release="2018", progress=False).load(ctx(tmp_path))


def test_missing_files_message_lists_layouts_and_urls(tmp_path):
    with pytest.raises(MissingDataError) as err:
        make(tmp_path).load(ctx(tmp_path))
    msg = str(err.value)
    for part in ("reviews_Beauty_5.json.gz", "ratings_Beauty.csv", "beauty_5core_interactions.tsv",
                 "Beauty.txt, datamaps.json", str(tmp_path),
                 "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon/productGraph/categoryFiles/"
                 "reviews_Beauty_5.json.gz"):
        assert part in msg


def test_download_from_base_url_then_cache(tmp_path, http_server):
    url = http_server(write_2014(tmp_path / "mirror"))
    ds = AmazonReviews(category="Beauty", url=url + "/", progress=False)
    assert sequences(ds, tmp_path) == {"U1": ["B001", "B002"], "U2": ["B001"]}
    assert (tmp_path / "ctx" / "cache" / "datasets" / "amazon-2014" / "meta_Beauty.json.gz").is_file()
    again = AmazonReviews(category="Beauty", url=url, progress=False)
    again.load(ctx(tmp_path))
    assert again.report["from_cache"]


def test_offline_download_error_names_the_urls(tmp_path, http_server):
    url = http_server(tmp_path / "empty-mirror")  # every file is a 404
    (tmp_path / "empty-mirror").mkdir()
    with pytest.raises(MissingDataError, match="download of .*/reviews_Beauty_5.json.gz failed"):
        AmazonReviews(category="Beauty", url=url, progress=False).load(ctx(tmp_path))


def test_real_beauty_matches_paper_table_1_in_both_derived_layouts(shared_data, tmp_path):
    root = shared_data / "amazon-beauty"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    by_format = {}
    for fmt in ("tsv", "s3rec"):
        ds = AmazonReviews(root=str(root), category="Beauty", format=fmt, progress=False)
        by_format[fmt] = data = preprocess(ds.load(ctx(tmp_path)), k_core=5)
        assert (data.stats.users, data.stats.items, data.stats.interactions) == (22363, 12101, 198502)
        assert ds.report["items_without_title"] == 15
    tsv, s3rec = by_format["tsv"], by_format["s3rec"]
    assert tsv.user_ids == s3rec.user_ids and tsv.catalog.ids == s3rec.catalog.ids
    assert all((a == b).all() for a, b in zip(tsv.sequences, s3rec.sequences))
