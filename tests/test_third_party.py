"""Real distributions outside palr, found only through their entry points, with their own config
files: one written for plugin API 2 runs unchanged, one for API 1 is skipped with its migration."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import palr_command, palr_run

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLES = [FIXTURES / "palr-example-plugin", FIXTURES / "palr-v1-trained-plugin"]


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> dict:
    """pip-install the example plugins into their own directory; return the env that sees them."""
    site = tmp_path_factory.mktemp("site")
    for example in EXAMPLES:
        source = tmp_path_factory.mktemp("src") / example.name  # building writes build/ beside the sources
        shutil.copytree(example, source)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(source)], check=True, capture_output=True)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_installed_plugin_is_listed_with_its_distribution(installed_example, tmp_path):
    out = palr_command("plugins", cwd=tmp_path, env=installed_example)
    assert out.returncode == 0, out.stderr
    assert ["retriever", "markov", "palr-example-plugin", "0.3.0", "palr_example"] in [
        line.split() for line in out.stdout.splitlines()]
    assert "pkg://palr_example.conf" in out.stdout


@pytest.mark.slow
def test_palr_run_uses_the_plugin_and_its_yaml(installed_example, tmp_path):
    palr_run("retriever=markov", "retriever.smoothing=0.1", f"hydra.run.dir={tmp_path}/run",
             tmp_path=tmp_path, env=installed_example)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["rows"][0]["model"].startswith("retriever: markov")
    assert "smoothing: 0.1" in (tmp_path / "run" / "config_resolved.yaml").read_text()


@pytest.mark.slow
def test_sweep_over_builtin_and_third_party_retrievers(installed_example, tmp_path):
    palr_run("-m", "retriever=popularity,markov", f"hydra.sweep.dir={tmp_path}/sweep",
             tmp_path=tmp_path, env=installed_example)
    rows = {json.loads(p.read_text())["rows"][0]["model"].split()[1]: json.loads(p.read_text())["rows"][0]
            for p in (tmp_path / "sweep").glob("*/metrics.json")}
    assert set(rows) == {"popularity", "markov"}
    # the synthetic data's sequel habit is exactly what a transition model captures
    assert rows["markov"]["NDCG@10"] > rows["popularity"]["NDCG@10"]
    # and the sweep's report says so with a paired test on the same 600 users
    with open(tmp_path / "sweep" / "report.csv") as f:
        report = {row["label"]: row for row in csv.DictReader(f)}
    assert set(report) == {"retriever=popularity", "retriever=markov"}
    assert report["retriever=markov"]["reference"] == "retriever=popularity · retriever"
    assert float(report["retriever=markov"]["ci_low"]) > 0 and float(report["retriever=markov"]["p_wilcoxon"]) < 0.01


def test_without_the_plugin_its_option_does_not_exist(tmp_path):
    proc = palr_run("retriever=markov", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "no retriever named 'markov'" in proc.stderr


@pytest.mark.slow
def test_an_api_1_plugin_is_skipped_with_one_line_naming_the_migration(installed_example, tmp_path):
    """palr 0.3 no longer loads plugin API 1 (palr_core.sequential is gone): the plugin is named as
    skipped, with what to change, and every other plugin and run goes on."""
    proc = palr_run("retriever=meanpool", tmp_path=tmp_path, env=installed_example, check=False)
    assert proc.returncode != 0 and "no retriever named 'meanpool'" in proc.stderr
    assert "docs/plugins.md#migrating-to-palr-03" in proc.stderr
    assert "Traceback" not in proc.stderr
