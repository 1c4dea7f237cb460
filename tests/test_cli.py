"""palr-run and palr plugins: composition, a full default run, sweeps and the errors users hit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from palr_core.cli import prepare_hydra, settings_from_config

REPO = Path(__file__).resolve().parents[1]


#: the components a CLI test uses unless it names its own: fast, so that tests of composition,
#: sweeps and errors do not train SASRec and an LLM every time (test_bare_default_* does that once)
FAST = {"retriever": "popularity", "profile": "none", "ranker": "identity"}


def palr_run(*args: str, tmp_path: Path, env: dict | None = None, check: bool = True, fast: bool = True):
    run_env = {**os.environ, "PALR_CACHE_DIR": str(tmp_path / "cache"), **(env or {})}
    if fast:
        args = (*args, *(f"{g}={o}" for g, o in FAST.items() if not any(a.startswith(f"{g}=") for a in args)))
    proc = subprocess.run([sys.executable, "-c", "from palr_core.cli import run; run()", *args],
                          cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"palr-run {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def yaml_options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.fixture
def hydra_compose(registry):
    prepare_hydra(registry)
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="palr_conf", version_base="1.3"):
        yield compose
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("group", ["dataset", "retriever", "profile", "ranker", "trainer"])
def test_every_yaml_option_composes_and_builds(hydra_compose, registry, group, tmp_path):
    from omegaconf import OmegaConf

    for option in yaml_options(group):
        node = OmegaConf.load(REPO / "conf" / group / f"{option}.yaml")
        # mandatory keys (``???``, e.g. the table dataset's file paths) get a placeholder value
        required = [f"{group}.{k}=placeholder" for k in node if OmegaConf.is_missing(node, k)]
        cfg = hydra_compose(config_name="config", overrides=[f"{group}={option}", *required])
        settings = settings_from_config(cfg, tmp_path)
        if group != "trainer":
            spec = getattr(settings, group)
            # the YAML's keys are accepted by the component's config dataclass
            from palr_core.plugins import validate_params
            validate_params(registry.get(group, spec.name), spec.params)


def test_default_config_is_the_documented_pipeline(hydra_compose, tmp_path):
    settings = settings_from_config(hydra_compose(config_name="config"), tmp_path)
    assert settings.dataset.name == "synthetic"
    assert (settings.retriever.name, settings.profile.name, settings.ranker.name) == ("sasrec", "keywords", "llama_lora")
    assert settings.ks == (5, 10, 20) and settings.candidates == 50 and settings.k_core == 5


@pytest.mark.slow
def test_bare_default_runs_the_full_palr_pipeline(tmp_path):
    palr_run(f"hydra.run.dir={tmp_path}/run", "eval.max_users=40", tmp_path=tmp_path, fast=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    models = [row["model"] for row in metrics["rows"]]
    assert models[0].startswith("retriever: sasrec") and "PALR v2 (llama_lora tiny" in models[1]
    assert "profile: keywords" in models[1] and metrics["users_evaluated"] == 40


@pytest.mark.slow
def test_a_run_writes_results_and_is_reproducible(tmp_path):
    runs = []
    for i in range(2):
        palr_run(f"hydra.run.dir={tmp_path}/run{i}", tmp_path=tmp_path)
        runs.append(json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()))
    assert runs[0]["rows"] == runs[1]["rows"]
    assert runs[0]["rows"][0]["model"].startswith("retriever:")
    assert {"HR@10", "NDCG@10", "HR@5", "NDCG@20"} <= set(runs[0]["rows"][0])
    run0 = tmp_path / "run0"
    assert (run0 / "config_resolved.yaml").exists() and (run0 / "results.md").exists()
    assert json.loads((run0 / "dataset_stats.json").read_text())["users"] == runs[0]["stats"]["users"]


@pytest.mark.slow
def test_multirun_writes_one_result_per_job(tmp_path):
    palr_run("-m", "eval.candidates=20,30", f"hydra.sweep.dir={tmp_path}/sweep", tmp_path=tmp_path)
    results = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(results) == 2
    assert [json.loads(p.read_text())["rows"][1]["model"].split("top-")[-1] for p in results] == ["20", "30"]


def test_unknown_option_lists_the_available_ones(tmp_path):
    proc = palr_run("retriever=populrity", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Could not find 'retriever/populrity'" in proc.stderr and "popularity" in proc.stderr


def test_misspelt_key_fails_at_composition(tmp_path):
    proc = palr_run("eval.candidatez=3", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "candidatez" in proc.stderr


def test_unknown_component_param_names_the_component_and_its_options(tmp_path):
    proc = palr_run("+dataset.userz=3", f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0
    assert "dataset 'synthetic': Key 'userz' not in 'SyntheticConfig'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_palr_plugins_lists_components_with_their_distribution():
    out = subprocess.run([sys.executable, "-c", "from palr_core.cli import main; main(['plugins'])"],
                         capture_output=True, text=True, check=True).stdout
    lines = [line.split() for line in out.splitlines()]
    assert ["retriever", "popularity", "palr", "0.1.0", "palr_popularity"] in lines
    assert ["dataset", "synthetic", "palr", "0.1.0", "palr_synthetic"] in lines
    assert "smollm2-135m  (palr 0.1.0)" in out  # language models, with where their files are


@pytest.mark.slow
def test_parallel_sweep_with_the_joblib_launcher(tmp_path):
    palr_run("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2",
             f"hydra.sweep.dir={tmp_path}/sweep", tmp_path=tmp_path)
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2
