"""The plugin contract: six registration hooks, each called once when palr starts, and the
plugin-API version a plugin states.

A plugin is any module that implements some of these with ``@palr_core.hookimpl`` and is
named by an entry point in the ``palr`` group. Each hook receives a ``register`` callable;
call it once per thing the plugin provides. An implementation may omit arguments it does
not use, so these specs can grow without breaking plugins; an argument a spec does not have
is an error (the plugin is skipped and named).

A plugin module states the plugin API it was written for as a module attribute,
``PALR_PLUGIN_API = 3``. palr loads plugins written for any version from :data:`MIN_PLUGIN_API`
to :data:`PLUGIN_API` and skips any other (one that states none was written for API 1) with one
line that says what to change (:data:`API_CHANGES`; docs/plugins.md, "Migrating to palr 0.3").

What a component class must have is in :mod:`palr_core.components`: the four interfaces, and the
optional methods palr looks for (``check``, ``tune``, ``fit_summary``, ``label``, ``is_trained``).
"""

from __future__ import annotations

import pluggy

PROJECT = "palr"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: the plugin API this palr implements; a plugin states its own as ``PALR_PLUGIN_API``
PLUGIN_API = 3
#: the oldest plugin API this palr still loads (API 2 plugins run unchanged)
MIN_PLUGIN_API = 2
#: what each version changed for plugin authors (shown when a plugin's version is not loaded)
API_CHANGES = {
    1: "the first plugin API (palr 0.1): hooks, Protocols, palr_core.sequential",
    2: ("palr 0.2: Dataset.load(context) receives the RunContext (cache_dir, seed) and a dataset "
        "config no longer has cache_dir; the toolkit moved to palr_core.kit (palr_core.sequential became "
        "palr_core.kit.retrievers); register(name, cls) also takes cls as a 'module:Class' string, "
        "imported on first use; RunContext.rng takes a name as salt and palr seeds every stage, so "
        "components do not seed; TrainerConfig lost patience and monitor (a component's own "
        "patience/max_epochs decide, trainer.max_epochs caps them all); RetrieverConfig.max_epochs "
        "defaults to 200 and patience to 10; RankRequest.extra and Split.targets were removed; "
        "metrics_from_ranks/rank_from_lists work on numpy (mask_history and rank_from_scores are in "
        "palr_core.kit.retrievers)"),
    3: ("palr 0.3: the optional methods (check, tune, fit_summary, label, is_trained) are documented "
        "Protocols in palr_core.components; palr_core.kit no longer has prompts, instructions, columns "
        "and the LLM memory helpers (moved into their only users, the llama_lora and table plugins); "
        "built-ins are palr.plugins.<name>; API 1 plugins are no longer loaded; a dataset may preprocess "
        "its own log (PreprocessesItself.load_sequences, optional)"),
}


@hookspec
def register_datasets(register):
    """Collect Dataset classes (``palr-run dataset=<name>``).

    :param register: call ``register(name, cls, config=ConfigDataclass)`` once per dataset; ``name``
        becomes an option of the ``dataset`` config group and must be unique among datasets.
        ``cls`` is the class or its ``"module:Class"`` path (imported only when a run builds it, so
        runs stay fast, and by ``palr plugins``, which checks every path); ``cls(**params)`` must build an object with the
        :class:`palr_core.Dataset` interface. ``config`` is a dataclass whose fields, with their
        defaults, are the accepted params: the single source of the option's defaults (without
        it, palr derives one from the signature of ``cls.__init__``).
    """


@hookspec
def register_retrievers(register):
    """Collect Retriever classes (``palr-run retriever=<name>``).

    :param register: call ``register(name, cls, config=ConfigDataclass)`` once per retriever;
        ``cls`` (a class or ``"module:Class"``) implements :class:`palr_core.Retriever`, and may
        also be :class:`~palr_core.components.Persistent`, :class:`~palr_core.components.Summarised`
        or :class:`~palr_core.components.Checkable`. Names are unique among retrievers.
    """


@hookspec
def register_profile_generators(register):
    """Collect ProfileGenerator classes (``palr-run profile=<name>``).

    :param register: call ``register(name, cls, config=ConfigDataclass)``; ``cls`` (a class or
        ``"module:Class"``) implements :class:`palr_core.ProfileGenerator`. Names are unique
        among profile generators.
    """


@hookspec
def register_rankers(register):
    """Collect Ranker classes (``palr-run ranker=<name>``).

    :param register: call ``register(name, cls, config=ConfigDataclass)``; ``cls`` (a class or
        ``"module:Class"``) implements :class:`palr_core.Ranker`, and may also be
        :class:`~palr_core.components.Tunable`, :class:`~palr_core.components.Labelled`,
        :class:`~palr_core.components.Persistent`, :class:`~palr_core.components.Summarised` or
        :class:`~palr_core.components.Checkable`. Names are unique among rankers.
    """


@hookspec
def register_language_models(register):
    """Name causal language models, so configs can say ``ranker.model=<name>``.

    :param register: call ``register(name, locate, description="")``; ``locate()`` returns the
        model's local Hugging Face folder or ``.gguf`` file, or raises
        :class:`palr_core.ModelNotInstalled` with the command that installs it. It is called
        only when a run asks for the model, so an absent model costs nothing. Names are unique.
    """


@hookspec
def register_config_dirs(register):
    """Contribute Hydra config directories, so a plugin ships presets of its components.

    :param register: call ``register("pkg://your_package.conf")`` (or a ``file://`` path); the
        directory holds group folders such as ``retriever/<preset>.yaml``, appended to Hydra's
        search path before ``palr-run`` composes its config. A preset extends a registered
        option and says only what differs from its dataclass: a ``defaults: [<name>, _self_]``
        list, then the changed keys.
    """


# -- what palr 0.3 moved or removed: named when a plugin's import fails on it ------------------
#: where docs/plugins.md says how to port a plugin to this palr
MIGRATING = "docs/plugins.md#migrating-to-palr-03"
#: modules a plugin may still import that palr no longer has -> what became of them
MOVED_MODULES = {
    "palr_core.sequential": "palr_core.sequential was renamed palr_core.kit.retrievers in plugin API 2 and "
                            "removed in palr 0.3: import from palr_core.kit.retrievers",
    **{f"palr_core.kit.{module}": f"palr_core.kit.{module} moved into the {plugin} plugin in palr 0.3 (its only "
                                  "user): copy what you need into your plugin"
       for module, plugin in (("prompts", "llama_lora"), ("instructions", "llama_lora"), ("columns", "table"))},
}
#: names plugin API 1 imported from ``palr_core`` itself -> the kit module that has them since API 2
_API1_NAMES = {
    **dict.fromkeys(["RetrieverConfig"], "palr_core.kit.configs"),
    **dict.fromkeys(["RetrieverModule", "TrainedRetriever", "TransformerEncoder", "left_pad", "trim_padding",
                     "top_k_unseen", "mask_history", "rank_from_scores"], "palr_core.kit.retrievers"),
    **dict.fromkeys(["make_trainer"], "palr_core.kit.training"),
    **dict.fromkeys(["chat_prompt_ids", "load_causal_lm", "resolve_dtype", "resolve_language_model"],
                    "palr_core.kit.llm"),
}
#: names palr 0.3 moved out of the kit -> (the kit module that had them, the plugin that has them now)
_MOVED_OUT = {
    **dict.fromkeys(["PromptError", "build_prompt", "check_templates", "default_templates", "render_item",
                     "render_items"], ("palr_core.kit.prompts", "llama_lora")),
    **dict.fromkeys(["InstructionConfig", "InstructionExample", "InteractionGraph", "build_instructions",
                     "build_choice_instructions"], ("palr_core.kit.instructions", "llama_lora")),
    **dict.fromkeys(["available_memory", "release_memory", "keep_freed_memory", "resident_memory",
                     "fine_tuning_memory"], ("palr_core.kit.llm", "llama_lora")),
}
#: ``(module, name)`` a plugin may still import that palr no longer has there -> what became of it
MOVED_NAMES = {
    **{("palr_core", name): f"palr_core.{name} moved to {module} in plugin API 2 and palr 0.3 removed the old "
                            f"name: import it from {module}" for name, module in _API1_NAMES.items()},
    **{(where, name): f"{module}.{name} moved into the {plugin} plugin in palr 0.3 (its only user): copy what "
                      "you need into your plugin"
       for name, (module, plugin) in _MOVED_OUT.items() for where in ("palr_core", "palr_core.kit", module)},
}
