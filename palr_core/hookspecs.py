"""The plugin contract: six registration hooks, each called once when palr starts.

A plugin is any module that implements some of these with ``@palr_core.hookimpl`` and is
named by an entry point in the ``palr`` group. Each hook receives a ``register`` callable;
call it once per thing the plugin provides. An implementation may omit arguments it does
not use, so these specs can grow without breaking plugins.
"""

from __future__ import annotations

import pluggy

PROJECT = "palr"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_datasets(register):
    """Collect Dataset classes.

    :param register: call ``register(name, cls, config=ConfigDataclass)``; ``name`` becomes an
        option of the ``dataset`` config group (``palr-run dataset=<name>``) and must be unique
        among datasets. ``cls(**params)`` must build an object with the :class:`palr_core.Dataset`
        interface; ``config`` (optional) is a dataclass whose fields are the accepted params,
        used to validate the YAML and to offer the option when no YAML file exists.
    """


@hookspec
def register_retrievers(register):
    """Collect Retriever classes (``palr-run retriever=<name>``).

    :param register: call ``register(name, cls, config=ConfigDataclass)`` once per retriever;
        ``cls`` implements :class:`palr_core.Retriever`. Names are unique among retrievers.
    """


@hookspec
def register_profile_generators(register):
    """Collect ProfileGenerator classes (``palr-run profile=<name>``).

    :param register: call ``register(name, cls, config=ConfigDataclass)``; ``cls`` implements
        :class:`palr_core.ProfileGenerator`. Names are unique among profile generators.
    """


@hookspec
def register_rankers(register):
    """Collect Ranker classes (``palr-run ranker=<name>``).

    :param register: call ``register(name, cls, config=ConfigDataclass)``; ``cls`` implements
        :class:`palr_core.Ranker`. Names are unique among rankers.
    """


@hookspec
def register_language_models(register):
    """Name causal language models, so configs can say ``ranker.model=<name>``.

    :param register: call ``register(name, locate, description="")``; ``locate()`` returns the
        model's local Hugging Face folder or ``.gguf`` file, or raises
        :class:`palr_core.llm.ModelNotInstalled` with the command that installs it. It is called
        only when a run asks for the model, so an absent model costs nothing. Names are unique.
    """


@hookspec
def register_config_dirs(register):
    """Contribute Hydra config directories, so a plugin ships its own YAML options.

    :param register: call ``register("pkg://your_package.conf")`` (or a ``file://`` path); the
        directory holds group folders such as ``retriever/<name>.yaml`` and is appended to
        Hydra's search path before ``palr-run`` composes its config.
    """
