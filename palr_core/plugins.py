"""Plugin discovery (``palr`` entry points through pluggy) and the registry of named components.

palr loads entry points in its own loop rather than with ``load_setuptools_entrypoints``, for
two reasons: a plugin that fails to import must be reported by name and skipped, not stop every
run; and a second plugin under an already-registered name must be an error, not silently
ignored. Set ``PALR_TRACE=1`` to print every hook call.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import hookspecs
from .components import KINDS
from .llm import LanguageModel

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginError",
    "UnknownComponentError",
    "DuplicateComponentError",
    "ComponentConfigError",
    "Registration",
    "BrokenPlugin",
    "Registry",
    "get_plugin_manager",
    "load_registry",
]

ENTRY_POINT_GROUP = "palr"


class PluginError(RuntimeError):
    """A problem with an installed plugin or a component name."""


class UnknownComponentError(PluginError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class DuplicateComponentError(PluginError):
    pass


class ComponentConfigError(PluginError, ValueError):
    pass


@dataclass(frozen=True)
class Registration:
    """One registered component: its kind, name, class, config schema and where it came from."""

    kind: str
    name: str
    cls: type
    config: type | None
    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that could not be loaded or whose hooks raised."""

    plugin: str
    distribution: str
    error: str


def get_plugin_manager() -> pluggy.PluginManager:
    """A fresh plugin manager with palr's hookspecs (one per registry: no global state)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("PALR_TRACE"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm


class Registry:
    """All components by kind and name, built from a plugin manager's registered plugins."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        origins: Mapping[str, tuple[str, str]] | None = None,
        broken: Iterable[BrokenPlugin] = (),
    ) -> None:
        self.pm = pm
        self.broken: list[BrokenPlugin] = list(broken)
        self._origins = dict(origins or {})
        self._items: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self.config_dirs: list[str] = []
        self.language_models: dict[str, LanguageModel] = {}
        for kind, (_, _, hook_name) in KINDS.items():
            self._collect(kind, hook_name)
        self._collect_config_dirs()
        self._collect_language_models()

    # -- collection ---------------------------------------------------------------------
    def _origin(self, plugin_name: str) -> tuple[str, str]:
        return self._origins.get(plugin_name, (plugin_name, "unknown"))

    def _call_each(self, hook_name: str, make_register):
        """Call every implementation of a hook with a ``register`` bound to that plugin."""
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            added: list = []
            try:
                impl.function(**({"register": make_register(impl.plugin_name, added)}
                                 if "register" in impl.argnames else {}))
            except PluginError:
                raise
            except Exception as exc:  # a broken plugin must not take the others down
                self._mark_broken(impl.plugin_name, f"{hook_name} raised {type(exc).__name__}: {exc}")
                for undo in added:
                    undo()

    def _collect(self, kind: str, hook_name: str) -> None:
        table = self._items[kind]

        def make_register(plugin_name: str, added: list):
            def register(name: str, cls: type, config: type | None = None) -> None:
                dist, version = self._origin(plugin_name)
                if config is not None and not dataclasses.is_dataclass(config):
                    raise PluginError(f"{kind} {name!r} from {dist}: config must be a dataclass, got {config!r}")
                if name in table:
                    other = table[name]
                    raise DuplicateComponentError(
                        f"{kind} {name!r} is registered twice: by {other.distribution} "
                        f"{other.version} (plugin {other.plugin!r}) and by {dist} {version} "
                        f"(plugin {plugin_name!r}); uninstall one of them"
                    )
                table[name] = Registration(kind, name, cls, config, plugin_name, dist, version)
                added.append(lambda: table.pop(name, None))

            return register

        self._call_each(hook_name, make_register)

    def _collect_config_dirs(self) -> None:
        def make_register(plugin_name: str, added: list):
            def register(path: str) -> None:
                self.config_dirs.append(path)
                added.append(lambda: self.config_dirs.remove(path))

            return register

        self._call_each("register_config_dirs", make_register)

    def _collect_language_models(self) -> None:
        table = self.language_models

        def make_register(plugin_name: str, added: list):
            def register(name: str, locate, description: str = "") -> None:
                dist, version = self._origin(plugin_name)
                if not callable(locate):
                    raise PluginError(f"language model {name!r} from {dist}: locate must be callable, got {locate!r}")
                if name in table:
                    other = table[name]
                    raise DuplicateComponentError(
                        f"language model {name!r} is registered twice: by {other.distribution} "
                        f"{other.version} and by {dist} {version}; uninstall one of them")
                table[name] = LanguageModel(name, locate, description, plugin_name, dist, version)
                added.append(lambda: table.pop(name, None))

            return register

        self._call_each("register_language_models", make_register)

    def _mark_broken(self, plugin_name: str, error: str) -> None:
        dist, _ = self._origin(plugin_name)
        self.broken.append(BrokenPlugin(plugin_name, dist, error))
        warnings.warn(f"palr plugin {plugin_name!r} ({dist}) is skipped: {error}", stacklevel=3)

    # -- lookup ---------------------------------------------------------------------------
    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def all(self) -> list[Registration]:
        return [reg for kind in KINDS for reg in sorted(self._items[kind].values(), key=lambda r: r.name)]

    def get(self, kind: str, name: str) -> Registration:
        """The registration, or an error listing the available names (and any broken plugins)."""
        if kind not in self._items:
            raise UnknownComponentError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
        try:
            return self._items[kind][name]
        except KeyError:
            msg = f"no {kind} named {name!r}; available: {', '.join(self.names(kind)) or '(none)'}"
            if self.broken:
                msg += "; plugins that failed to load: " + "; ".join(
                    f"{b.plugin} ({b.distribution}): {b.error}" for b in self.broken
                )
            raise UnknownComponentError(msg) from None

    def build(self, kind: str, name: str, params: Mapping[str, Any] | None = None) -> Any:
        """Instantiate a component from plain params, validated against its config dataclass."""
        reg = self.get(kind, name)
        return reg.cls(**validate_params(reg, params or {}))


def validate_params(reg: Registration, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check params against the registration's dataclass (unknown keys, wrong types) and fill defaults."""
    if reg.config is None:
        return dict(params)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(reg.config), dict(params))
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        allowed = ", ".join(f.name for f in dataclasses.fields(reg.config))
        raise ComponentConfigError(
            f"{reg.kind} {reg.name!r}: {str(exc).splitlines()[0]} "
            f"(options of {reg.config.__name__}: {allowed})"
        ) from None
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _entry_points(group: str) -> list[md.EntryPoint]:
    return sorted(md.entry_points(group=group), key=lambda ep: ep.name)


def load_registry(
    entry_points: Iterable[md.EntryPoint] | None = None,
    extra_plugins: Iterable[tuple[str, ModuleType | object]] = (),
) -> Registry:
    """Discover plugins from the ``palr`` entry-point group and build the registry.

    :param entry_points: override discovery (tests); default: installed distributions.
    :param extra_plugins: ``(name, plugin)`` pairs registered directly, e.g. in tests.
    """
    pm = get_plugin_manager()
    origins: dict[str, tuple[str, str]] = {}
    broken: list[BrokenPlugin] = []
    eps = _entry_points(ENTRY_POINT_GROUP) if entry_points is None else list(entry_points)
    for ep in eps:
        dist = ep.dist.name if ep.dist else "unknown"
        version = ep.dist.version if ep.dist else "unknown"
        if ep.name in origins:
            raise DuplicateComponentError(
                f"two distributions declare palr plugin {ep.name!r}: "
                f"{origins[ep.name][0]} and {dist}; uninstall one of them"
            )
        try:
            plugin = ep.load()
        except Exception as exc:
            broken.append(BrokenPlugin(ep.name, dist, f"import failed: {type(exc).__name__}: {exc}"))
            warnings.warn(
                f"palr plugin {ep.name!r} ({dist} {version}) failed to load and is skipped: "
                f"{type(exc).__name__}: {exc}",
                stacklevel=2,
            )
            continue
        origins[ep.name] = (dist, version)
        pm.register(plugin, name=ep.name)
    for name, plugin in extra_plugins:
        origins.setdefault(name, (name, "local"))
        pm.register(plugin, name=name)
    broken += _drop_invalid_hookimpls(pm, origins)
    return Registry(pm, origins, broken)


def _drop_invalid_hookimpls(pm: pluggy.PluginManager, origins) -> list[BrokenPlugin]:
    """Unregister plugins with a misspelt ``@hookimpl`` (pluggy's ``check_pending``), reporting each."""
    dropped = []
    while True:
        try:
            pm.check_pending()
            return dropped
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or str(exc.plugin)
            pm.unregister(exc.plugin)
            dist = origins.get(name, (name, ""))[0]
            dropped.append(BrokenPlugin(name, dist, f"invalid hook implementation: {exc}"))
            warnings.warn(f"palr plugin {name!r} ({dist}) is skipped: {exc}", stacklevel=3)
