"""Command-line entry points: ``palr-run`` (Hydra) and ``palr plugins``.

``palr-run`` builds the plugin registry first, then (1) appends every plugin's config directory
to Hydra's search path, (2) offers each registered component that has no YAML file as a config
option built from its dataclass, and (3) composes ``conf/config.yaml`` as usual.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .components import KINDS
from .config import store_schema
from .pipeline import ComponentSpec, PipelineSettings, run_pipeline
from .plugins import PluginError, Registry, load_registry
from .training import TrainerConfig

PRIMARY_CONFIG = "pkg://palr_conf"
log = logging.getLogger("palr")


def _install_search_path(config_dirs: list[str]) -> None:
    from hydra.core.config_search_path import ConfigSearchPath
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    class PalrPluginConfigs(SearchPathPlugin):
        def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
            for path in config_dirs:
                search_path.append(provider="palr-plugin", path=path)

    Plugins.instance().register(PalrPluginConfigs)


def _yaml_options(config_dirs: list[str], group: str) -> set[str]:
    """Names of ``<group>/<name>.yaml`` files in palr's and the plugins' config directories."""
    import importlib.resources

    names: set[str] = set()
    for source in [PRIMARY_CONFIG, *config_dirs]:
        if source.startswith("pkg://"):
            root = importlib.resources.files(source[len("pkg://"):].replace("/", "."))
        else:
            root = Path(source.removeprefix("file://"))
        folder = root / group
        if folder.is_dir():
            names.update(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    return names


def _store_dataclass_options(registry: Registry) -> None:
    """Offer ``<group>=<name>`` for components that bring a dataclass but no YAML file.

    A YAML option of the same name wins and no node is stored, because Hydra would silently
    merge the two.
    """
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for kind, (group, _, _) in KINDS.items():
        existing = _yaml_options(registry.config_dirs, group)
        for name in registry.names(kind):
            reg = registry.get(kind, name)
            if name in existing or reg.config is None:
                continue
            defaults = {f.name: _default(f) for f in dataclasses.fields(reg.config)}
            cs.store(group=group, name=name, node={"name": name, **defaults}, provider=reg.distribution)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        return OmegaConf.structured(value) if dataclasses.is_dataclass(value) else value
    return "???"


def prepare_hydra(registry: Registry) -> None:
    """Make Hydra see the plugins' config dirs, palr's schema and YAML-less component options."""
    _install_search_path(registry.config_dirs)
    store_schema()
    _store_dataclass_options(registry)


def settings_from_config(cfg: DictConfig, work_dir: Path) -> PipelineSettings:
    """Turn the composed Hydra config into typed pipeline settings."""
    container = OmegaConf.to_container(cfg, resolve=True)
    trainer = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainerConfig), container["trainer"]))
    return PipelineSettings(
        dataset=ComponentSpec.from_node(container["dataset"]),
        retriever=ComponentSpec.from_node(container["retriever"]),
        profile=ComponentSpec.from_node(container["profile"]),
        ranker=ComponentSpec.from_node(container["ranker"]),
        trainer=trainer,
        work_dir=work_dir,
        cache_dir=Path(container["cache_dir"]).expanduser(),
        seed=container["seed"],
        k_core=container["preprocess"]["k_core"],
        ks=tuple(container["eval"]["ks"]),
        candidates=container["eval"]["candidates"],
        max_users=container["eval"]["max_users"],
    )


def run(argv: list[str] | None = None) -> None:
    """``palr-run``: compose the config with Hydra and run the pipeline (``-m`` for sweeps)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    try:
        registry = load_registry()
    except PluginError as exc:
        sys.exit(f"palr: {exc}")
    prepare_hydra(registry)

    def task(cfg: DictConfig) -> float:
        work_dir = Path(HydraConfig.get().runtime.output_dir)
        (work_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        try:
            result = run_pipeline(settings_from_config(cfg, work_dir), registry)
        except (PluginError, ValueError, FileNotFoundError) as exc:
            log.error("%s", exc)
            raise SystemExit(f"palr: {exc}") from None
        return result.rows[-1].get("NDCG@10", 0.0)

    task.__module__ = __name__
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=PRIMARY_CONFIG, config_name="config", version_base="1.3")(task)()


def _cmd_plugins(_: argparse.Namespace) -> int:
    registry = load_registry()
    rows = [(r.kind, r.name, r.distribution, r.version, r.plugin) for r in registry.all()]
    header = ("kind", "name", "distribution", "version", "plugin")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip())
    if registry.language_models:
        print("\nlanguage models (ranker.model=<name>, profile.model=<name>):")
        for lm in sorted(registry.language_models.values(), key=lambda m: m.name):
            try:
                where = str(lm.locate())
            except FileNotFoundError as exc:  # ModelNotInstalled says how to install it
                where = f"NOT INSTALLED: {exc}"
            print(f"  {lm.name}  ({lm.distribution} {lm.version}) {lm.description}\n      {where}")
    if registry.config_dirs:
        print("\nconfig directories: " + ", ".join(registry.config_dirs))
    for b in registry.broken:
        print(f"\nBROKEN plugin {b.plugin} ({b.distribution}): {b.error}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``palr``: utility commands (``palr plugins``)."""
    parser = argparse.ArgumentParser(prog="palr", description="palr utilities; experiments run with palr-run")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plugins", help="list every registered component by kind").set_defaults(func=_cmd_plugins)
    args = parser.parse_args(argv)
    return args.func(args)
