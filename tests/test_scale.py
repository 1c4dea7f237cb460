"""benchmarks/scale.py's log generator, and the kit's loop-free padding and masking it times against
the per-row versions they replaced."""

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from palr_core.kit.retrievers import left_pad, mask_history, right_pad

SCALE = Path(__file__).resolve().parents[1] / "benchmarks" / "scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("scale", SCALE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_log_has_the_asked_shape_and_is_seeded(scale, tmp_path):
    scale.generate(tmp_path / "a.parquet", users=300, items=200, events=20_000, batch=7_000)
    scale.generate(tmp_path / "b.parquet", users=300, items=200, events=20_000, batch=7_000)
    a = pq.read_table(tmp_path / "a.parquet")
    assert a.num_rows == 20_000 and a.column_names == ["user_id", "item_id", "timestamp"]
    assert a.equals(pq.read_table(tmp_path / "b.parquet"))
    assert set(a["item_id"].to_numpy()) <= set(range(200)) and set(a["user_id"].to_numpy()) <= set(range(300))


def test_item_popularity_follows_the_power_law(scale, tmp_path):
    scale.generate(tmp_path / "log.parquet", users=100, items=1000, events=200_000, exponent=1.0)
    counts = np.sort(np.bincount(pq.read_table(tmp_path / "log.parquet")["item_id"].to_numpy(), minlength=1000))[::-1]
    assert counts[0] / counts[9] == pytest.approx(10, rel=0.2)  # (1 / 1) / (1 / 10)
    assert counts[9] / counts[99] == pytest.approx(10, rel=0.3)


def test_sizes_keep_ml20m_proportions(scale):
    users, items, events = scale.shape_for(20_000_263)
    assert (users, items) == scale.PRESETS["ml-20m"][:2] and events == 20_000_263
    assert scale.shape_for(1_000_000)[:2] == (round(138_493 / 20.000263), round(26_744 / 20.000263))


def per_row_left_pad(histories, maxlen):
    out = np.zeros((len(histories), maxlen), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = np.asarray(history, dtype=np.int64)[-maxlen:] if maxlen else []
        if len(tail):
            out[row, maxlen - len(tail):] = tail + 1
    return out


@pytest.fixture
def histories():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 40, n) for n in (0, 1, 5, 12, 30, 0, 3)] + [[7, 2]]


@pytest.mark.parametrize("maxlen", [0, 1, 4, 12, 50])
def test_padding_equals_the_per_row_reference(histories, maxlen):
    assert np.array_equal(left_pad(histories, maxlen).numpy(), per_row_left_pad(histories, maxlen))
    seq, lengths = right_pad(histories, maxlen)
    for row, history in enumerate(histories):
        tail = np.asarray(history, dtype=np.int64)[-maxlen:] if maxlen else np.zeros(0, np.int64)
        assert lengths[row] == len(tail)
        assert np.array_equal(seq[row, :len(tail)].numpy(), tail + 1) and not seq[row, len(tail):].any()


def test_masking_sets_exactly_each_rows_history_to_minus_infinity(histories):
    scores = torch.randn(len(histories), 40)
    masked = mask_history(scores.clone(), histories)
    for row, history in enumerate(histories):
        seen = np.zeros(40, bool)
        seen[np.asarray(history, dtype=np.int64)] = True
        assert torch.isinf(masked[row, torch.from_numpy(seen)]).all()
        assert torch.equal(masked[row, torch.from_numpy(~seen)], scores[row, torch.from_numpy(~seen)])


@pytest.mark.slow
def test_scale_runs_the_pipeline_on_a_generated_log_and_writes_its_record(scale, tmp_path):
    out = tmp_path / "scale.json"
    scale.main(["--events", "30000", "--retrievers", "popularity", "--threads", "1", "--out", str(out)])
    import json

    record = json.loads(out.read_text())
    (size,) = record["sizes"]
    (run,) = size["runs"]
    assert size["events"] == 30_000 and run["retriever"] == "popularity"
    assert run["peak_rss_mb"] > 50 and run["stages_s"]["load"] > 0
    assert run["stats"]["interactions"] <= 30_000 and len(record["loadavg_after"]) == 3


def test_scale_preprocesses_a_generated_log_with_both_engines_alike(scale, tmp_path):
    pytest.importorskip("duckdb")
    out = tmp_path / "preprocess.json"
    scale.main(["--preprocess-events", "30000", "--threads", "1", "--out", str(out)])
    import json

    duck, memory = json.loads(out.read_text())["preprocess"]
    assert (duck["engine"], memory["engine"]) == ("duckdb", "memory")
    same = ("users", "items", "interactions", "test_rows")
    assert {k: duck[k] for k in same} == {k: memory[k] for k in same} and duck["interactions"] > 5_000
    assert duck["peak_rss_mb"] > 50 and duck["s_per_million_events"] > 0
