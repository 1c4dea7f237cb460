"""The plugin contract: hooks, entry-point discovery, registry errors, parameter validation."""

import inspect
import sys
import types
import warnings
from dataclasses import dataclass
from importlib.metadata import EntryPoint

import pytest

from palr_core import hookimpl, hookspecs
from palr_core.plugins import (
    ComponentConfigError,
    DuplicateComponentError,
    UnknownComponentError,
    load_registry,
)


@dataclass
class ToyConfig:
    depth: int = 2
    label: str = "x"


class Toy:
    def __init__(self, depth: int = 2, label: str = "x"):
        self.depth, self.label = depth, label


def plugin(**hooks):
    """A plugin object whose hookimpls register Toy under the given names."""
    module = types.SimpleNamespace()
    for hook, name in hooks.items():
        def impl(register, _name=name):
            register(_name, Toy, config=ToyConfig)
        impl.__name__ = hook
        setattr(module, hook, hookimpl(impl))
    return module


def no_entry_points():
    return load_registry(entry_points=[])


HOOKS = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]


def test_every_hook_is_documented_and_tested():
    tested = {name for name, _ in inspect.getmembers(sys.modules[__name__], inspect.isfunction)}
    for name in HOOKS:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hook {name} has no docstring"
        assert f"test_hook_{name}" in tested, f"hook {name} has no test_hook_{name}"


@pytest.mark.parametrize("hook, kind", [
    ("register_datasets", "dataset"), ("register_retrievers", "retriever"),
    ("register_profile_generators", "profile"), ("register_rankers", "ranker")])
def test_component_hooks_register_by_kind(hook, kind):
    reg = load_registry(entry_points=[], extra_plugins=[("toy", plugin(**{hook: "toy"}))])
    assert reg.names(kind) == ["toy"]
    assert reg.get(kind, "toy").cls is Toy


def test_hook_register_datasets():
    test_component_hooks_register_by_kind("register_datasets", "dataset")


def test_hook_register_retrievers():
    test_component_hooks_register_by_kind("register_retrievers", "retriever")


def test_hook_register_profile_generators():
    test_component_hooks_register_by_kind("register_profile_generators", "profile")


def test_hook_register_rankers():
    test_component_hooks_register_by_kind("register_rankers", "ranker")


def test_hook_register_config_dirs():
    mod = types.SimpleNamespace(register_config_dirs=hookimpl(lambda register: register("pkg://toy.conf")))
    reg = load_registry(entry_points=[], extra_plugins=[("toy", mod)])
    assert reg.config_dirs == ["pkg://toy.conf"]


def test_hook_register_language_models():
    locate = lambda: "/models/toy"  # noqa: E731
    mod = types.SimpleNamespace(register_language_models=hookimpl(lambda register: register("toy-lm", locate, "a toy")))
    reg = load_registry(entry_points=[], extra_plugins=[("toy", mod)])
    lm = reg.language_models["toy-lm"]
    assert (lm.locate, lm.description, lm.plugin) == (locate, "a toy", "toy")
    with pytest.raises(DuplicateComponentError, match="toy-lm"):
        load_registry(entry_points=[], extra_plugins=[("toy", mod), ("again", types.SimpleNamespace(
            register_language_models=hookimpl(lambda register: register("toy-lm", locate))))])


def test_builtins_are_found_through_entry_points(registry):
    assert {"synthetic"} <= set(registry.names("dataset"))
    assert {"popularity"} <= set(registry.names("retriever"))
    assert {"identity"} <= set(registry.names("ranker"))
    assert {"none"} <= set(registry.names("profile"))
    pop = registry.get("retriever", "popularity")
    assert (pop.distribution, pop.plugin) == ("palr", "palr_popularity")


def test_unknown_name_lists_the_available_ones():
    reg = load_registry(entry_points=[], extra_plugins=[("a", plugin(register_retrievers="alpha"))])
    with pytest.raises(UnknownComponentError, match=r"no retriever named 'beta'; available: alpha"):
        reg.get("retriever", "beta")


def test_one_name_from_two_plugins_fails_naming_both():
    plugins = [("first", plugin(register_rankers="same")), ("second", plugin(register_rankers="same"))]
    with pytest.raises(DuplicateComponentError, match=r"'same' is registered twice: by first .* and by second"):
        load_registry(entry_points=[], extra_plugins=plugins)


def test_a_plugin_that_fails_to_import_is_reported_and_skipped():
    bad = EntryPoint(name="palr_broken", value="palr_no_such_module_xyz", group="palr")
    with pytest.warns(UserWarning, match="'palr_broken'.*failed to load"):
        reg = load_registry(entry_points=[bad], extra_plugins=[("ok", plugin(register_retrievers="ok"))])
    assert reg.names("retriever") == ["ok"]  # unrelated components still work
    assert reg.broken[0].plugin == "palr_broken" and "ModuleNotFoundError" in reg.broken[0].error
    with pytest.raises(UnknownComponentError, match="plugins that failed to load: palr_broken"):
        reg.get("retriever", "missing")


def test_a_hook_that_raises_is_skipped_with_its_partial_registrations_undone():
    def register_retrievers(register):
        register("half", Toy)
        raise RuntimeError("boom")

    mod = types.SimpleNamespace(register_retrievers=hookimpl(register_retrievers))
    with pytest.warns(UserWarning, match="raised RuntimeError: boom"):
        reg = load_registry(entry_points=[], extra_plugins=[("explodes", mod)])
    assert reg.names("retriever") == [] and reg.broken[0].plugin == "explodes"


def test_a_misspelt_hookimpl_is_reported_not_ignored():
    mod = types.SimpleNamespace(register_retriever=hookimpl(lambda register: None))
    with pytest.warns(UserWarning, match="unknown hook 'register_retriever'"):
        reg = load_registry(entry_points=[], extra_plugins=[("typo", mod), ("ok", plugin(register_rankers="r"))])
    assert reg.broken[0].plugin == "typo" and reg.names("ranker") == ["r"]


def test_params_are_validated_against_the_config_dataclass():
    reg = load_registry(entry_points=[], extra_plugins=[("toy", plugin(register_retrievers="toy"))])
    built = reg.build("retriever", "toy", {"depth": 5})
    assert (built.depth, built.label) == (5, "x")
    with pytest.raises(ComponentConfigError, match=r"retriever 'toy':.*deptj.*options of ToyConfig: depth, label"):
        reg.build("retriever", "toy", {"deptj": 5})
    with pytest.raises(ComponentConfigError, match=r"retriever 'toy':.*depth"):
        reg.build("retriever", "toy", {"depth": "deep"})


def test_registry_instances_do_not_share_state():
    a = load_registry(entry_points=[], extra_plugins=[("a", plugin(register_rankers="a"))])
    b = no_entry_points()
    assert a.names("ranker") == ["a"] and b.names("ranker") == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        no_entry_points()


def test_palr_core_imports_no_plugin():
    import re
    from pathlib import Path

    core = Path(__file__).resolve().parents[1] / "palr_core"
    for path in core.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+(palr_\w+)", path.read_text(), re.MULTILINE)
        assert set(imports) <= {"palr_core"}, f"{path.name} imports a plugin: {imports}"
