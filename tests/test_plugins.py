"""The plugin contract: hooks, entry-point discovery, the API handshake, the optional methods, and a
host that survives foreign code (every misbehaving plugin is skipped and named, every other one goes
on) and refuses a plugin author's mistakes by name."""

import inspect
import json
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
    """A plugin module (current plugin API) whose hookimpls register Toy under the given names."""
    module = types.ModuleType("toy_plugin")
    module.PALR_PLUGIN_API = hookspecs.PLUGIN_API
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
    module.PALR_PLUGIN_API = hookspecs.PLUGIN_API
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
    """Loading the registry and printing it import no class given as "module:Class" (palr-run stays
    fast); only the palr plugins command imports them all, to check them (Registry.verify)."""
    code = ("import sys; from palr_core.plugins import load_registry; from palr_core.cli import print_plugins; "
            "print_plugins(load_registry()); "
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


def test_a_misspelt_hookimpl_is_reported_with_the_hook_it_meant():
    mod = with_hook("register_retriever", lambda register: None)
    assert_skipped(registry_with(("typo", mod)), "typo", "unknown hook 'register_retriever'",
                   "did you mean register_retrievers?")


def test_a_hook_that_raises_skips_the_whole_plugin():
    def register_retrievers(register):
        register("half", Toy)
        raise RuntimeError("boom")

    assert_skipped(registry_with(("explodes", with_hook("register_retrievers", register_retrievers))),
                   "explodes", "raised RuntimeError: boom")


@pytest.mark.parametrize("cls", [Toy, "palr.plugins.popularity.retriever:PopularityRetriever"])
def test_swapped_register_arguments_are_named(cls):
    """register(cls, name), with the class itself or its "module:Class" path."""
    mod = with_hook("register_retrievers", lambda register: register(cls, "mine"))
    error = assert_skipped(registry_with(("swapped", mod)), "swapped", "the arguments are swapped",
                           "call register('mine', ")
    assert "not usable as a config option" not in error


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
    (0, ["written for palr plugin API 0", "no longer loads", "PALR_PLUGIN_API = 3", "docs/plugins.md#migrating"]),
    ("2", ["PALR_PLUGIN_API must be an integer"])])
def test_the_api_handshake_skips_an_unsupported_plugin_saying_what_to_do(api, words):
    mod = plugin(register_retrievers="versioned")
    mod.PALR_PLUGIN_API = api
    assert_skipped(registry_with(("versioned", mod)), "versioned", *words)


@pytest.mark.parametrize("stated", [None, 1])
def test_an_api_1_plugin_is_skipped_with_one_line_naming_the_migration(stated):
    old = plugin(register_datasets="old")
    if stated is None:
        del old.PALR_PLUGIN_API  # written before the handshake: API 1
    else:
        old.PALR_PLUGIN_API = stated
    error = assert_skipped(registry_with(("old", old)), "old", "plugin API 1", "no longer loads",
                           "Dataset.load takes the RunContext", "state PALR_PLUGIN_API = 3",
                           "docs/plugins.md#migrating-to-palr-03")
    assert "\n" not in error and len(error) < 300


def test_an_api_2_plugin_is_loaded_unchanged():
    assert (hookspecs.MIN_PLUGIN_API, hookspecs.PLUGIN_API) == (2, 3)
    mod = plugin(register_retrievers="two")
    mod.PALR_PLUGIN_API = 2
    reg = registry_with(("two", mod))
    assert reg.get("retriever", "two").api == 2 and reg.build("retriever", "two", {"depth": 4}).depth == 4


def write_module(tmp_path, monkeypatch, name: str, source: str) -> EntryPoint:
    """A plugin module on sys.path, and the entry point that names it."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    return EntryPoint(name=name, value=name, group="palr")


@pytest.mark.parametrize("source, words", [
    ("import palr_core.sequential\n", ["palr_core.sequential was renamed palr_core.kit.retrievers"]),
    ("from palr_core import TrainedRetriever\n",
     ["palr_core.TrainedRetriever moved to palr_core.kit.retrievers", "import it from palr_core.kit.retrievers"]),
    ("raise ModuleNotFoundError(\"No module named 'palr_core.kit.prompts'\", name='palr_core.kit.prompts')\n",
     ["palr_core.kit.prompts moved into the llama_lora plugin in palr 0.3 (its only user): copy what you need"]),
    ("raise ImportError(\"cannot import name 'release_memory' from 'palr_core.kit.llm'\", name='palr_core.kit.llm')\n",
     ["palr_core.kit.llm.release_memory moved into the llama_lora plugin"]),
    ("raise ModuleNotFoundError(\"No module named 'palr_core.kit.columns'\", name='palr_core.kit.columns')\n",
     ["palr_core.kit.columns moved into the table plugin"])])
def test_a_plugin_importing_what_palr_0_3_moved_is_skipped_with_the_migration(source, words, tmp_path, monkeypatch):
    entry = write_module(tmp_path, monkeypatch, "palr_moved_import", source)
    reg = load_registry(entry_points=[entry], extra_plugins=[OK])
    error = assert_skipped(reg, "palr_moved_import", "import failed: ", *words, "docs/plugins.md#migrating-to-palr-03")
    assert "\n" not in error and "pip install" not in error


def test_a_plugin_that_registered_nothing_is_named_with_a_hint():
    bare = types.ModuleType("forgot_hookimpl")
    bare.PALR_PLUGIN_API = 3
    bare.register_retrievers = lambda register: register("never", Toy)  # no @hookimpl
    error = assert_skipped(registry_with(("forgot", bare)), "forgot",
                           "registered nothing: are its functions decorated with @palr_core.hookimpl?")
    assert "register_retrievers()" in error


def test_palr_plugins_shows_a_plugin_that_registered_nothing(capsys):
    empty = types.ModuleType("empty")
    empty.PALR_PLUGIN_API = 3
    print_plugins(registry_with(("empty", empty)))
    assert "empty (empty): registered nothing: are its functions decorated with @palr_core.hookimpl?" in (
        capsys.readouterr().out)


def test_verify_refuses_bad_class_paths_and_config_fields_that_listing_left_alone(tmp_path, monkeypatch, capsys):
    """palr plugins (Registry.verify) imports every "module:Class": a bad module, a missing class, a
    config field the class does not accept, a missing dependency; the good component stays."""
    write_module(tmp_path, monkeypatch, "palr_needs_dep_cls", "import palr_dependency_not_installed_xyz\n")

    def register_retrievers(register):
        register("good", "palr.plugins.popularity.retriever:PopularityRetriever")
        register("nomodule", "palr_no_such_module_xyz:Thing")
        register("noclass", "palr.plugins.popularity.retriever:NoSuchRetriever")
        register("refused", "palr.plugins.popularity.retriever:PopularityRetriever", config=ToyConfig)
        register("needsdep", "palr_needs_dep_cls:Thing")

    reg = registry_with(("paths", with_hook("register_retrievers", register_retrievers)))
    assert {"nomodule", "noclass", "refused", "needsdep"} <= set(reg.names("retriever"))  # listing: lazy
    found = {b.error.split("'")[1]: b for b in reg.verify()}
    assert set(found) == {"nomodule", "noclass", "refused", "needsdep"}
    assert "cannot import 'palr_no_such_module_xyz:Thing'" in found["nomodule"].error
    assert "NoSuchRetriever" in found["noclass"].error
    assert "does not accept the config field(s) depth, label of ToyConfig" in found["refused"].error
    assert found["needsdep"].missing == "palr_dependency_not_installed_xyz"
    assert "pip install palr_dependency_not_installed_xyz" in found["needsdep"].error
    assert reg.names("retriever") == ["fine", "good"] and reg.build("retriever", "good") is not None
    print_plugins(reg)
    out = capsys.readouterr().out
    assert "SKIPPED" in out and "retriever 'refused' from paths local" in out


def test_verify_refuses_a_config_hydra_cannot_hold():
    @dataclass
    class Odd:
        depth: object = None  # an arbitrary class: OmegaConf cannot type it

    class OddToy(Toy):
        def __init__(self, depth=None):
            pass

    reg = registry_with(("odd", with_hook("register_retrievers", lambda register: register("odd", OddToy, config=Odd))))
    (problem,) = reg.verify()
    assert "retriever 'odd'" in problem.error and "its config Odd is not a dataclass Hydra can hold" in problem.error


def test_palr_plugins_verifies_every_builtin(registry):
    """What the palr plugins command does to the installed plugins: every built-in imports and passes."""
    reg = load_registry()
    assert reg.verify() == [] and reg.names("retriever") == registry.names("retriever")


def test_the_optional_methods_are_runtime_checkable_protocols():
    from palr_core import Checkable, Labelled, Persistent, Summarised, Tunable

    class Full(Toy):
        label = "full"
        fit_summary: dict = {}

        def check(self, context): ...
        def tune(self, requests, targets, context): return {}
        def is_trained(self, context): return True

    full, bare = Full(), Toy()
    for protocol in (Checkable, Tunable, Summarised, Labelled, Persistent):
        assert isinstance(full, protocol), protocol
        assert protocol.__doc__ and "palr" in (protocol.__doc__ + str(vars(protocol))).lower()
    assert not any(isinstance(bare, p) for p in (Checkable, Tunable, Summarised, Persistent))
    assert isinstance(bare, Labelled)  # Toy sets label in __init__: an attribute is all it takes


@pytest.mark.parametrize("method, words", [
    ("def tune(self, requests, context): return {}", ["Toy2.tune(self, requests, context)",
                                                       "cannot be called as tune(requests, targets, context)"]),
    ("def check(self): pass", ["cannot be called as check(context)", "palr_core.Checkable"]),
    ("def label(self): return 'x'", ["Toy2.label is a method, but palr reads label as an attribute"]),
    ("def fit_summary(self): return {}", ["fit_summary is a method", "make it a property"]),
    ("def rank(self, requests): return []", ["cannot be called as rank(requests, context)"])])
def test_an_optional_or_interface_method_of_the_wrong_form_is_refused_at_registration(method, words):
    namespace = {}
    exec(f"class Toy2(Toy):\n    {method}\n", {"Toy": Toy}, namespace)
    mod = with_hook("register_rankers", lambda register: register("wrong", namespace["Toy2"]))
    error = assert_skipped(registry_with(("wrong", mod)), "wrong", "ranker 'wrong'", *words)
    assert "\n" not in error


def test_a_label_property_and_a_fit_summary_set_in_init_are_accepted():
    class Proper(Toy):
        @property
        def label(self):
            return "proper"

        def __init__(self, depth: int = 2, label: str = "x"):
            self.fit_summary = {"epochs": 1}

    reg = registry_with(("proper", with_hook("register_rankers", lambda register: register("proper", Proper))))
    assert reg.build("ranker", "proper").label == "proper"


def test_a_bad_option_raises_component_config_error_a_value_error(registry):
    """The one exception a bad option raises, from the registry, before the class is imported."""
    with pytest.raises(ComponentConfigError, match=r"retriever 'sasrec': retriever.loss must be one of ce, bce") as err:
        registry.build("retriever", "sasrec", {"loss": "hinge"})
    assert isinstance(err.value, ValueError) and isinstance(err.value, PluginError)


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


def test_palr_trace_prints_every_hook_call(monkeypatch, capsys):
    """``palr plugins`` with PALR_TRACE=1, in this process (a new one spends 15 s of CPU importing what
    ``palr plugins`` checks): the registry it loads traces each hook call to stderr."""
    from palr_core.cli import main

    monkeypatch.setenv("PALR_TRACE", "1")
    capsys.readouterr()
    assert main(["plugins"]) == 0
    err = capsys.readouterr().err
    assert "register_retrievers" in err and "register_datasets" in err


def test_a_config_field_called_name_is_refused():
    @dataclass
    class Named:
        name: str = "x"

    class WithName(Toy):
        def __init__(self, name: str = "x"):
            pass

    mod = with_hook("register_retrievers", lambda register: register("named", WithName, config=Named))
    assert_skipped(registry_with(("named", mod)), "named", "has a field 'name', which palr reserves")


def test_api_2_components_run_unchanged_in_a_pipeline(tmp_path):
    """A dataset, retriever and ranker written against the 0.2 docs (plugin API 2, no optional
    methods, classes given directly and as "module:Class") run through the whole pipeline."""
    from palr_core import InteractionLog, PalrConfig, RawDataset
    from palr_core.pipeline import run_pipeline
    from palr_core.testing import tiny_data

    data = tiny_data()

    class TinyDataset:
        def load(self, context):
            users = [u for u, seq in enumerate(data.data.sequences) for _ in seq]
            items = [int(i) for seq in data.data.sequences for i in seq]
            log = InteractionLog(np.array(users), np.array(items), np.arange(len(users)))
            catalog = data.catalog
            return RawDataset(log, type(catalog)(ids=list(range(len(catalog))), titles=catalog.titles), name="two")

    class Reverse:
        def fit(self, data, context): ...

        def rank(self, requests, context):
            return [list(r.candidates[::-1]) for r in requests]

    def register_datasets(register):
        register("two", TinyDataset)

    def register_rankers(register):
        register("reverse", Reverse)

    def register_retrievers(register):
        register("pop2", "palr.plugins.popularity.retriever:PopularityRetriever")

    two = types.ModuleType("api_two")
    two.PALR_PLUGIN_API = 2
    for hook in (register_datasets, register_rankers, register_retrievers):
        setattr(two, hook.__name__, hookimpl(hook))
    reg = load_registry(extra_plugins=[("api_two", two)])
    assert {reg.get(kind, name).api for kind, name in (("dataset", "two"), ("ranker", "reverse"))} == {2}
    config = PalrConfig(dataset={"name": "two"}, retriever={"name": "pop2"}, profile={"name": "none"},
                        ranker={"name": "reverse"}, cache_dir=str(tmp_path / "cache"))
    result = run_pipeline(config, reg, tmp_path / "run")
    assert result.stats["users"] == len(data.data.sequences)
    assert [row["model"].split(":")[0] for row in result.rows] == ["retriever", "ranker"]
    assert "ranker: reverse over pop2" in result.rows[1]["model"]


#: a distribution written by an outsider against the 0.2 docs (plugin API 2), and three modules of
#: it that make the mistakes palr 0.3 must answer by name
HOLDOUT = {
    "pyproject.toml": """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "palr-holdout"
version = "0.2.1"
dependencies = ["palr"]

[project.entry-points.palr]
palr_holdout = "palr_holdout"
palr_holdout_v1 = "palr_holdout.v1"
palr_holdout_prompts = "palr_holdout.prompts"
palr_holdout_paths = "palr_holdout.paths"

[tool.setuptools]
packages = ["palr_holdout"]
""",
    "palr_holdout/__init__.py": '''"""API 2: a dataset class, a retriever given as "module:Class" with its config, a ranker class."""
from dataclasses import dataclass

from palr_core import hookimpl

PALR_PLUGIN_API = 2


@dataclass
class LastItemConfig:
    window: int = 3


class Reverse:
    def fit(self, data, context):
        pass

    def rank(self, requests, context):
        return [list(r.candidates[::-1]) for r in requests]


@hookimpl
def register_retrievers(register):
    register("holdout_last", "palr_holdout.model:LastItem", config=LastItemConfig)


class Ring:
    """Each user walks a ring of items: after item i comes i + 1."""

    def __init__(self, users: int = 80, items: int = 30):
        self.users, self.items = users, items

    def load(self, context):
        import numpy as np

        from palr_core import InteractionLog, ItemCatalog, RawDataset

        rng = context.rng("ring")
        starts = rng.integers(0, self.items, self.users)
        users = np.repeat(np.arange(self.users), 8)
        items = np.concatenate([(start + np.arange(8)) % self.items for start in starts])
        log = InteractionLog(users, items, np.tile(np.arange(8), self.users))
        catalog = ItemCatalog(ids=list(range(self.items)), titles=[f"item {i}" for i in range(self.items)])
        return RawDataset(log, catalog, name="ring")


@hookimpl
def register_datasets(register):
    register("holdout_ring", Ring)


@hookimpl
def register_rankers(register):
    register("holdout_reverse", Reverse)
''',
    "palr_holdout/model.py": '''import numpy as np


class LastItem:
    """Popularity among the items that followed the history's last ``window`` items."""

    def __init__(self, window: int = 3):
        self.window = window

    def fit(self, data, context):
        self.counts = np.bincount(np.concatenate(data.train), minlength=data.num_items).astype(float)

    def retrieve(self, histories, k):
        scores = np.tile(self.counts, (len(histories), 1))
        for row, history in zip(scores, histories):
            row[history] = -np.inf
        ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(scores, ids, axis=1)
''',
    "palr_holdout/v1.py": '''from palr_core import hookimpl


@hookimpl
def register_retrievers(register):
    register("holdout_v1", "palr_holdout.model:LastItem")
''',
    "palr_holdout/prompts.py": '''from palr_core.kit.prompts import build_prompt  # moved into llama_lora in palr 0.3

PALR_PLUGIN_API = 2
''',
    "palr_holdout/paths.py": '''from dataclasses import dataclass

from palr_core import hookimpl

PALR_PLUGIN_API = 2


@dataclass
class Narrow:
    window: int = 3


@dataclass
class Wide:
    window: int = 3
    depth: int = 2


@hookimpl
def register_retrievers(register):
    register("holdout_typo", "palr_holdout.modle:LastItem", config=Narrow)
    register("holdout_refused", "palr_holdout.model:LastItem", config=Wide)
''',
}


@pytest.fixture(scope="module")
def installed_holdout(tmp_path_factory) -> dict:
    """pip-install the hold-out distribution into its own directory; the env that sees it."""
    source, site = tmp_path_factory.mktemp("holdout"), tmp_path_factory.mktemp("site")
    for path, text in HOLDOUT.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(text)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True)
    return {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_palr_plugins_lists_a_holdout_api_2_plugin_and_names_each_mistake_in_one_line(installed_holdout, monkeypatch,
                                                                                         capsys):
    """``palr plugins`` in this process (a new one spends 15 s of CPU importing what it checks), with the
    hold-out distribution's folder on the path: its entry points are found there, as in a new process."""
    from palr_core.cli import main

    monkeypatch.syspath_prepend(installed_holdout["PYTHONPATH"].split(os.pathsep)[0])
    capsys.readouterr()
    try:
        assert main(["plugins"]) == 0
    finally:  # later tests' registries never see it: drop what its hooks imported
        for module in [m for m in sys.modules if m == "palr_holdout" or m.startswith("palr_holdout.")]:
            del sys.modules[module]
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert ["retriever", "holdout_last", "palr-holdout", "0.2.1", "palr_holdout"] in rows
    assert ["ranker", "holdout_reverse", "palr-holdout", "0.2.1", "palr_holdout"] in rows
    assert ["dataset", "holdout_ring", "palr-holdout", "0.2.1", "palr_holdout"] in rows
    skipped = {line.split()[0]: line for line in out.split("SKIPPED")[1].splitlines()[1:] if line.strip()}
    assert "plugin API 1" in skipped["palr_holdout_v1"] and "#migrating-to-palr-03" in skipped["palr_holdout_v1"]
    assert "palr_core.kit.prompts moved into the llama_lora plugin" in skipped["palr_holdout_prompts"]
    paths = {line.split("'")[1]: line for line in out.splitlines() if line.strip().startswith("palr_holdout_paths ")}
    assert "cannot import 'palr_holdout.modle:LastItem'" in paths["holdout_typo"]
    assert "does not accept the config field(s) depth of Wide" in paths["holdout_refused"]
    assert not any("holdout_typo" in r or "holdout_refused" in r for r in rows if len(r) == 5)


@pytest.mark.slow
def test_a_holdout_api_2_plugin_runs_unchanged(installed_holdout, tmp_path):
    from tests.test_cli import palr_run

    palr_run("dataset=holdout_ring", "retriever=holdout_last", "retriever.window=5", "ranker=holdout_reverse",
             "profile=none", f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path, env=installed_holdout)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["users_evaluated"] == 80
    assert [row["model"].split(" over ")[0] for row in metrics["rows"]] == [
        "retriever: holdout_last (its own order)", "ranker: holdout_reverse"]
    assert "window: 5" in (tmp_path / "run" / "config_resolved.yaml").read_text()
