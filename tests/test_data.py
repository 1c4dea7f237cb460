"""Preprocessing (dedup, chronology, k-core) and the leave-one-out split."""

import numpy as np
import pytest

from palr_core import DataError, InteractionLog, ItemCatalog, RawDataset, leave_one_out_split, preprocess
from palr_core.data import iterative_k_core


def raw(users, items, stamps=None, catalog_ids=None):
    ids = sorted(set(items)) if catalog_ids is None else catalog_ids
    catalog = ItemCatalog(ids=ids, titles=[f"t{i}" for i in ids], attributes={"genres": [["g"]] * len(ids)})
    return RawDataset(InteractionLog(np.array(users), np.array(items),
                                     None if stamps is None else np.array(stamps)), catalog, name="tiny")


def test_sequences_are_chronological_and_ties_keep_file_order():
    data = preprocess(raw(["u"] * 4, ["c", "a", "b", "d"], [20, 10, 20, 5]), k_core=1)
    titles = [data.catalog.titles[i] for i in data.sequences[0]]
    assert titles == ["td", "ta", "tc", "tb"]


def test_duplicates_keep_the_earliest_interaction():
    data = preprocess(raw(["u"] * 4, ["a", "b", "a", "c"], [3, 1, 0, 2]), k_core=1)
    assert [data.catalog.titles[i] for i in data.sequences[0]] == ["ta", "tb", "tc"]


def test_each_kept_interaction_keeps_its_time_through_dedup_and_k_core():
    data = preprocess(raw(["u", "u", "u", "v", "v", "w"], ["a", "b", "a", "b", "a", "c"], [30, 10, 5, 7, 8, 1]),
                      k_core=2)
    by_user = {uid: dict(zip((data.catalog.titles[i] for i in seq), times.tolist()))
               for uid, seq, times in zip(data.user_ids, data.sequences, data.timestamps)}
    assert by_user == {"u": {"ta": 5, "tb": 10}, "v": {"tb": 7, "ta": 8}}  # u's later "a" and user w are gone


def test_no_timestamps_means_file_order():
    data = preprocess(raw(["u", "v", "u", "u"], ["x", "y", "z", "y"]), k_core=1)
    assert [data.catalog.titles[i] for i in data.sequences[0]] == ["tx", "tz", "ty"]


def test_k_core_is_iterative():
    # k=2: item c has one user, so it goes; that leaves user w with one item, so w goes too
    # (a single pass would have kept w's interaction with a).
    data = preprocess(raw(["u", "u", "v", "v", "w", "w"], list("ababac")), k_core=2)
    assert data.user_ids == ["u", "v"]
    assert sorted(data.catalog.titles) == ["ta", "tb"]
    assert data.stats.interactions == 4


def test_k_core_fixed_point_matches_a_naive_loop(rng):
    users = rng.integers(0, 40, size=600)
    items = rng.integers(0, 60, size=600)
    keep = iterative_k_core(users, items, 5)
    # naive reference
    alive = np.ones(len(users), bool)
    changed = True
    while changed:
        changed = False
        for codes in (users, items):
            counts = np.bincount(codes[alive], minlength=codes.max() + 1)
            bad = alive & (counts[codes] < 5)
            if bad.any():
                alive &= ~bad
                changed = True
    assert np.array_equal(keep, alive)


def test_ids_are_numbered_by_first_appearance_and_deterministic():
    a = preprocess(raw(["u", "u", "v", "v"], ["b", "a", "a", "c"], [1, 2, 1, 2]), k_core=1)
    b = preprocess(raw(["u", "u", "v", "v"], ["b", "a", "a", "c"], [1, 2, 1, 2]), k_core=1)
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences] == [[0, 1], [1, 2]]
    assert a.catalog.titles == ["tb", "ta", "tc"] and a.user_ids == ["u", "v"]


def test_leave_one_out_split_holds_out_the_last_two():
    data = preprocess(raw(["u"] * 5, list("abcde"), [1, 2, 3, 4, 5]), k_core=1)
    split = leave_one_out_split(data)
    assert split.train[0].tolist() == [0, 1, 2] and split.valid.tolist() == [3] and split.test.tolist() == [4]
    assert split.histories("test")[0].tolist() == [0, 1, 2, 3]
    assert split.histories("valid")[0].tolist() == [0, 1, 2]


def test_split_rejects_users_with_fewer_than_three_items():
    data = preprocess(raw(["u", "u", "v", "v", "v"], list("ababc")), k_core=1)
    with pytest.raises(DataError, match=r"1 users have fewer than 3 interactions \(e.g. user 'u'\).*preprocess.k_core"):
        leave_one_out_split(data)


def test_logged_items_missing_from_the_catalogue_are_an_error():
    with pytest.raises(DataError, match=r"1 logged item ids have no catalogue entry \(e.g. \['z'\]\)"):
        preprocess(raw(["u"] * 3, ["a", "b", "z"], catalog_ids=["a", "b"]), k_core=1)


def test_empty_log_and_empty_after_filtering_are_errors():
    with pytest.raises(DataError, match="has no interactions"):
        preprocess(raw([], []), k_core=5)
    with pytest.raises(DataError, match="nothing left after 5-core"):
        preprocess(raw(["u"] * 3, list("abc")), k_core=5)


def test_catalog_renders_amazon_items_with_their_id():
    cat = ItemCatalog(ids=["B000X"], titles=["Nail Lacquer"], domain="products", show_id=True)
    assert cat.render(0) == "B000X (Nail Lacquer)"


def test_synthetic_default_is_deterministic(small_synthetic):
    from palr.plugins.synthetic.dataset import SyntheticMovies

    again = preprocess(SyntheticMovies(users=150, franchises=50).load(), k_core=5)
    assert all(np.array_equal(a, b) for a, b in zip(small_synthetic.sequences, again.sequences))
    assert small_synthetic.stats.users == 150


def test_preprocessed_data_is_cached_by_content_and_settings(tmp_path):
    from palr_core.pipeline import cached_preprocess

    first = raw(["u"] * 5 + ["v"] * 5, list("abcde") * 2, list(range(10)))
    a = cached_preprocess(first, 1, tmp_path)
    entries = sorted((tmp_path / "preprocessed").glob("*/manifest.json"))
    stamps = [p.stat().st_mtime_ns for p in entries]
    b = cached_preprocess(first, 1, tmp_path)
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences]
    assert (a.user_ids, a.catalog) == (b.user_ids, b.catalog)
    assert [p.stat().st_mtime_ns for p in entries] == stamps  # reused, not rewritten
    changed = raw(["u"] * 5 + ["v"] * 5, list("abcde") + list("edcba"), list(range(10)))
    c = cached_preprocess(changed, 1, tmp_path)
    assert c.sequences[1].tolist() == [4, 3, 2, 1, 0]
    cached_preprocess(first, 2, tmp_path)
    assert len(list((tmp_path / "preprocessed").glob("*/manifest.json"))) == 3
