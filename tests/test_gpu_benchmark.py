"""``benchmarks/gpu.py`` stays runnable without a GPU: its ``--dry`` mode runs the same stages
(SASRec, the LLM's fine-tuning and ranking, DDP through ``trainer=ddp``) on the CPU at toy size."""

import importlib.util
import json
from pathlib import Path

import pytest

from .test_cli import palr_run

REPO = Path(__file__).resolve().parents[1]


def _gpu_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_dry_mode_runs_every_stage_and_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PALR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "gpu.json"
    assert _gpu_benchmark().main(["--dry", "--out", str(out)]) == 0
    stages = {s["stage"]: s for s in json.loads(out.read_text())["stages"]}
    assert set(stages) == {"sasrec", "llm", "ddp"} and not any("failed" in s for s in stages.values())
    assert stages["llm"]["fine_tuning_tokens_per_s"] > 0 and stages["llm"]["ranked_users_per_s"] > 0
    ddp = stages["ddp"]["training"]["retriever"]
    assert ddp["epochs"] == 2 and ddp["stopped_by"] == "max_epochs"
    assert all(row["HR@10"] > 0 for row in stages["ddp"]["rows"].values())


def test_without_a_gpu_the_real_mode_says_so(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit):
        _gpu_benchmark().main([])
    assert "no CUDA GPU is visible" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed_stage_2"])
def test_a_strategy_that_reruns_the_command_is_refused_before_any_work(tmp_path, strategy):
    proc = palr_run(f"trainer.strategy={strategy}", "trainer.devices=2", f"hydra.run.dir={tmp_path}/run",
                    tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and f"trainer.strategy={strategy} starts its other processes" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "dataset_stats.json").exists()
