"""The configuration ``palr-run`` composes: Hydra's search path, every registered component as a
config option, palr's checks of the command line, and the typed :class:`PalrConfig`.

The registry is built first, then (1) every plugin's config directory is appended to Hydra's
search path, (2) every registered component is offered as a config option whose values are its
config dataclass's defaults, and (3) ``conf/config.yaml`` is composed as usual. Component nodes
are left open, so a misspelt key reaches palr's own check, which names the component's options.
Both the command line (:mod:`palr_core.cli`) and the Python API (:mod:`palr_core.api`) compose
through this module.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import os
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .components import KINDS
from .config import PalrConfig, store_schema
from .plugins import PluginError, Registry, field_default, load_registry

__all__ = ["PRIMARY_CONFIG", "prepare_hydra", "check_component_choices", "check_sweep", "typed_config",
           "compose", "component_node", "yaml_options"]

PRIMARY_CONFIG = "pkg://palr_conf"


@contextmanager
def _palr_hydra() -> Iterator[None]:
    """Hydra initialised on palr's ``conf/`` for composing by hand, and cleared before and after,
    so that composing (a check, :func:`compose`) never meets or leaves another initialisation."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=PRIMARY_CONFIG[len("pkg://"):], version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().clear()


#: the plugins' config directories Hydra searches (set by :func:`prepare_hydra`)
_SEARCH_PATH: list[str] = []


def _install_search_path(config_dirs: list[str]) -> None:
    """Add the plugins' config directories to Hydra's search path (registered once per process:
    ``palr.run`` may compose many times)."""
    from hydra.core.config_search_path import ConfigSearchPath
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    first = not _SEARCH_PATH and not getattr(_install_search_path, "done", False)
    _SEARCH_PATH[:] = config_dirs
    if not first:
        return

    class PalrPluginConfigs(SearchPathPlugin):
        def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
            for path in _SEARCH_PATH:
                search_path.append(provider="palr-plugin", path=path)

    Plugins.instance().register(PalrPluginConfigs)
    _install_search_path.done = True


def yaml_options(config_dirs: list[str], group: str) -> set[str]:
    """Names of ``<group>/<name>.yaml`` files in palr's and the plugins' config directories."""
    names: set[str] = set()
    for root in _config_roots(config_dirs):
        folder = root / group
        if folder.is_dir():
            names.update(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    return names


def component_node(registry: Registry, kind: str, name: str):
    """The config option ``<kind>=<name>``: ``name`` and every field of the component's config
    dataclass at its default, as an open node (palr, not Hydra, checks its keys)."""
    from omegaconf import OmegaConf

    config = registry.get(kind, name).config_class()
    node = OmegaConf.create({"name": name, **{f.name: field_default(f) for f in dataclasses.fields(config)}})
    OmegaConf.set_struct(node, False)
    return node


def _store_component_options(registry: Registry) -> None:
    """Offer every registered component as ``<kind>=<name>``. A plugin's YAML file of the same name
    wins, and no node is stored: Hydra would merge the two. A component whose class cannot be
    imported is left out here (so it cannot break runs that do not use it) and named when chosen."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for kind in KINDS:
        shadowed = yaml_options(registry.config_dirs, kind)
        for reg in registry.all():
            if reg.kind == kind and reg.name not in shadowed:
                try:
                    node = component_node(registry, kind, reg.name)
                except PluginError:
                    continue
                store.store(group=kind, name=reg.name, node=node, provider=reg.distribution)


def prepare_hydra(registry: Registry) -> None:
    """Make Hydra see the plugins' config dirs, palr's schema and every component as an option."""
    _install_search_path(registry.config_dirs)
    store_schema()
    _store_component_options(registry)


def check_component_choices(argv: list[str], registry: Registry) -> None:
    """Fail with palr's one-line message, before Hydra composes anything or makes a run folder, when
    the command line names a group or setting that does not exist (with the closest name), chooses
    a component option that does not exist (close names, plugins that failed to load, conflicts),
    or chooses a preset that sets an option its component does not have (naming the preset file)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, _ = get_args_parser().parse_known_args(argv)
    if args.shell_completion:
        return  # the words are a completion query (query=bash), and a half-typed line must still complete
    if args.config_dir and not Path(args.config_dir).expanduser().is_dir():
        what = "is a file" if Path(args.config_dir).expanduser().exists() else "does not exist"
        raise PluginError(f"--config-dir={args.config_dir}: the folder {what}; expected a folder of your own "
                          "presets (e.g. retriever/<name>.yaml in it)")
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception:
        return  # Hydra reports its own syntax errors
    user_dirs = [f"file://{Path(args.config_dir).expanduser().resolve()}"] if args.config_dir else []
    dirs = registry.config_dirs + user_dirs
    chosen: dict[str, list[str]] = {}
    for override in overrides:
        kind = override.key_or_group
        if override.is_delete():
            continue
        _check_key(kind, dirs)
        if kind not in KINDS:
            continue
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        options = set(registry.names(kind)) | yaml_options(dirs, kind)
        for value in values:
            if (kind, value) in registry.conflicts:
                raise PluginError(registry.conflicts[(kind, value)].message())
            if value not in options:
                message = registry.unknown_message(kind, value)
                presets = sorted(options - set(registry.names(kind)))
                raise PluginError(message + (f"; presets: {', '.join(presets)}" if presets else ""))
        chosen[kind] = values
    for kind, values in chosen.items():
        for value in values:
            _check_preset(kind, value, dirs, registry)


def _config_roots(config_dirs: list[str]) -> list:
    """palr's own config directory and the given ones (``pkg://`` or ``file://``), as folders."""
    roots = []
    for source in [PRIMARY_CONFIG, *config_dirs]:
        if source.startswith("pkg://"):
            try:
                roots.append(importlib.resources.files(source[len("pkg://"):].replace("/", ".")))
            except ModuleNotFoundError:
                continue
        else:
            roots.append(Path(source.removeprefix("file://")))
    return roots


def _check_key(key: str, config_dirs: list[str]) -> None:
    """A setting or group the configuration has: ``retriver=sasrec`` or ``eval.max_user=5`` are refused
    with the closest name (``+foo=1`` too: palr's settings are typed, nothing can be added to them)."""
    head, _, rest = key.replace("/", ".").partition(".")
    if head in KINDS or head == "hydra":
        return  # a component's own options are checked against its dataclass when it is built
    hints = typing.get_type_hints(PalrConfig)
    groups = {p.name for root in _config_roots(config_dirs) if root.is_dir() for p in root.iterdir() if p.is_dir()}
    known = sorted(set(hints) | groups | {"hydra"})
    if head not in known:
        raise PluginError(_unknown("setting or config group", head, known)
                          + f"; groups: {', '.join(sorted(groups | set(KINDS)))}; settings: "
                          + ", ".join(sorted(set(hints) - set(KINDS))))
    section = hints.get(head)
    if rest and dataclasses.is_dataclass(section):
        fields = [f.name for f in dataclasses.fields(section)]
        name = rest.split(".")[0]
        if name not in fields:
            raise PluginError(_unknown(f"{head} setting", name, fields, prefix=f"{head}.")
                              + f"; {head}'s settings: {', '.join(fields)}")


def _unknown(what: str, name: str, known: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"no {what} '{prefix}{name}'" + (f" (did you mean '{prefix}{close[0]}'?)" if close else "")


def _check_preset(kind: str, name: str, config_dirs: list[str], registry: Registry) -> None:
    """A chosen preset (``<kind>/<name>.yaml``) sets only options of the component it extends; an
    error names the preset's file, since nothing on the command line was wrong."""
    if name in registry.names(kind):
        return
    from omegaconf import OmegaConf

    for root in reversed(_config_roots(config_dirs)):  # the last directory on the search path wins
        file = root / kind / f"{name}.yaml"
        if not file.is_file():
            continue
        try:
            node = OmegaConf.to_container(OmegaConf.create(file.read_text())) or {}
        except Exception as exc:  # noqa: BLE001 - any YAML problem is the file's
            raise PluginError(f"{kind} preset {file}: not valid YAML: {str(exc).splitlines()[0]}") from None
        defaults = node.pop("defaults", None) if isinstance(node, dict) else None
        base = next((d for d in defaults or [] if isinstance(d, str) and d != "_self_"), None)
        if base not in registry.names(kind):
            return  # a preset of a preset, or of something Hydra resolves: Hydra checks it
        fields = [f.name for f in dataclasses.fields(registry.get(kind, base).config_class())]
        for key in node:
            if key != "name" and key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                raise PluginError(f"{kind} preset {file}: {kind} {base!r} has no option {key!r}"
                                  + (f" (did you mean {close[0]!r}?)" if close else "")
                                  + f"; its options: {', '.join(fields)}")
        return


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_sweep(argv: list[str], registry: Registry) -> None:
    """Check every job of a ``palr-run -m`` sweep before the first one starts, as each job would be
    checked when it starts (types, every option's range, the objective, every component's options):
    a bad value in the last job stops the sweep in one line naming the job and the value, instead of
    after the jobs before it ran. Hydra's basic sweeper only; another sweeper picks values itself.
    Without ``-m``, the one run's configuration is composed, so that a value Hydra cannot take
    (``eval.candidates=abc``) is one line too, before the run's folder is made.

    Cheap: one composition per distinct choice of config groups (``retriever=sasrec,gru4rec``), the
    values (``eval.candidates=5,0``) applied to a copy of it, as Hydra applies them."""
    from hydra import compose as hydra_compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args, _ = get_args_parser().parse_known_args(argv)
    if args.shell_completion or args.help or args.hydra_help or args.cfg:
        return
    search = [f"hydra.searchpath=[file://{Path(args.config_dir).expanduser().resolve()}]"] if args.config_dir else []
    name = args.config_name or "config"
    if not args.multirun:  # one run: only that it composes (a value of the wrong type), in one line
        try:
            with _palr_hydra():
                hydra_compose(name, [*args.overrides, *search])
        except Exception as exc:  # noqa: BLE001 - Hydra would print it over several lines, after making the folder
            raise PluginError(_one_line(exc)) from None
        return
    parser = OverridesParser.create()
    try:
        given = parser.parse_overrides(args.overrides)
    except Exception:  # noqa: BLE001 - Hydra reports its own syntax errors
        return
    with _palr_hydra():
        try:  # the sweeper, and the values a preset sweeps (hydra.sweeper.params)
            first = BasicSweeper.split_arguments(given, None)[0][0]
            sweeper = hydra_compose(name, [*first, *search], return_hydra_config=True).hydra.sweeper
        except Exception:  # noqa: BLE001 - the first job does not compose: its check below says why
            sweeper = {"_target_": BASIC_SWEEPER}
        if sweeper.get("_target_") != BASIC_SWEEPER:
            return
        params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
        overrides = parser.parse_overrides([*params, *args.overrides])
        try:
            jobs = BasicSweeper.split_arguments(overrides, None)[0]
        except Exception:  # noqa: BLE001 - a search space (choice, interval) of another sweeper: its own checks
            return
        swept = {o.get_key_element() for o in overrides if o.is_sweep_override()}
        repository = GlobalHydra.instance().config_loader().repository
        cache: dict[tuple, typing.Any] = {}
        for number, job in enumerate(jobs):
            try:
                _check_job(parser.parse_overrides(job), repository, cache,
                           lambda groups: hydra_compose(name, [*groups, *search]), registry)
            except Exception as exc:  # noqa: BLE001 - whatever the job would have failed with, in one line
                label = " ".join(o for o in job if o.split("=", 1)[0] in swept)
                raise PluginError(f"sweep job {number} of jobs 0-{len(jobs) - 1} ({label}): {_one_line(exc)}; "
                                  "no job was started") from None


def _check_job(overrides: list, repository, cache: dict, compose_groups, registry: Registry) -> None:
    """One sweep job's checks: its config groups composed (once per distinct choice, kept in
    ``cache``), its values applied to a copy, each distinct component node checked once."""
    import copy

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    from .config import check_options
    from .plugins import validate_params

    groups = tuple(o.input_line for o in overrides
                   if o.key_or_group.startswith("hydra/") or repository.group_exists(o.key_or_group))
    values = [o for o in overrides if o.input_line not in groups and not o.key_or_group.startswith("hydra.")]
    if groups not in cache:
        cache[groups] = compose_groups(list(groups))
    cfg = copy.deepcopy(cache[groups])
    ConfigLoaderImpl._apply_overrides_to_config(values, cfg)  # what Hydra does after composing the groups
    config = typed_config(cfg)
    check_options(config, "")
    config.check_objective()
    for kind in KINDS:
        node = dict(getattr(config, kind))
        seen = (kind, repr(sorted(node.items())))
        if seen not in cache:
            cache[seen] = validate_params(registry.get(kind, node.pop("name")), node)


def _one_line(exc: BaseException) -> str:
    """An exception as one line: Hydra's and OmegaConf's span several (the reason in the second,
    a list of available options after it, the search path after that) and keep details in their cause."""
    text = f"{exc}\n{exc.__cause__ or ''}"
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not line.strip().startswith(("full_key:", "reference_type", "object_type"))]
    lines = lines[:next((i for i, line in enumerate(lines) if line.startswith("Config search path")), len(lines))]
    if not lines:
        return type(exc).__name__
    listed = " " + ", ".join(lines[2:]) if len(lines) > 2 and lines[1].endswith(":") else ""
    return ": ".join(lines[:2]) + listed


def typed_config(cfg) -> PalrConfig:
    """The composed config as a :class:`PalrConfig`. Component nodes stay plain dicts with required
    values still ``"???"``, so that palr's check of each component (not OmegaConf's) names what is missing."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    components = {kind: plain.pop(kind) for kind in KINDS}
    schema = OmegaConf.structured(PalrConfig(**{kind: {} for kind in KINDS}))
    return dataclasses.replace(OmegaConf.to_object(OmegaConf.merge(schema, plain)), **components)


def compose(overrides: Sequence[str] = (), registry: Registry | None = None,
            config_dir: str | os.PathLike | None = None):
    """The configuration ``palr-run <overrides>`` would run, as Hydra's ``DictConfig`` with its
    ``hydra`` node (``cfg.hydra.run.dir`` is the run folder it would use).

    :param config_dir: a directory of your own presets, as ``palr-run --config-dir``.
    """
    from hydra import compose as hydra_compose

    registry = registry or load_registry()
    overrides = list(overrides)
    if config_dir is not None:
        folder = Path(config_dir).expanduser().resolve()
        check_component_choices([f"--config-dir={folder}", *overrides], registry)
        overrides.append(f"hydra.searchpath=[file://{folder}]")
    else:
        check_component_choices(overrides, registry)
    prepare_hydra(registry)
    with _palr_hydra():
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
