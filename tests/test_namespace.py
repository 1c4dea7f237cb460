"""Built-ins live in palr's namespace: a third party's ``palr_<name>`` never hides one."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.test_cli import palr_command


def installed(site: Path, module: str, source: str, dist: str = "palr-gru4rec") -> dict:
    """``module`` installed as the distribution ``dist`` (a dist-info with a ``palr`` entry point named
    after the module, as ``palr new-plugin`` writes it); the environment that sees it."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[palr]\n{module} = {module}\n")
    (site / module).mkdir()
    (site / module / "__init__.py").write_text(source)
    return {**os.environ, "PYTHONPATH": str(site)}


def test_a_third_party_named_like_a_built_in_is_listed_beside_it(tmp_path):
    """A GRU4Rec distribution written when palr had none (top-level module ``palr_gru4rec``, as palr
    0.2's built-in was called) and the built-in ``gru4rec`` are both there."""
    env = installed(tmp_path / "site", "palr_gru4rec", (
        "from palr_core import hookimpl\nPALR_PLUGIN_API = 3\n\n"
        "class GRU4RecPlus:\n"
        "    def fit(self, data, context):\n        pass\n\n"
        "    def retrieve(self, histories, k):\n        raise NotImplementedError\n\n"
        "@hookimpl\ndef register_retrievers(register):\n    register('gru4rec-plus', GRU4RecPlus)\n"))
    proc = palr_command("plugins", "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    listed = {(c["name"], c["distribution"], c["plugin"]) for c in json.loads(out)["components"]}
    assert ("gru4rec", "palr", "palr.plugins.gru4rec") in listed
    assert ("gru4rec-plus", "palr-gru4rec", "palr_gru4rec") in listed


def test_built_ins_register_through_entry_points_named_after_their_modules():
    from importlib.metadata import entry_points

    ours = [ep for ep in entry_points(group="palr") if ep.dist and ep.dist.name == "palr"]
    assert ours and all(ep.name == ep.value and ep.value.startswith("palr.plugins.") for ep in ours)
