"""Guards on the shape of the code: who may import whom, a torch-free framework, docs that match the code."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from palr_core import hookspecs

REPO = Path(__file__).resolve().parents[1]
#: the built-in plugins' modules (plugins/<name>/ is installed as palr.plugins.<name>)
PLUGINS = sorted(f"palr.plugins.{p.name}" for p in (REPO / "plugins").iterdir() if (p / "__init__.py").is_file())


def imported_modules(path: Path) -> list[tuple[str, bool]]:
    """``(absolute module, at module level?)`` for every import in a file."""
    parts = path.relative_to(REPO).parts
    package = ".".join(("palr",) + parts[:-1] if parts[0] == "plugins" else parts[:-1])  # plugins/ is palr.plugins
    tree = ast.parse(path.read_text())
    top = set(tree.body)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node in top))
    return found


def test_the_framework_imports_neither_the_toolkit_nor_a_plugin():
    for path in sorted((REPO / "palr_core").glob("*.py")):
        for module, _ in imported_modules(path):
            assert not module.startswith(tuple(PLUGINS)), f"{path.name} imports the plugin {module}"
            assert not module.startswith("palr_core.kit"), f"{path.name} imports the toolkit ({module})"


def test_the_toolkit_imports_no_plugin():
    for path in sorted((REPO / "palr_core" / "kit").glob("*.py")):
        for module, _ in imported_modules(path):
            assert not module.startswith(tuple(PLUGINS)), f"kit/{path.name} imports the plugin {module}"


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_builtin_plugin_uses_only_palr_core_and_itself(plugin):
    for path in sorted((REPO / "plugins" / plugin.rsplit(".", 1)[1]).rglob("*.py")):
        for module, _ in imported_modules(path):
            other = ".".join(module.split(".")[:3])
            assert other == plugin or other not in PLUGINS, f"{path.relative_to(REPO)} imports {module}"


def test_the_framework_and_listing_plugins_import_no_training_stack():
    code = ("import sys, palr, palr_core, palr_core.cli, palr_core.pipeline, palr_core.testing, palr_core.kit, "
            "palr_core.api, palr_core.tracking, palr.report; "
            "from palr_core.plugins import load_registry; load_registry(); "
            "heavy = [m for m in ('torch', 'lightning', 'transformers', 'peft', 'pyarrow') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def _plugin_guide() -> str:
    """The plugin authors' guide: docs/plugins.md and the pages it splits into (docs/plugin-*.md)."""
    return "\n".join(page.read_text() for page in sorted((REPO / "docs").glob("plugin*.md")))


def test_every_hook_signature_is_in_the_plugin_guide():
    guide = _plugin_guide()
    for name, spec in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("register_"):
            assert f"{name}{inspect.signature(spec)}" in guide, f"docs/plugins.md does not show {name}"


#: the plugin docs/plugins.md shows for each kind: ``palr new-plugin NAME --kind KIND``
GUIDE_PLUGINS = {"retriever": "gru", "ranker": "transitions", "dataset": "clicks", "profile": "titlewords"}


@pytest.mark.parametrize("kind", list(GUIDE_PLUGINS))
def test_the_guide_shows_the_files_new_plugin_writes(kind):
    """docs/plugins.md shows every file `palr new-plugin NAME --kind KIND` writes but README.md and the
    empty ones, exactly, so the two cannot drift; a kind other than the retriever shows no
    pyproject.toml, whose text says it is the retriever's with the names changed."""
    from palr_core.scaffold import KINDS, plugin_files

    guide = _plugin_guide()
    blocks = dict(re.findall(r"```\w*\n# file: (\S+)\n(.*?)```", guide, re.DOTALL))
    name = GUIDE_PLUGINS[kind]
    files = plugin_files(name, kind)
    shown = [path for path, text in files.items() if text and path != "README.md"
             and (kind == "retriever" or path != "pyproject.toml")]
    for path in shown:
        assert blocks.get(path) == files[path], f"docs/plugins.md's {path} differs from palr new-plugin {name}'s"
    assert f"palr new-plugin {name}" + (f" --kind {kind}" if kind != "retriever" else "") in guide
    if kind != "retriever":
        renamed = plugin_files("gru")["pyproject.toml"].replace(
            "The gru retriever for palr (palr-run retriever=gru)",
            f"The {name} {KINDS[kind].noun} for palr (palr-run {kind}={name})").replace("gru", name)
        assert files["pyproject.toml"] == renamed


def test_the_kit_exports_resolve():
    import palr_core.kit as kit

    for name in kit.__all__:
        assert getattr(kit, name) is not None, name


def test_the_toolkit_holds_only_what_two_or_more_plugins_use():
    """A kit module serves at least two built-in plugins, directly or through another kit module;
    code with one user lives in that plugin (the kit is public API a third party may rely on)."""
    kit = {p.stem for p in (REPO / "palr_core" / "kit").glob("*.py") if p.stem != "__init__"}

    def kit_imports(path: Path) -> set[str]:
        found = set()
        for module, _ in imported_modules(path):
            parts = module.split(".")
            if parts[:2] == ["palr_core", "kit"] and len(parts) > 2 and parts[2] in kit:
                found.add(parts[2])
        return found

    within = {name: kit_imports(REPO / "palr_core" / "kit" / f"{name}.py") for name in kit}
    users: dict[str, set[str]] = {name: set() for name in kit}
    for plugin in PLUGINS:
        todo = set().union(*(kit_imports(p) for p in (REPO / "plugins" / plugin.rsplit(".", 1)[1]).rglob("*.py")))
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo |= within[name]
        for name in seen:
            users[name].add(plugin)
    lonely = {name: sorted(u) for name, u in users.items() if len(u) < 2}
    assert not lonely, f"kit modules with fewer than two plugins using them (move each into its plugin): {lonely}"


def test_the_framework_names_no_built_in_component_in_its_code():
    """palr_core's code (its strings and names, not its docstrings' examples) never picks a built-in
    by name: what a run uses comes from config and the registry. The toolkit, the authors' test kit
    (tiny data is the built-in ``synthetic``) and the scaffold's templates are not the framework."""
    from palr_core.plugins import load_registry

    registry = load_registry()
    words = {"none", "table", "llm", "keywords"}  # built-ins named by ordinary words, which palr_core also uses
    builtin = {reg.name for reg in registry.all() if reg.plugin.startswith("palr.plugins.")} - words
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, builtin))) + r")\b")
    outside = {"testing.py", "scaffold.py", "hookspecs.py"}  # hookspecs: where 0.3 moved kit modules (to name them)
    for path in sorted((REPO / "palr_core").glob("*.py")):
        if path.name in outside:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            text = (node.value if isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docstrings else node.id if isinstance(node, ast.Name) else None)
            found = pattern.search(text) if text else None
            assert not found, f"palr_core/{path.name}:{node.lineno} names the built-in {found.group(1)!r}"


def test_no_two_framework_modules_import_each_other_in_a_circle():
    """palr_core's modules (imports anywhere in a file, lazy ones included) form no cycle."""
    graph = {}
    for path in sorted((REPO / "palr_core").glob("*.py")):
        name = f"palr_core.{path.stem}" if path.stem != "__init__" else "palr_core"
        graph[name] = {m for m, _ in imported_modules(path) if m.startswith("palr_core.") and not
                       m.startswith("palr_core.kit") and m != name}
    graph = {name: {m for m in deps if m in graph} for name, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            assert state.get(dep) != 1, "import circle: " + " -> ".join([*trail, name, dep])
            if dep not in state:
                visit(dep, [*trail, name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
