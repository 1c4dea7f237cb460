"""preprocess.split=temporal: a global time cut against a brute-force reference, its leakage rules,
its errors, and a whole run on it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from palr_core import DataError, InteractionLog, ItemCatalog, PreprocessConfig, RawDataset, preprocess
from palr_core.config import OptionError
from palr_core.data import leave_one_out_split, load_sequences, save_sequences, split_data, temporal_split


def random_log(seed: int, users: int = 60, items: int = 40, events: int = 900) -> RawDataset:
    """Users active over different stretches of time, timestamps with ties, repeated items."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 800, size=users)
    u = rng.integers(0, users, size=events)
    t = start[u] + rng.integers(0, 400, size=events)  # integers in a narrow range: many ties
    i = rng.integers(0, items, size=events)
    catalog = ItemCatalog(ids=list(range(items)), titles=[f"t{k}" for k in range(items)])
    return RawDataset(InteractionLog(u, i, t), catalog, name="random")


def brute_force(data, valid_fraction, test_fraction):
    """The split's rules spelled out over (user, position, item, time) tuples, one loop each."""
    events = [(u, j, int(item), int(time)) for u, (seq, times) in enumerate(zip(data.sequences, data.timestamps))
              for j, (item, time) in enumerate(zip(seq, times))]
    times = sorted(e[3] for e in events)
    n_test = max(1, round(len(times) * test_fraction))
    n_valid = max(1, round(len(times) * (valid_fraction + test_fraction)) - n_test)
    valid_cut, test_cut = times[len(times) - n_test - n_valid], times[len(times) - n_test]
    training, tests = [], []
    for u in range(len(data.sequences)):
        mine = [e for e in events if e[0] == u]  # in sequence order
        before = [item for _, _, item, time in mine if time < valid_cut]
        window = [item for _, _, item, time in mine if valid_cut <= time < test_cut]
        if before and window:
            training.append((u, before, window[0], True))
        elif len(before) >= 2:
            training.append((u, before[:-1], before[-1], False))
        seen = [item for _, _, item, time in mine if time < test_cut]
        later = [item for _, _, item, time in mine if time >= test_cut]
        if seen and later:
            tests.append((u, seen, later[0]))
    return valid_cut, test_cut, training, tests


@pytest.mark.parametrize(("seed", "valid_fraction", "test_fraction"), [(0, 0.1, 0.1), (1, 0.2, 0.05), (2, 0.15, 0.3)])
def test_temporal_split_matches_brute_force(seed, valid_fraction, test_fraction):
    data = preprocess(random_log(seed), k_core=2)
    split = temporal_split(data, valid_fraction, test_fraction)
    valid_cut, test_cut, training, tests = brute_force(data, valid_fraction, test_fraction)
    assert split.cuts == {"valid": valid_cut, "test": test_cut}
    assert split.user_of("valid", range(len(split.train))).tolist() == [u for u, *_ in training]
    assert [t.tolist() for t in split.train] == [before for _, before, _, _ in training]
    assert split.valid.tolist() == [target for *_, target, _ in training]
    assert split.validation_rows().tolist() == [row for row, t in enumerate(training) if t[3]]
    assert split.user_of("test", range(len(split.test))).tolist() == [u for u, _, _ in tests]
    assert [h.tolist() for h in split.histories("test")] == [seen for _, seen, _ in tests]
    assert split.test.tolist() == [target for _, _, target in tests]


def test_the_test_window_holds_the_latest_share_of_interactions():
    data = preprocess(random_log(3), k_core=2)
    split = temporal_split(data, 0.1, 0.2)
    times = np.concatenate(data.timestamps)
    assert math.isclose((times >= split.cuts["test"]).mean(), 0.2, abs_tol=0.02)  # ties may add a few
    assert math.isclose((times >= split.cuts["valid"]).mean(), 0.3, abs_tol=0.02)


def time_of(data, user: int) -> dict[int, int]:
    return dict(zip(data.sequences[user].tolist(), data.timestamps[user].tolist()))


@pytest.mark.parametrize("seed", [0, 4])
def test_nothing_at_or_after_a_cut_enters_training_or_a_history(seed):
    data = preprocess(random_log(seed), k_core=2)
    split = temporal_split(data, 0.1, 0.1)
    valid_cut, test_cut = split.cuts["valid"], split.cuts["test"]
    for row, user in enumerate(split.user_of("valid", range(len(split.train)))):
        when = time_of(data, user)
        assert all(when[i] < valid_cut for i in split.train[row].tolist())  # training: before the validation cut
        if row in set(split.validation_rows().tolist()):
            assert valid_cut <= when[int(split.valid[row])] < test_cut
        else:  # a held-out training item, for early stopping only
            assert when[int(split.valid[row])] < valid_cut
    for row, user in enumerate(split.user_of("test", range(len(split.test)))):
        when = time_of(data, user)
        assert all(when[i] < test_cut for i in split.histories("test")[row].tolist())
        assert when[int(split.test[row])] >= test_cut
        # the target is the user's first item in the window: nothing of theirs in it comes earlier
        first = min(t for t in when.values() if t >= test_cut)
        assert when[int(split.test[row])] == first


def test_users_without_history_before_the_window_or_without_a_test_item_are_not_evaluated():
    log = {"steady": (list("abcdefghij"), [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]),
           "late": (["a", "b"], [96, 97]),  # only inside the test window: no history before it
           "gone": (["a", "b"], [1, 2])}  # nothing after the training period
    users = [u for u, (items, _) in log.items() for _ in items]
    items = [i for items, _ in log.values() for i in items]
    times = [t for _, times in log.values() for t in times]
    catalog = ItemCatalog(ids=list("abcdefghij"), titles=list("abcdefghij"))
    data = preprocess(RawDataset(InteractionLog(np.array(users), np.array(items), np.array(times)), catalog), k_core=1)
    split = temporal_split(data, 0.2, 0.2)  # 14 events: the last 3 are the test window, the 3 before validation
    assert split.cuts == {"valid": 70, "test": 96}
    name = {u: data.user_ids[u] for u in range(3)}
    assert [name[u] for u in split.user_of("test", range(len(split.test)))] == ["steady"]
    assert "".join(data.catalog.titles[i] for i in split.histories("test")[0]) == "abcdefghi"
    assert data.catalog.titles[split.test[0]] == "j"
    assert [name[u] for u in split.user_of("valid", range(len(split.train)))] == ["gone", "steady"]
    assert split.validation_rows().tolist() == [1]  # gone's "validation" item is its own last training item
    assert "".join(data.catalog.titles[i] for i in split.train[1]) == "abcdef"
    assert data.catalog.titles[split.valid[1]] == "g"
    assert "".join(data.catalog.titles[i] for i in split.train[0]) + data.catalog.titles[split.valid[0]] == "ab"


def test_leave_one_out_is_the_default_and_unchanged(small_synthetic):
    split = split_data(small_synthetic)
    reference = leave_one_out_split(small_synthetic)
    assert split.test.tolist() == reference.test.tolist() and split.valid_rows is None and split.test_users is None
    assert [h.tolist() for h in split.histories("test")] == [
        np.append(t, v).tolist() for t, v in zip(reference.train, reference.valid)]


def test_a_log_without_time_cannot_be_cut_by_time():
    catalog = ItemCatalog(ids=["a", "b", "c"], titles=["a", "b", "c"])
    data = preprocess(RawDataset(InteractionLog(np.array(["u"] * 3), np.array(["a", "b", "c"])), catalog, "notime"),
                      k_core=1)
    with pytest.raises(DataError, match="dataset 'notime' has no timestamps: preprocess.split=temporal"):
        temporal_split(data)


def test_fractions_that_leave_no_training_are_refused_naming_both_options():
    with pytest.raises(OptionError, match=r"preprocess.valid_fraction \+ preprocess.test_fraction must be below 1"):
        PreprocessConfig(split="temporal", valid_fraction=0.5, test_fraction=0.5)


def test_timestamps_survive_the_preprocessing_cache(tmp_path):
    data = preprocess(random_log(5), k_core=2)
    save_sequences(data, tmp_path)
    back = load_sequences(tmp_path)
    assert [t.tolist() for t in back.timestamps] == [t.tolist() for t in data.timestamps]
    assert temporal_split(back).cuts == temporal_split(data).cuts


def test_a_run_on_the_temporal_split_evaluates_its_test_users(tmp_path):
    from tests.test_cli import palr_run

    proc = palr_run("preprocess.split=temporal", "hydra.run.dir=run", tmp_path=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "temporal split: validation window from time" in proc.stdout + proc.stderr
    assert 0 < metrics["users_evaluated"] < metrics["stats"]["users"]  # only users active in the test window
    assert metrics["rows"][0]["HR@10"] > 0
    # every row and results.md carry the list metrics after HR and NDCG
    assert list(metrics["rows"][0])[1:7] == ["HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20"]
    assert {"MRR@10", "Coverage@10", "AvgPop@10"} <= set(metrics["rows"][1])
    header = (tmp_path / "run" / "results.md").read_text().splitlines()[0]
    assert "| NDCG@20 | MRR@5 |" in header and "| AvgPop@20 |" in header


def test_a_bad_split_name_is_one_line(tmp_path):
    proc = palr_run_bad(tmp_path, "preprocess.split=random")
    assert "preprocess.split" in proc.stderr and "leave_one_out" in proc.stderr and "Traceback" not in proc.stderr


def palr_run_bad(tmp_path, *args):
    from tests.test_cli import palr_run

    proc = palr_run(*args, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0
    return proc
