"""Plugin discovery (``palr`` entry points through pluggy) and the registry of named components.

The host must survive foreign code: a plugin that fails to import (one line naming the migration
when it imports what palr 0.3 moved), states an unsupported plugin API, registers nothing (no
``@hookimpl``), has a hook implementation that does not match its spec (a misspelt hook gets a
"did you mean"), raises in a hook, or registers something malformed (swapped ``register``
arguments, a class without the interface's methods, a config whose fields the class does not
accept) is skipped as a whole and recorded in :attr:`Registry.broken` with what it did wrong;
every other plugin and every run that does not need it goes on. Two plugins claiming one name
make that name a conflict (both named), not a crash. A plugin that is only missing an optional
dependency is reported when its components are asked for, and in ``palr plugins``, with the
command that installs what it needs.

Classes registered as ``"module:Class"`` are imported when a run builds them, so listing plugins
and ``palr-run`` stay fast; :meth:`Registry.verify` (what ``palr plugins`` runs) imports and checks
them all, so a bad path or a refused config field shows there first.

Hooks are called through pluggy, one plugin at a time, so ``PALR_TRACE=1`` prints every call.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata as md
import inspect
import logging
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .components import KINDS, OPTIONAL, LanguageModel
from .config import OptionError, check_options

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginError",
    "UnknownComponentError",
    "DuplicateComponentError",
    "ComponentConfigError",
    "Registration",
    "BrokenPlugin",
    "Conflict",
    "Registry",
    "get_plugin_manager",
    "load_registry",
    "validate_params",
    "field_default",
    "config_from_signature",
]

ENTRY_POINT_GROUP = "palr"
log = logging.getLogger("palr")
#: what a registered name may look like: it becomes a Hydra option (``retriever=<name>``)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: what a class given as text looks like
CLASS_PATH = re.compile(r"^[\w.]+:[\w.]+$")



class PluginError(RuntimeError):
    """A problem with an installed plugin or a component name."""


class UnknownComponentError(PluginError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateComponentError(PluginError):
    pass


class ComponentConfigError(PluginError, ValueError):
    pass


class _Rejected(Exception):
    """What a plugin did wrong while registering (the plugin is skipped with this message)."""


class _ClassImportError(PluginError):
    """A class given as ``"module:Class"`` does not import; ``missing`` names an uninstalled module."""

    missing: str | None = None


@dataclass
class Registration:
    """One registered component: its kind, name, class (or ``"module:Class"`` until first use),
    config schema, where it came from and the plugin API it was written for."""

    kind: str
    name: str
    cls: type | str
    config: type | None
    plugin: str
    distribution: str
    version: str
    api: int = hookspecs.PLUGIN_API

    @property
    def where(self) -> str:
        return f"{self.distribution} {self.version} (plugin {self.plugin!r})"

    def load_class(self) -> type:
        """The class, imported on first use when it was registered as ``"module:Class"`` and then
        checked like a class registered directly."""
        if isinstance(self.cls, str):
            module, _, attr = self.cls.partition(":")
            try:
                cls = getattr(importlib.import_module(module), attr)
            except Exception as exc:
                missing = _missing_module(exc, module)
                why = (_missing_dependency(self.distribution, missing) if missing
                       else _migration(exc) or f"{type(exc).__name__}: {exc}")
                error = _ClassImportError(f"{self.kind} {self.name!r} from {self.where}: cannot import "
                                          f"{self.cls!r}: {why}")
                error.missing = missing
                raise error from None
            try:
                _check_class(self.kind, cls, self.config)
            except _Rejected as exc:
                raise PluginError(f"{self.kind} {self.name!r} from {self.where}: {exc}") from None
            self.cls = cls
        return self.cls

    def config_class(self) -> type:
        """The config dataclass: the registered one, or one derived from ``__init__``'s parameters."""
        if self.config is None:
            self.config = config_from_signature(self.load_class())
        return self.config


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that was skipped, and why. ``missing`` names an uninstalled module it needs."""

    plugin: str
    distribution: str
    error: str
    missing: str | None = None


@dataclass
class Conflict:
    """A name that two or more plugins registered: unusable until all but one are uninstalled."""

    kind: str
    name: str
    claims: list[Registration] = field(default_factory=list)

    def message(self) -> str:
        by = " and by ".join(r.where for r in self.claims)
        return f"{self.kind} {self.name!r} is registered twice: by {by}; uninstall all but one of them"


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with palr's hookspecs (one per registry: no global state)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("PALR_TRACE"):
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    return pm


@dataclass
class _Staged:
    """What one plugin registered, committed only when all of its hooks succeeded."""

    components: list[Registration] = field(default_factory=list)
    config_dirs: list[str] = field(default_factory=list)
    models: list[LanguageModel] = field(default_factory=list)


class Registry:
    """All components by kind and name, built from a plugin manager's registered plugins.

    :param origins: plugin name -> (distribution, version, plugin API).
    """

    def __init__(self, pm: pluggy.PluginManager, origins: Mapping[str, tuple[str, str, int]] | None = None,
                 broken: Iterable[BrokenPlugin] = ()) -> None:
        self.pm = pm
        self.broken: list[BrokenPlugin] = list(broken)
        self.conflicts: dict[tuple[str, str], Conflict] = {}
        self._origins = dict(origins or {})
        self._items: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self.config_dirs: list[str] = []
        self.language_models: dict[str, LanguageModel] = {}
        self._model_conflicts: dict[str, list[LanguageModel]] = {}
        for plugin_name in sorted(n for n, _ in pm.list_name_plugin()):
            staged = self._collect(plugin_name)
            if staged is not None:
                self._commit(staged)

    # -- collection -----------------------------------------------------------------------
    def _origin(self, plugin_name: str) -> tuple[str, str, int]:
        return self._origins.get(plugin_name, (plugin_name, "local", hookspecs.PLUGIN_API))

    def _collect(self, plugin_name: str) -> _Staged | None:
        """Call every hook of one plugin through pluggy; ``None`` (and a broken entry) if it fails."""
        plugin = self.pm.get_plugin(plugin_name)
        others = [p for _, p in self.pm.list_name_plugin() if p is not plugin]
        staged = _Staged()
        hooks: list[tuple[str, Callable]] = [
            (hook, self._component_register(kind, plugin_name, staged)) for kind, (_, hook) in KINDS.items()]
        hooks += [("register_config_dirs", self._config_dir_register(staged)),
                  ("register_language_models", self._model_register(plugin_name, staged))]
        for hook, register in hooks:
            caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
            if not caller.get_hookimpls():
                continue
            try:
                caller(register=register)
            except _Rejected as exc:
                self._mark_broken(plugin_name, f"{hook}: {exc}")
                return None
            except Exception as exc:  # a broken plugin must not take the others down
                self._mark_broken(plugin_name, f"{hook} raised {type(exc).__name__}: {exc}")
                return None
        return staged

    def _component_register(self, kind: str, plugin_name: str, staged: _Staged):
        dist, version, api = self._origin(plugin_name)

        def register(name: str, cls: type | str, config: type | None = None) -> None:
            _check_registration(kind, name, cls, config)
            staged.components.append(Registration(kind, name, cls, config, plugin_name, dist, version, api))

        return register

    @staticmethod
    def _config_dir_register(staged: _Staged):
        def register(path: str) -> None:
            if not isinstance(path, str) or not path.startswith(("pkg://", "file://")):
                raise _Rejected(f"register(path) needs 'pkg://package.folder' or 'file:///folder', got {path!r}")
            staged.config_dirs.append(path)

        return register

    def _model_register(self, plugin_name: str, staged: _Staged):
        dist, version, _ = self._origin(plugin_name)

        def register(name: str, locate: Callable, description: str = "") -> None:
            if not isinstance(name, str) or not name:
                raise _Rejected(f"register(name, locate, description) needs a model name first, got {name!r}")
            if not callable(locate):
                raise _Rejected(f"language model {name!r}: locate must be callable, got {locate!r}")
            staged.models.append(LanguageModel(name, locate, description, plugin_name, dist, version))

        return register

    def _commit(self, staged: _Staged) -> None:
        for reg in staged.components:
            table, key = self._items[reg.kind], (reg.kind, reg.name)
            if key in self.conflicts:
                self.conflicts[key].claims.append(reg)
            elif reg.name in table:
                self.conflicts[key] = Conflict(reg.kind, reg.name, [table.pop(reg.name), reg])
            else:
                table[reg.name] = reg
        self.config_dirs += staged.config_dirs
        for model in staged.models:
            if model.name in self._model_conflicts:
                self._model_conflicts[model.name].append(model)
            elif model.name in self.language_models:
                self._model_conflicts[model.name] = [self.language_models.pop(model.name), model]
            else:
                self.language_models[model.name] = model

    def _mark_broken(self, plugin_name: str, error: str) -> None:
        dist, _, _ = self._origin(plugin_name)
        self.broken.append(BrokenPlugin(plugin_name, dist, error))
        log.warning("palr plugin %r (%s) is skipped: %s", plugin_name, dist, error)

    def verify(self) -> list[BrokenPlugin]:
        """Import every class registered as ``"module:Class"`` and check it as a class registered
        directly is checked (its interface's methods, its optional ones, its config's fields), and
        that every config dataclass is one Hydra can hold.

        What fails is taken out of the registry and added to :attr:`broken` (with ``missing`` when
        an optional dependency is not installed), and returned, so that ``palr plugins`` shows a
        bad path or a refused config field before ``palr-run`` meets it. This imports the classes'
        modules (torch, for most): only ``palr plugins`` calls it; a run imports a class when it
        builds the component.
        """
        from omegaconf import OmegaConf

        found = []
        for reg in self.all():
            missing = None
            try:
                reg.load_class()
                config = reg.config_class()
            except PluginError as exc:
                error, missing = str(exc), getattr(exc, "missing", None)
            else:
                try:
                    OmegaConf.structured(config)
                    continue
                except Exception as exc:
                    error = (f"{reg.kind} {reg.name!r} from {reg.where}: its config {config.__name__} is not a "
                             f"dataclass Hydra can hold: {str(exc).splitlines()[0]}")
            del self._items[reg.kind][reg.name]
            found.append(BrokenPlugin(reg.plugin, reg.distribution, error, missing))
        self.broken += found
        return found

    # -- lookup ---------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def all(self) -> list[Registration]:
        return [reg for kind in KINDS for reg in sorted(self._items[kind].values(), key=lambda r: r.name)]

    def model_conflicts(self) -> list[str]:
        return [f"language model {name!r} is registered twice: by "
                + " and by ".join(f"{m.distribution} {m.version}" for m in models) + "; uninstall all but one"
                for name, models in sorted(self._model_conflicts.items())]

    def get(self, kind: str, name: str) -> Registration:
        """The registration, or an error listing the available names (and any broken plugins)."""
        if kind not in self._items:
            raise UnknownComponentError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        if (kind, name) in self.conflicts:
            raise DuplicateComponentError(self.conflicts[(kind, name)].message())
        try:
            return self._items[kind][name]
        except KeyError:
            raise UnknownComponentError(self.unknown_message(kind, name)) from None

    def unknown_message(self, kind: str, name: str) -> str:
        """``no retriever named 'x'; available: ...`` plus close names and plugins that were skipped."""
        available = self.names(kind)
        close = difflib.get_close_matches(name, available, n=1)
        msg = (f"no {kind} named {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
               + f"; available: {', '.join(available) or '(none)'}")
        if self.broken:
            msg += "; plugins that failed to load: " + "; ".join(
                f"{b.plugin} ({b.distribution}): {b.error}" for b in self.broken)
        return msg

    def build(self, kind: str, name: str, params: Mapping[str, Any] | None = None) -> Any:
        """Instantiate a component from plain params, validated against its config dataclass."""
        reg = self.get(kind, name)
        values = validate_params(reg, params or {})  # before the class import: a typo costs no torch
        cls = reg.load_class()
        try:
            return cls(**values)
        except TypeError as exc:
            raise PluginError(f"{kind} {name!r} from {reg.where}: {cls.__name__}(**config) failed: {exc}") from None


# -- checks of what a plugin registers --------------------------------------------------------
def _check_registration(kind: str, name, cls, config) -> None:
    usage = "register(name, cls, config=ConfigDataclass), e.g. register('mine', MyClass, config=MyConfig)"
    if _swapped(name, cls):
        given = name.__name__ if isinstance(name, type) else repr(name)
        raise _Rejected(f"the arguments are swapped: register({given}, {cls!r}) gives the class first; call "
                        f"register({cls!r}, {given}, config=...)")
    if not isinstance(name, str):
        raise _Rejected(f"the name must come first as a string, got {name!r}; call {usage}")
    if not NAME.match(name):
        raise _Rejected(f"{kind} name {name!r} is not usable as a config option (letters, digits, '_', '-', '.')")
    if config is not None and not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise _Rejected(f"{kind} {name!r}: config must be a dataclass class, got {config!r}")
    if config is not None and "name" in {f.name for f in dataclasses.fields(config)}:
        raise _Rejected(f"{kind} {name!r}: {config.__name__} has a field 'name', which palr reserves for the "
                        "registered name; rename the field")
    if isinstance(cls, str):
        if not CLASS_PATH.match(cls):
            raise _Rejected(f"{kind} {name!r}: a class given as text must be 'module:Class', got {cls!r}")
        return
    if not isinstance(cls, type):
        raise _Rejected(f"{kind} {name!r}: cls must be a class or 'module:Class', got {cls!r}; call {usage}")
    try:
        _check_class(kind, cls, config)
    except _Rejected as exc:
        raise _Rejected(f"{kind} {name!r}: {exc}") from None


def _swapped(name, cls) -> bool:
    """``register(cls, name)``: a class (or ``"module:Class"``) where the name goes, and a name
    where the class goes."""
    class_first = isinstance(name, type) or (isinstance(name, str) and bool(CLASS_PATH.match(name)))
    name_second = isinstance(cls, str) and bool(NAME.match(cls)) and not CLASS_PATH.match(cls)
    return class_first and name_second


def _check_class(kind: str, cls: type, config: type | None) -> None:
    """The class has the interface's methods, each callable as palr calls it, its optional methods
    and attributes have the documented form, and it accepts every field of its config."""
    interface = KINDS[kind][0]
    methods = [m for m in interface.__dict__ if not m.startswith("_") and callable(interface.__dict__[m])]
    missing = [m for m in methods if not callable(getattr(cls, m, None))]
    if missing:
        raise _Rejected(f"{cls.__name__} does not implement palr_core.{interface.__name__}: no "
                        + ", ".join(f"{m}()" for m in missing))
    for protocol in [interface] + [p for p, kinds in OPTIONAL.items() if kind in kinds]:
        for member in _protocol_members(protocol):
            _check_member(cls, protocol, member)
    if config is None:
        return
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    refused = [f.name for f in dataclasses.fields(config) if f.name not in params]
    if refused:
        raise _Rejected(f"{cls.__name__}.__init__ does not accept the config field(s) {', '.join(refused)} of "
                        f"{config.__name__} (palr builds it as {cls.__name__}(**config))")


def _protocol_members(protocol: type) -> list[str]:
    """The public methods and annotated attributes a Protocol declares."""
    names = [m for m in protocol.__dict__ if not m.startswith("_") and callable(protocol.__dict__[m])]
    return names + [a for a in protocol.__dict__.get("__annotations__", {}) if not a.startswith("_")]


def _check_member(cls: type, protocol: type, member: str) -> None:
    """A method of ``protocol`` that ``cls`` defines takes palr's arguments; an attribute of it
    (``label``, ``fit_summary``) is not a plain method, which palr would read as a bound method."""
    found = inspect.getattr_static(cls, member, None)
    if not (inspect.isfunction(found) or isinstance(found, (staticmethod, classmethod))):
        return  # absent, a property, or set on the instance
    wanted = protocol.__dict__.get(member)
    if not callable(wanted):
        raise _Rejected(f"{cls.__name__}.{member} is a method, but palr reads {member} as an attribute "
                        f"(palr_core.{protocol.__name__}): make it a property or set it in __init__")
    if isinstance(found, (staticmethod, classmethod)):
        return
    args = [p for name, p in inspect.signature(wanted).parameters.items() if name != "self"]
    try:
        inspect.signature(found).bind(cls, *args)  # arity only: self and one value per argument
    except TypeError:
        call = f"{member}({', '.join(a.name for a in args)})"
        raise _Rejected(f"{cls.__name__}.{member}{inspect.signature(found)} cannot be called as {call}, as palr "
                        f"calls it (palr_core.{protocol.__name__})") from None


def config_from_signature(cls: type) -> type:
    """A config dataclass whose fields are ``cls.__init__``'s parameters (for plugins that register
    no config); parameters without a default become required options."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:
        hints = {}
    fields = []
    for param in inspect.signature(cls).parameters.values():
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        kind = hints.get(param.name, Any)
        if param.default is inspect.Parameter.empty:
            fields.append((param.name, kind, dataclasses.field(default="???")))
        elif isinstance(param.default, (list, dict, set)):
            fields.append((param.name, kind, dataclasses.field(default_factory=lambda d=param.default: d.copy())))
        else:
            fields.append((param.name, kind, dataclasses.field(default=param.default)))
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields)


def field_default(f: dataclasses.Field):
    """A config field's default as plain data (``"???"``: required, no default)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return "???"
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


# -- parameter validation ---------------------------------------------------------------------
def validate_params(reg: Registration, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check params against the registration's dataclass (unknown keys, missing values, wrong
    types) and fill in its defaults; errors name the component and its accepted options."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    config = reg.config_class()
    label = f"{reg.kind} {reg.name!r}"
    _check_keys(label, reg.kind, config, dict(params))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(config), dict(params))
        obj = OmegaConf.to_object(merged)
    except MissingMandatoryValue as exc:
        key = exc.full_key or str(exc)
        raise ComponentConfigError(f"{label} needs {reg.kind}.{key} (it has no default): "
                                   f"palr-run {reg.kind}.{key}=<value>") from None
    except OmegaConfBaseException as exc:
        where = f"{reg.kind}.{exc.full_key}: " if getattr(exc, "full_key", None) else ""
        raise ComponentConfigError(f"{label}: {where}{str(exc).splitlines()[0]}") from None
    except (ValueError, TypeError) as exc:  # raised by the dataclass's own __post_init__ checks
        raise ComponentConfigError(f"{label}: {exc}") from None
    try:
        check_options(obj, reg.kind)
    except OptionError as exc:
        raise ComponentConfigError(f"{label}: {exc}") from None
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _check_keys(label: str, prefix: str, config: type, params: Mapping[str, Any]) -> None:
    """Unknown keys, at any depth of nested config dataclasses, with a close match if there is one."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    for key, value in params.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            raise ComponentConfigError(
                f"{label} has no option {prefix}.{key}" + (f" (did you mean {prefix}.{close[0]}?)" if close else "")
                + f"; its options: {', '.join(fields)} ({config.__name__})")
        nested = _dataclass_type(fields[key], config)
        if nested is not None and isinstance(value, Mapping):
            _check_keys(label, f"{prefix}.{key}", nested, value)


def _dataclass_type(f: dataclasses.Field, owner: type) -> type | None:
    kind = f.type
    if isinstance(kind, str):
        try:
            kind = typing.get_type_hints(owner).get(f.name)
        except Exception:
            return None
    return kind if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None


# -- discovery --------------------------------------------------------------------------------
def _entry_points(group: str) -> list[md.EntryPoint]:
    return sorted(md.entry_points(group=group), key=lambda ep: ep.name)


def load_registry(entry_points: Iterable[md.EntryPoint] | None = None,
                  extra_plugins: Iterable[tuple[str, ModuleType | object]] = ()) -> Registry:
    """Discover plugins from the ``palr`` entry-point group and build the registry.

    :param entry_points: override discovery (tests); default: installed distributions.
    :param extra_plugins: ``(name, plugin)`` pairs registered directly, e.g. in tests.
    """
    pm = get_plugin_manager()
    origins: dict[str, tuple[str, str, int]] = {}
    broken: list[BrokenPlugin] = []
    eps = _entry_points(ENTRY_POINT_GROUP) if entry_points is None else list(entry_points)
    for ep in eps:
        dist = ep.dist.name if ep.dist else "unknown"
        version = ep.dist.version if ep.dist else "unknown"
        if ep.name in origins:
            broken.append(BrokenPlugin(ep.name, dist, f"entry point {ep.name!r} is also declared by "
                                       f"{origins[ep.name][0]}, which was loaded; uninstall one of them"))
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            missing = _missing_module(exc, ep.value.split(":")[0])
            if missing:  # quiet: said when its components are asked for, and by palr plugins
                broken.append(BrokenPlugin(ep.name, dist, _missing_dependency(dist, missing), missing=missing))
            else:
                why = _migration(exc) or f"{type(exc).__name__}: {exc}"
                broken.append(_broken(ep.name, dist, f"import failed: {why}"))
            continue
        _add(pm, ep.name, plugin, (dist, version), origins, broken)
    for name, plugin in extra_plugins:
        _add(pm, name, plugin, (name, "local"), origins, broken)
    return Registry(pm, origins, broken)


def _add(pm: pluggy.PluginManager, name: str, plugin, origin: tuple[str, str], origins: dict,
         broken: list[BrokenPlugin]) -> None:
    """Register one loaded plugin after its API handshake; a mismatching hook, or no hook at all,
    skips it."""
    dist, version = origin
    api = getattr(plugin, "PALR_PLUGIN_API", None)
    problem = _api_problem(api)
    try:
        hash(plugin)
    except TypeError:
        problem = f"the entry point names a {type(plugin).__name__} object, which pluggy cannot hold; name a module"
    if problem:
        broken.append(_broken(name, dist, problem))
        return
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        broken.append(_broken(name, dist, f"invalid hook implementation: {_hook_problem(exc)}"))
        return
    if not pm.get_hookcallers(plugin):
        pm.unregister(plugin)
        broken.append(_broken(name, dist, _nothing_registered(plugin)))
        return
    origins[name] = (dist, version, api)


#: the registration hooks, for "did you mean" and for undecorated functions
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("register_"))


def _api_problem(api) -> str | None:
    """Why a plugin stating ``PALR_PLUGIN_API = api`` (``None``: it states none, so API 1) is not
    loaded, in one line that says what to change; ``None`` when it is loaded."""
    if api is None:
        api = 1
    elif not isinstance(api, int) or isinstance(api, bool):
        return f"PALR_PLUGIN_API must be an integer, got {api!r}"
    low, high = hookspecs.MIN_PLUGIN_API, hookspecs.PLUGIN_API
    if api > high:
        return (f"written for palr plugin API {api}, but this palr implements API {high}: upgrade palr "
                "(pip install -U palr)")
    if api < low:
        return (f"written for palr plugin API {api} (PALR_PLUGIN_API = {api}, or none stated), which this palr no "
                f"longer loads: Dataset.load takes the RunContext, toolkit imports come from palr_core.kit; port it "
                f"and state PALR_PLUGIN_API = {high} in the module its entry point names; see {hookspecs.MIGRATING}")
    return None


def _hook_problem(exc: pluggy.PluginValidationError) -> str:
    """pluggy's message, with the hook's real signature when the implementation asks for more and
    the closest hook's name when the implementation's name is unknown."""
    message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    unknown = re.search(r"unknown hook '(\w+)'", message)
    if unknown:
        close = difflib.get_close_matches(unknown.group(1), HOOKS, n=1, cutoff=0.6)
        return message + (f"; did you mean {close[0]}?" if close else f"; the hooks are {', '.join(HOOKS)}")
    match = re.search(r"hook '(\w+)'", message) or re.search(r"hookimpl definition: (\w+)\(", message)
    spec = getattr(hookspecs, match.group(1), None) if match else None
    if spec is not None and "argument" in message.lower():
        message += f"; the hook is {spec.__name__}{inspect.signature(spec)}"
    return message


def _nothing_registered(plugin) -> str:
    """What to say about a plugin with no hook implementation: it would contribute nothing."""
    undecorated = [n for n in dir(plugin) if callable(getattr(plugin, n, None))
                   and (n in HOOKS or difflib.get_close_matches(n, HOOKS, n=1, cutoff=0.85))]
    names = ", ".join(f"{n}()" for n in undecorated)
    found = f" ({names} {'is' if len(undecorated) == 1 else 'are'} not)" if undecorated else ""
    return f"registered nothing: are its functions decorated with @palr_core.hookimpl?{found}"


def _migration(exc: BaseException) -> str | None:
    """One line naming the migration when an import failed on a module or name that palr 0.3
    moved or removed (:data:`~palr_core.hookspecs.MOVED_MODULES`,
    :data:`~palr_core.hookspecs.MOVED_NAMES`); ``None`` otherwise."""
    if not isinstance(exc, ImportError):
        return None
    module = exc.name or ""
    for moved, message in hookspecs.MOVED_MODULES.items():
        if module == moved or module.startswith(moved + "."):
            return f"{message}; {hookspecs.MIGRATING}"
    name = re.search(r"cannot import name '(\w+)'", str(exc))
    if name and (module, name.group(1)) in hookspecs.MOVED_NAMES:
        return f"{hookspecs.MOVED_NAMES[module, name.group(1)]}; {hookspecs.MIGRATING}"
    return None


def _missing_module(exc: BaseException, own_module: str) -> str | None:
    """The uninstalled module an import failed on, when it is a dependency (not part of the
    plugin's own package, nor of palr)."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    return exc.name if top not in (own_module.split(".")[0], "palr_core", "palr") else None


def _broken(plugin: str, dist: str, error: str) -> BrokenPlugin:
    log.warning("palr plugin %r (%s) is skipped: %s", plugin, dist, error)
    return BrokenPlugin(plugin, dist, error)


def _missing_dependency(dist: str, module: str) -> str:
    """What to install for a missing module: the extra of the plugin's distribution that requires
    it (``pip install 'palr[smollm2]'``) when there is one, else the module's name."""
    top = module.split(".")[0]

    def normal(name: str) -> str:
        return name.lower().replace("_", "-")

    extras = []
    try:
        for requirement in md.requires(dist) or []:
            name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
            if extra and normal(name) == normal(top):
                extras.append(extra.group(1))
    except md.PackageNotFoundError:
        pass
    extras.sort(key=lambda e: (e == "dev", e))  # a feature's own extra before the developers' one
    how = f"pip install '{dist}[{extras[0]}]'" if extras else f"pip install {top}"
    return f"needs the module {module!r}, which is not installed: {how}"
