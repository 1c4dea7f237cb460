"""The plugin contract: hooks, entry-point discovery, the API handshake, and a host that survives
foreign code (every misbehaving plugin is skipped and named, every other one goes on)."""

import inspect
import logging
import os
import subprocess
import sys
import types
from dataclasses import dataclass
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from palr_core import hookimpl, hookspecs
from palr_core.cli import check_component_choices, print_plugins
from palr_core.plugins import (
    ComponentConfigError,
    DuplicateComponentError,
    PluginError,
    UnknownComponentError,
    load_registry,
)


@dataclass
class ToyConfig:
    depth: int = 2
    label: str = "x"


class Toy:
    """Has every interface's methods, so it can be registered as any kind."""

    def __init__(self, depth: int = 2, label: str = "x"):
        self.depth, self.label = depth, label

    def load(self, context): ...
    def fit(self, data, context): ...
    def retrieve(self, histories, k): ...
    def generate(self, users, histories, context): ...
    def rank(self, requests, context): ...


def plugin(**hooks):
    """A plugin module whose hookimpls register Toy under the given names."""
    module = types.ModuleType("toy_plugin")
    for hook, name in hooks.items():
        def impl(register, _name=name):
            register(_name, Toy, config=ToyConfig)
        impl.__name__ = hook
        setattr(module, hook, hookimpl(impl))
    return module


def with_hook(hook: str, function):
    """A plugin module with one hook implementation."""
    function.__name__ = hook
    module = types.ModuleType(f"plugin_with_{hook}")
    setattr(module, hook, hookimpl(function))
    return module


OK = ("ok", plugin(register_retrievers="fine"))


def registry_with(*plugins):
    return load_registry(entry_points=[], extra_plugins=[*plugins, OK])


def assert_skipped(reg, name: str, *words: str) -> str:
    """The plugin is recorded as skipped with a message holding ``words``; the other plugin works."""
    (broken,) = [b for b in reg.broken if b.plugin == name]
    for word in words:
        assert word in broken.error, broken.error
    assert reg.names("retriever") == ["fine"] and reg.build("retriever", "fine").depth == 2
    return broken.error


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
    mod = with_hook("register_config_dirs", lambda register: register("pkg://toy.conf"))
    reg = load_registry(entry_points=[], extra_plugins=[("toy", mod)])
    assert reg.config_dirs == ["pkg://toy.conf"]


def test_hook_register_language_models():
    locate = lambda: "/models/toy"  # noqa: E731
    mod = with_hook("register_language_models", lambda register: register("toy-lm", locate, "a toy"))
    reg = load_registry(entry_points=[], extra_plugins=[("toy", mod)])
    lm = reg.language_models["toy-lm"]
    assert (lm.locate, lm.description, lm.plugin) == (locate, "a toy", "toy")
    again = with_hook("register_language_models", lambda register: register("toy-lm", locate))
    twice = load_registry(entry_points=[], extra_plugins=[("toy", mod), ("again", again)])
    assert "toy-lm" not in twice.language_models and "'toy-lm' is registered twice" in twice.model_conflicts()[0]


def test_builtins_are_found_through_entry_points(registry):
    assert {"synthetic", "movielens", "amazon", "table"} <= set(registry.names("dataset"))
    assert {"popularity", "sasrec", "bert4rec", "lightgcn"} <= set(registry.names("retriever"))
    assert {"identity", "llama_lora"} <= set(registry.names("ranker"))
    assert {"none", "keywords", "llm"} <= set(registry.names("profile"))
    pop = registry.get("retriever", "popularity")
    assert (pop.distribution, pop.plugin, pop.api) == ("palr", "palr.plugins.popularity", hookspecs.PLUGIN_API)
    assert not registry.broken and not registry.conflicts


def test_listing_plugins_imports_no_training_stack():
    code = ("import sys; from palr_core.cli import main; main(['plugins']); "
            "heavy = [m for m in ('torch', 'lightning', 'transformers', 'pyarrow') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_unknown_name_lists_the_available_ones_and_a_close_match():
    reg = load_registry(entry_points=[], extra_plugins=[("a", plugin(register_retrievers="alpha"))])
    with pytest.raises(UnknownComponentError, match=r"no retriever named 'alpah' \(did you mean 'alpha'\?\); available: alpha"):
        reg.get("retriever", "alpah")


def test_one_name_from_two_plugins_is_a_conflict_naming_both_and_the_rest_goes_on(capsys):
    reg = registry_with(("first", plugin(register_rankers="same")), ("second", plugin(register_rankers="same")))
    with pytest.raises(DuplicateComponentError, match=r"'same' is registered twice: by first .* and by second"):
        reg.get("ranker", "same")
    assert reg.build("retriever", "fine").depth == 2
    print_plugins(reg)  # palr plugins itself shows the conflict instead of crashing
    assert "CONFLICTS" in capsys.readouterr().out


def test_a_plugin_that_fails_to_import_is_named_when_its_option_is_asked_for(caplog):
    bad = EntryPoint(name="palr_broken", value="palr_no_such_module_xyz", group="palr")
    with caplog.at_level(logging.WARNING, logger="palr"):
        reg = load_registry(entry_points=[bad], extra_plugins=[OK])
    assert_skipped(reg, "palr_broken", "import failed", "ModuleNotFoundError")
    with pytest.raises(PluginError, match="plugins that failed to load: palr_broken"):
        check_component_choices(["retriever=missing"], reg)  # before Hydra's "Could not find"
    assert "palr_broken" in caplog.text


def test_a_missing_dependency_says_what_to_install_and_stays_quiet_until_asked(tmp_path, monkeypatch, caplog):
    (tmp_path / "palr_needs_dep.py").write_text("import palr_dependency_not_installed_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = EntryPoint(name="palr_needs_dep", value="palr_needs_dep", group="palr")
    with caplog.at_level(logging.WARNING, logger="palr"):
        reg = load_registry(entry_points=[entry], extra_plugins=[OK])
    error = assert_skipped(reg, "palr_needs_dep", "pip install palr_dependency_not_installed_xyz")
    assert reg.broken[0].missing == "palr_dependency_not_installed_xyz" and "needs the module" in error
    assert "palr_needs_dep" not in caplog.text  # no warning on every command


def test_a_hookimpl_with_an_argument_the_spec_lacks_is_skipped():
    mod = with_hook("register_retrievers", lambda register, registry: None)
    error = assert_skipped(registry_with(("extra_arg", mod)), "extra_arg", "registry")
    assert "register_retrievers(register)" in error  # the real signature


def test_a_misspelt_hookimpl_is_reported_not_ignored():
    mod = with_hook("register_retriever", lambda register: None)
    assert_skipped(registry_with(("typo", mod)), "typo", "unknown hook 'register_retriever'")


def test_a_hook_that_raises_skips_the_whole_plugin():
    def register_retrievers(register):
        register("half", Toy)
        raise RuntimeError("boom")

    assert_skipped(registry_with(("explodes", with_hook("register_retrievers", register_retrievers))),
                   "explodes", "raised RuntimeError: boom")


def test_swapped_register_arguments_are_named():
    mod = with_hook("register_retrievers", lambda register: register(Toy, "mine"))
    assert_skipped(registry_with(("swapped", mod)), "swapped", "name must come first", "swapped?")


def test_a_class_without_the_interface_methods_is_refused_at_registration():
    class Half:
        def fit(self, data, context): ...

    mod = with_hook("register_retrievers", lambda register: register("half", Half))
    assert_skipped(registry_with(("half", mod)), "half", "does not implement palr_core.Retriever", "retrieve()")


def test_config_fields_the_class_does_not_accept_are_refused_at_registration():
    class NoArgs(Toy):
        def __init__(self):
            pass

    mod = with_hook("register_retrievers", lambda register: register("noargs", NoArgs, config=ToyConfig))
    assert_skipped(registry_with(("noargs", mod)), "noargs", "does not accept the config field(s) depth, label")


def test_a_component_without_a_config_gets_one_from_its_signature():
    mod = with_hook("register_retrievers", lambda register: register("bare", Toy))
    reg = registry_with(("bare", mod))
    assert reg.build("retriever", "bare", {"depth": 7}).depth == 7
    with pytest.raises(ComponentConfigError, match=r"has no option retriever.dept \(did you mean retriever.depth\?\)"):
        reg.build("retriever", "bare", {"dept": 7})


def test_a_class_given_as_text_is_imported_on_first_use_and_checked_then():
    mod = with_hook("register_retrievers", lambda register: (
        register("lazy", "palr.plugins.popularity.retriever:PopularityRetriever"),
        register("gone", "palr_no_such_module_xyz:Thing")))
    reg = registry_with(("lazy", mod))
    assert isinstance(reg.get("retriever", "lazy").cls, str)  # not imported by listing
    assert type(reg.build("retriever", "lazy")).__name__ == "PopularityRetriever"
    with pytest.raises(PluginError, match="retriever 'gone' from lazy local .*cannot import 'palr_no_such_module_xyz:Thing'"):
        reg.build("retriever", "gone")


@pytest.mark.parametrize("api, words", [
    (99, ["written for palr plugin API 99", "upgrade palr"]),
    (0, ["written for palr plugin API 0", "no longer loads", "API 1:", "API 2:"]),
    ("2", ["PALR_PLUGIN_API must be an integer"])])
def test_the_api_handshake_skips_an_unsupported_plugin_saying_what_changed(api, words, monkeypatch):
    monkeypatch.setattr(hookspecs, "MIN_PLUGIN_API", 1)
    mod = plugin(register_retrievers="versioned")
    mod.PALR_PLUGIN_API = api
    assert_skipped(registry_with(("versioned", mod)), "versioned", *words)


def test_a_plugin_that_states_no_api_is_taken_as_api_1():
    reg = registry_with(("old", plugin(register_datasets="old")))
    assert reg.get("dataset", "old").api == 1


def test_params_are_validated_against_the_config_dataclass():
    reg = load_registry(entry_points=[], extra_plugins=[("toy", plugin(register_retrievers="toy"))])
    built = reg.build("retriever", "toy", {"depth": 5})
    assert (built.depth, built.label) == (5, "x")
    with pytest.raises(ComponentConfigError, match=r"retriever 'toy' has no option retriever.deptj .*its options: depth, label"):
        reg.build("retriever", "toy", {"deptj": 5})
    with pytest.raises(ComponentConfigError, match=r"retriever 'toy': retriever.depth: .*deep"):
        reg.build("retriever", "toy", {"depth": "deep"})


def test_nested_options_are_checked_with_their_path(registry):
    with pytest.raises(ComponentConfigError, match=r"has no option ranker.lora.rr \(did you mean ranker.lora.r\?\)"):
        registry.build("ranker", "llama_lora", {"lora": {"rr": 4}})


def test_a_required_option_says_how_to_give_it(registry):
    with pytest.raises(ComponentConfigError, match=r"dataset 'movielens' needs dataset.variant .*dataset.variant=<value>"):
        registry.build("dataset", "movielens", {})


def test_registry_instances_do_not_share_state(caplog):
    a = load_registry(entry_points=[], extra_plugins=[("a", plugin(register_rankers="a"))])
    b = load_registry(entry_points=[])
    assert a.names("ranker") == ["a"] and b.names("ranker") == []
    assert not caplog.text


def test_palr_trace_prints_every_hook_call():
    proc = subprocess.run([sys.executable, "-c", "from palr_core.cli import main; main(['plugins'])"],
                          env={**os.environ, "PALR_TRACE": "1"}, capture_output=True, text=True, check=True)
    assert "register_retrievers" in proc.stderr and "register_datasets" in proc.stderr


def test_a_config_field_called_name_is_refused():
    @dataclass
    class Named:
        name: str = "x"

    class WithName(Toy):
        def __init__(self, name: str = "x"):
            pass

    mod = with_hook("register_retrievers", lambda register: register("named", WithName, config=Named))
    assert_skipped(registry_with(("named", mod)), "named", "has a field 'name', which palr reserves")


def test_an_api_1_dataset_is_loaded_without_the_context(tmp_path):
    """Plugin API 1's Dataset.load() took no argument: palr still calls it that way."""
    from palr_core import PalrConfig
    from palr_core.pipeline import run_pipeline
    from palr_core.testing import tiny_data

    data = tiny_data()

    class OldDataset:
        def load(self):
            from palr_core import InteractionLog, RawDataset

            users = [u for u, seq in enumerate(data.data.sequences) for _ in seq]
            items = [int(i) for seq in data.data.sequences for i in seq]
            log = InteractionLog(np.array(users), np.array(items), np.arange(len(users)))
            catalog = data.catalog
            return RawDataset(log, type(catalog)(ids=list(range(len(catalog))), titles=catalog.titles), name="old")

    old = with_hook("register_datasets", lambda register: register("old", OldDataset))
    reg = load_registry(extra_plugins=[("old", old)])
    assert reg.get("dataset", "old").api == 1
    config = PalrConfig(dataset={"name": "old"}, retriever={"name": "popularity"}, profile={"name": "none"},
                        ranker={"name": "identity"}, cache_dir=str(tmp_path / "cache"))
    result = run_pipeline(config, reg, tmp_path / "run")
    assert result.stats["users"] == len(data.data.sequences)
