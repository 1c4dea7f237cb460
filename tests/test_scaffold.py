"""``palr new-plugin``: the distribution it writes installs, passes its own tests and runs in palr-run."""

import json
import os
import subprocess
import sys

import pytest

from palr_core.cli import main
from palr_core.scaffold import plugin_files
from tests.test_cli import palr_run


@pytest.fixture(scope="module")
def installed_gru(tmp_path_factory) -> dict:
    """``palr new-plugin gru``, pip-installed into its own directory; the env that sees it."""
    root = tmp_path_factory.mktemp("scaffold")
    assert main(["new-plugin", "gru", "--directory", str(root)]) == 0
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(root / "palr-gru")], check=True, capture_output=True)
    return {"source": root / "palr-gru",
            "env": {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}}


def test_the_name_must_make_a_package(tmp_path, capsys):
    assert main(["new-plugin", "My-GRU", "--directory", str(tmp_path)]) == 2
    assert "use lower-case letters, digits and _" in capsys.readouterr().err
    assert main(["new-plugin", "gru", "--directory", str(tmp_path)]) == 0
    assert main(["new-plugin", "gru", "--directory", str(tmp_path)]) == 2  # never overwrites


def test_a_two_word_name_gets_a_class_name():
    files = plugin_files("my_gru")
    assert "class MyGruRetriever(TrainedRetriever):" in files["palr_my_gru/model.py"]
    assert 'register("my_gru", "palr_my_gru.model:MyGruRetriever", config=MyGruConfig)' in files["palr_my_gru/__init__.py"]


@pytest.mark.slow
def test_the_written_plugin_passes_its_own_tests(installed_gru):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=installed_gru["source"], env={**os.environ, **installed_gru["env"]},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


@pytest.mark.slow
def test_the_written_plugin_is_listed_and_runs_with_its_preset(installed_gru, tmp_path):
    out = subprocess.run([sys.executable, "-c", "from palr_core.cli import main; main(['plugins'])"],
                         env={**os.environ, **installed_gru["env"]}, capture_output=True, text=True, check=True)
    assert ["retriever", "gru", "palr-gru", "0.1.0", "palr_gru"] in [line.split() for line in out.stdout.splitlines()]
    palr_run("retriever=gru-large", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path,
             env=installed_gru["env"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["rows"][0]["model"].startswith("retriever: gru")
    resolved = (tmp_path / "run" / "config_resolved.yaml").read_text()
    assert "hidden: 128" in resolved and "layers: 2" in resolved
