"""``palr new-plugin``: each kind's distribution installs into a fresh venv, passes its own tests and runs in palr-run."""

import ast
import importlib
import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest

from palr_core import KINDS, load_registry
from palr_core.cli import main
from palr_core.scaffold import KINDS as SCAFFOLDS
from palr_core.scaffold import plugin_files
from palr_core.testing import tiny_data

#: one example name per kind (docs/plugins.md shows these)
EXAMPLES = {"retriever": "gru", "ranker": "transitions", "dataset": "clicks", "profile": "titlewords"}


def test_every_component_kind_has_a_scaffold():
    assert set(SCAFFOLDS) == set(KINDS) == set(EXAMPLES)


def test_the_name_must_make_a_package(tmp_path, capsys):
    assert main(["new-plugin", "My-GRU", "--directory", str(tmp_path)]) == 2
    assert "use lower-case letters, digits and _" in capsys.readouterr().err
    assert main(["new-plugin", "gru", "--directory", str(tmp_path)]) == 0
    assert main(["new-plugin", "gru", "--kind", "ranker", "--directory", str(tmp_path)]) == 2  # never overwrites
    assert main(["new-plugin", "class", "--kind", "ranker", "--directory", str(tmp_path)]) == 2
    assert "the option ranker=<name>" in capsys.readouterr().err


def test_an_unknown_kind_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["new-plugin", "gru", "--kind", "model", "--directory", str(tmp_path)])
    assert "invalid choice: 'model'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="choose one of retriever, ranker, dataset, profile"):
        plugin_files("gru", "model")


def test_a_two_word_name_gets_a_class_name():
    files = plugin_files("my_gru")
    assert "class MyGruRetriever(TrainedRetriever):" in files["palr_my_gru/model.py"]
    assert 'register("my_gru", "palr_my_gru.model:MyGruRetriever", config=MyGruConfig)' in files["palr_my_gru/__init__.py"]
    ranker = plugin_files("next_item", "ranker")
    assert 'register("next_item", NextItemRanker, config=NextItemConfig)' in ranker["palr_next_item/__init__.py"]


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_a_scaffold_names_its_entry_point_after_its_module_and_ships_its_presets(kind):
    name = EXAMPLES[kind]
    files = plugin_files(name, kind)
    for path, text in files.items():
        if path.endswith(".py"):
            ast.parse(text, filename=path)
    assert f'[project.entry-points.palr]\npalr_{name} = "palr_{name}"' in files["pyproject.toml"]
    assert f'"palr_{name}.conf" = ["*/*.yaml"]' in files["pyproject.toml"]
    assert f"def {KINDS[kind][1]}(register):" in files[f"palr_{name}/__init__.py"]
    presets = [p for p in files if p.startswith(f"palr_{name}/conf/{kind}/") and p.endswith(".yaml")]
    assert len(presets) == 1, presets
    assert f"tests/test_{name}.py" in files and f"palr_{name}/conf/__init__.py" in files


@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_a_scaffold_registers_without_a_complaint(kind, tmp_path, monkeypatch):
    """Imported from its folder (no install), the hook module registers the component: palr's
    checks of the class against its interface and config pass."""
    name = EXAMPLES[kind]
    assert main(["new-plugin", name, "--kind", kind, "--directory", str(tmp_path)]) == 0
    monkeypatch.syspath_prepend(str(tmp_path / f"palr-{name}"))
    try:
        plugin = importlib.import_module(f"palr_{name}")
        registry = load_registry(entry_points=[], extra_plugins=[(f"palr_{name}", plugin)])
    finally:  # the next import of palr_<name> finds it where it is installed, not in this folder
        for module in [m for m in sys.modules if m == f"palr_{name}" or m.startswith(f"palr_{name}.")]:
            del sys.modules[module]
    assert not registry.broken, registry.broken
    assert registry.names(kind) == [name] and registry.config_dirs == [f"pkg://palr_{name}.conf"]


# -- in a fresh venv: what a plugin author does, for all four kinds ---------------------------
def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> dict:
    """Every kind's ``palr new-plugin`` distribution, pip-installed (editable, no dependencies) into one
    fresh venv that takes torch, palr and pip from the host's site-packages, so nothing is downloaded."""
    root = tmp_path_factory.mktemp("scaffolds")
    for kind, name in EXAMPLES.items():
        assert main(["new-plugin", name, "--kind", kind, "--directory", str(root)]) == 0
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(root / "venv")],
                   check=True)
    python = str(venv_python(root / "venv"))
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    if sys.prefix != sys.base_prefix:  # the host is a venv itself: --system-site-packages means its base's
        (purelib / "host.pth").write_text("import site; " + "; ".join(f"site.addsitedir({p!r})"
                                                                         for p in site.getsitepackages()) + "\n")
    seen = subprocess.run([python, "-c", "import palr_core; print(palr_core.__file__)"], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert Path(seen) == Path(sys.modules["palr_core"].__file__), "the venv does not see the host's palr"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    *(f"--editable={root / f'palr-{name}'}" for name in EXAMPLES.values())],
                   check=True, capture_output=True)
    assert len(list(purelib.glob("__editable__*palr_*.pth"))) == len(EXAMPLES), "pip installed elsewhere"
    return {"root": root, "python": python}


@pytest.mark.slow
def test_every_kind_passes_its_own_tests_in_a_fresh_venv(venv):
    folders = [f"palr-{name}/tests" for name in EXAMPLES.values()]
    proc = subprocess.run([venv["python"], "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                           f"--basetemp={venv['root'] / 'pytest'}", *folders],
                          cwd=venv["root"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for kind, name in EXAMPLES.items():
        expected = plugin_files(name, kind)[f"tests/test_{name}.py"].count("\ndef test_")
        passed = len(re.findall(rf"^PASSED \S*test_{name}\.py::", proc.stdout, re.MULTILINE))
        assert passed == expected > 0, f"{kind}: {passed} of {expected} tests passed\n{proc.stdout}"


@pytest.mark.slow
def test_palr_plugins_in_the_venv_lists_every_kind(venv):
    proc = subprocess.run([venv["python"], "-c", "import sys; from palr_core.cli import main; sys.exit(main(['plugins']))"],
                          capture_output=True, text=True, check=True)
    rows = [line.split() for line in proc.stdout.splitlines()]
    for kind, name in EXAMPLES.items():
        assert [kind, name, f"palr-{name}", "0.1.0", f"palr_{name}"] in rows, proc.stdout
        assert f"pkg://palr_{name}.conf" in proc.stdout


@pytest.mark.slow
def test_the_four_scaffolds_run_together_with_their_presets(venv, tmp_path):
    data = tiny_data().data
    log = tmp_path / "log.tsv"
    log.write_text("user\titem\ttimestamp\ttitle\n" + "".join(
        f"u{user}\t{data.catalog.ids[item]}\t{time}\t{data.catalog.titles[item]}\n"
        for user, sequence in enumerate(data.sequences) for time, item in enumerate(sequence.tolist())))
    args = ["dataset=clicks-tsv", f"dataset.path={log}", "retriever=gru-large", "ranker=transitions-long",
            "profile=titlewords-list", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.run([venv["python"], "-c", "from palr_core.cli import run; run()", *args], cwd=tmp_path,
                          env={**os.environ, "PALR_CACHE_DIR": str(tmp_path / "cache")}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["rows"]
    assert rows[0]["model"].startswith("retriever: gru") and rows[1]["model"].startswith("ranker: transitions")
    resolved = (tmp_path / "run" / "config_resolved.yaml").read_text()
    for line in ("hidden: 128", "layers: 2", "window: 10", "style: list", "delimiter: \"\\t\""):
        assert line in resolved, (line, resolved)
