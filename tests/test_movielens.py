"""MovieLens plugin: every published format on tiny fixture files, download, errors, and the real copies."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
from palr.plugins.movielens.dataset import MovieLens

from palr_core import DataError, preprocess
from palr_core.kit.files import MissingDataError
from palr_core.testing import tiny_context

U_ITEM_FLAGS = "|".join(["0"] * 19)


def make(root: Path, **params) -> MovieLens:
    return MovieLens(root=str(root), progress=False, **params)


def ctx(tmp_path: Path):
    return tiny_context(tmp_path / "ctx")


def write_100k(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    # user 1 rates 3 then 1 then 2 (out of file order by time); user 2 has a timestamp tie
    (root / "u.data").write_text("1\t3\t5\t300\n1\t1\t4\t100\n1\t2\t3\t200\n2\t2\t1\t50\n2\t1\t2\t50\n")
    flags = ["0"] * 19
    flags[1] = flags[5] = "1"  # Action, Comedy
    items = [f"1|Amélie (2001)|01-Jan-2001||http://x|{'|'.join(flags)}",
             f"2|Toy Story (1995)|01-Jan-1995||http://y|{U_ITEM_FLAGS}",
             f"3|Heat (1995)|01-Jan-1995||http://z|{U_ITEM_FLAGS}"]
    (root / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    return root


def write_1m(root: Path, ratings: str = "1::10::5::20\n1::20::3::10\n2::10::4::7\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ratings.dat").write_text(ratings)
    movies = "10::Cité des enfants perdus, La (1995)::Adventure|Sci-Fi\n20::Heat (1995)::Action\n"
    (root / "movies.dat").write_bytes(movies.encode("latin-1"))
    return root


def sequences(ds: MovieLens, tmp_path: Path) -> dict:
    data = preprocess(ds.load(ctx(tmp_path)), k_core=1)
    return {u: [data.catalog.ids[i] for i in s] for u, s in zip(data.user_ids, data.sequences)}


def test_100k_official_format_time_order_ties_in_file_order(tmp_path):
    ds = make(write_100k(tmp_path / "ml-100k"), variant="ml-100k")
    assert sequences(ds, tmp_path) == {1: [1, 2, 3], 2: [2, 1]}
    assert ds.report["format"] == "official"


def test_100k_titles_are_latin1_and_genres_come_from_flags(tmp_path):
    raw = make(write_100k(tmp_path / "d"), variant="ml-100k").load(ctx(tmp_path))
    assert raw.catalog.titles[0] == "Amélie (2001)"
    assert raw.catalog.attributes["genres"][0] == ["Action", "Comedy"]
    assert raw.catalog.domain == "movies" and not raw.catalog.show_id


def test_1m_dat_format_latin1_titles_and_genres(tmp_path):
    ds = make(write_1m(tmp_path / "d"), variant="ml-1m")
    assert sequences(ds, tmp_path) == {1: [20, 10], 2: [10]}
    assert ds.load(ctx(tmp_path)).catalog.titles[0] == "Cité des enfants perdus, La (1995)"
    assert ds.load(ctx(tmp_path)).catalog.attributes["genres"][0] == ["Adventure", "Sci-Fi"]


def test_chrono_format_uses_file_order_as_time(tmp_path):
    root = write_1m(tmp_path / "d")
    (root / "ratings.dat").unlink()
    (root / "ml-1m_user_item_chrono.txt").write_text("1 20\n1 10\n2 10\n")
    ds = make(root, variant="ml-1m")
    assert sequences(ds, tmp_path) == {1: [20, 10], 2: [10]}
    assert ds.report["format"] == "chrono" and ds.load(ctx(tmp_path)).log.timestamps is None


def test_format_option_picks_a_layout_when_both_are_present(tmp_path):
    root = write_1m(tmp_path / "d")
    (root / "ml-1m_user_item_chrono.txt").write_text("2 20\n")
    assert sequences(make(root, variant="ml-1m", format="chrono"), tmp_path) == {2: [20]}
    assert make(root, variant="ml-1m").load(ctx(tmp_path)).log.timestamps is not None  # auto prefers official


def test_25m_csv_format_with_quoted_titles(tmp_path):
    root = tmp_path / "ml-25m"
    root.mkdir()
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,4.5,20\n1,1,3.0,10\n")
    (root / "movies.csv").write_text('movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama\n'
                                     "2,Nausicaä (1984),(no genres listed)\n", encoding="utf-8")
    ds = make(root, variant="ml-25m")
    assert sequences(ds, tmp_path) == {1: [1, 2]}
    raw = ds.load(ctx(tmp_path))
    assert raw.catalog.titles == ["American President, The (1995)", "Nausicaä (1984)"]
    assert raw.catalog.attributes["genres"] == [["Comedy", "Drama"], []]


def test_movies_csv_that_is_not_utf8_is_reported(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n")
    (root / "movies.csv").write_bytes("movieId,title,genres\n1,Amélie (2001),Comedy\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"movies\.csv, line 2: byte 25 is not valid UTF-8"):
        make(root, variant="ml-20m").load(ctx(tmp_path))


def test_csv_with_wrong_header_is_reported(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "ratings.csv").write_text("user;movie;rating;time\n1;2;4;5\n")
    (root / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(DataError, match=r"ratings\.csv, line 1: expected the header 'userId,movieId,rating,timestamp'"):
        make(root, variant="ml-20m").load(ctx(tmp_path))


def test_root_may_be_the_parent_of_the_variant_folder(tmp_path):
    write_1m(tmp_path / "ml-1m")
    assert sequences(make(tmp_path, variant="ml-1m"), tmp_path) == {1: [20, 10], 2: [10]}


def test_bad_line_fails_with_file_and_line(tmp_path):
    root = write_1m(tmp_path / "d", ratings="1::10::5::20\n1::20::3\n")
    with pytest.raises(DataError, match=r"ratings\.dat, line 2: expected 4 '::'-separated fields"):
        make(root, variant="ml-1m").load(ctx(tmp_path))


def test_skip_mode_counts_bad_lines_in_report(tmp_path):
    root = write_1m(tmp_path / "d", ratings="1::10::5::20\n1::20::3\n2::10::4::7\n")
    ds = make(root, variant="ml-1m", on_bad_lines="skip")
    assert sequences(ds, tmp_path) == {1: [10], 2: [10]}
    assert ds.report["skipped_lines"] == 1 and ds.report["skipped_by_file"] == {"ratings.dat": 1}


def test_wrong_separator_in_u_data_is_explained(tmp_path):
    root = write_100k(tmp_path / "d")
    (root / "u.data").write_text("1,2,5,100\n")
    with pytest.raises(DataError, match="wrong separator"):
        make(root, variant="ml-100k").load(ctx(tmp_path))


def test_empty_ratings_file_is_reported(tmp_path):
    root = write_1m(tmp_path / "d", ratings="")
    with pytest.raises(DataError, match=r"ratings\.dat is empty"):
        make(root, variant="ml-1m").load(ctx(tmp_path))


def test_second_load_comes_from_cache_and_an_edit_invalidates_it(tmp_path):
    root = write_1m(tmp_path / "d")
    first, second = make(root, variant="ml-1m"), make(root, variant="ml-1m")
    first.load(ctx(tmp_path))
    second.load(ctx(tmp_path))
    assert (first.report["from_cache"], second.report["from_cache"]) == (False, True)
    (root / "ratings.dat").write_text("2::20::1::1\n")
    third = make(root, variant="ml-1m")
    assert sequences(third, tmp_path) == {2: [20]} and not third.report["from_cache"]


def test_unknown_variant_and_format_are_rejected():
    with pytest.raises(DataError, match="variant 'ml-2m' is unknown; choose one of ml-100k"):
        MovieLens(variant="ml-2m")
    with pytest.raises(DataError, match="format 'csv' is unknown"):
        MovieLens(variant="ml-1m", format="csv")


def test_missing_root_files_say_what_where_and_from_where(tmp_path):
    with pytest.raises(MissingDataError) as err:
        make(tmp_path, variant="ml-1m").load(ctx(tmp_path))
    msg = str(err.value)
    for part in ("ratings.dat", "movies.dat", "ml-1m_user_item_chrono.txt", str(tmp_path),
                 "https://files.grouplens.org/datasets/movielens/ml-1m.zip", "dataset.root"):
        assert part in msg


def _zip_of(folder: Path, archive: Path) -> str:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"ml-100k/{f.name}")
    return "md5:" + hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_extracts_verified_zip_into_cache(tmp_path, http_server):
    checksum = _zip_of(write_100k(tmp_path / "src"), tmp_path / "web" / "ml-100k.zip")
    url = http_server(tmp_path / "web") + "/ml-100k.zip"
    ds = MovieLens(variant="ml-100k", progress=False, url=url, checksum=checksum)
    assert sequences(ds, tmp_path) == {1: [1, 2, 3], 2: [2, 1]}
    downloads = tmp_path / "ctx" / "cache" / "datasets"
    assert (downloads / "ml-100k" / "u.data").is_file()
    assert not (downloads / "ml-100k.zip").exists()


def test_download_with_wrong_checksum_fails(tmp_path, http_server):
    _zip_of(write_100k(tmp_path / "src"), tmp_path / "web" / "ml-100k.zip")
    url = http_server(tmp_path / "web") + "/ml-100k.zip"
    ds = MovieLens(variant="ml-100k", progress=False, url=url, checksum="md5:" + "0" * 32)
    with pytest.raises(DataError, match="does not match checksum"):
        ds.load(ctx(tmp_path))
    assert not (tmp_path / "ctx" / "cache" / "datasets" / "ml-100k.zip").exists()


def test_a_zip_member_cannot_escape_the_download_folder(tmp_path, http_server):
    (tmp_path / "web").mkdir()
    with zipfile.ZipFile(tmp_path / "web" / "ml-100k.zip", "w") as zf:
        zf.writestr("../../escaped.txt", "x")
        zf.writestr("ml-100k/u.data", "1\t1\t5\t1\n")
    url = http_server(tmp_path / "web") + "/ml-100k.zip"
    with pytest.raises(MissingDataError):  # u.item is absent: the archive is not a MovieLens one
        MovieLens(variant="ml-100k", progress=False, url=url).load(ctx(tmp_path))
    downloads = tmp_path / "ctx" / "cache" / "datasets"
    assert all(downloads in path.parents for path in tmp_path.rglob("escaped.txt"))


def test_offline_download_error_names_files_folder_and_url(tmp_path, http_server):
    (tmp_path / "web").mkdir()
    url = http_server(tmp_path / "web") + "/ml-100k.zip"  # nothing there: 404
    ds = MovieLens(variant="ml-100k", progress=False, url=url)
    with pytest.raises(MissingDataError) as err:
        ds.load(ctx(tmp_path))
    msg = str(err.value)
    assert "u.data, u.item" in msg and str(tmp_path / "ctx" / "cache" / "datasets" / "ml-100k") in msg and url in msg


def _real(shared_data: Path, variant: str, tmp_path: Path) -> MovieLens:
    root = shared_data / variant
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    return MovieLens(variant=variant, root=str(root), progress=False)


def test_real_ml_100k_matches_published_5core_statistics(shared_data, tmp_path):
    data = preprocess(_real(shared_data, "ml-100k", tmp_path).load(ctx(tmp_path)), k_core=5)
    assert (data.stats.users, data.stats.items, data.stats.interactions) == (943, 1349, 99287)
    assert "Toy Story (1995)" in data.catalog.titles


def test_real_ml_1m_matches_paper_table_1(shared_data, tmp_path):
    ds = _real(shared_data, "ml-1m", tmp_path)
    data = preprocess(ds.load(ctx(tmp_path)), k_core=5)
    assert (data.stats.users, data.stats.items, data.stats.interactions) == (6040, 3416, 999611)
    assert ds.report["events"] == 1_000_209 and ds.report["catalog_items"] == 3883


@pytest.mark.slow
def test_pipeline_runs_end_to_end_on_real_ml_100k(shared_data, tmp_path, registry):
    from palr_core import PalrConfig
    from palr_core.pipeline import run_pipeline

    if not (shared_data / "ml-100k").is_dir():
        pytest.skip("ml-100k copy absent")
    config = PalrConfig(dataset={"name": "movielens", "variant": "ml-100k", "root": str(shared_data / "ml-100k"),
                                 "progress": False},
                        retriever={"name": "popularity"}, profile={"name": "none"}, ranker={"name": "identity"},
                        cache_dir=str(tmp_path / "cache"))
    result = run_pipeline(config, registry, tmp_path / "run")
    assert result.stats["users"] == 943 and result.stats["interactions"] == 99287
    assert 0 < result.rows[0]["HR@10"] < 1
    assert (tmp_path / "run" / "metrics.json").is_file()
