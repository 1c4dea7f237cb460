"""palr-run and palr plugins: composition, a full default run, sweeps and the errors users hit."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from palr_core import PLUGIN_API, PalrConfig, __version__
from palr_core.composition import prepare_hydra, typed_config, yaml_options
from palr_core.plugins import field_default

REPO = Path(__file__).resolve().parents[1]


#: the components a CLI test uses unless it names its own: fast, so that tests of composition,
#: sweeps and errors do not train SASRec and an LLM every time (test_bare_default_* does that once)
FAST = {"retriever": "popularity", "profile": "none", "ranker": "identity"}


def palr_run(*args: str, tmp_path: Path, env: dict | None = None, check: bool = True, fast: bool = True,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """``palr-run *args`` in ``tmp_path`` (its cache in ``tmp_path/cache``), in a process of its own
    (:func:`palr_process`), to its end."""
    if fast:
        args = (*args, *(f"{g}={o}" for g, o in FAST.items() if not any(a.startswith(f"{g}=") for a in args)))
    with palr_process(args, tmp_path, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    if check and proc.returncode != 0:
        raise AssertionError(f"palr-run {' '.join(args)} failed:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def palr_command(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``palr *args`` (``export``, ``report``, ``recommend``...) in ``cwd``, in a process of its own."""
    with palr_process(args, cwd, env, program="palr", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True) as proc:
        out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def palr_process(args, tmp_path: Path, env: dict | None = None, program: str = "palr-run",
                 **popen) -> subprocess.Popen:
    """Start ``palr-run *args`` in ``tmp_path`` (its cache in ``tmp_path/cache``), or ``palr *args``
    (``program="palr"``; the environment as it is): a :class:`subprocess.Popen` to wait for,
    signal or kill.

    The process is forked from this one once torch, Lightning, transformers, peft and Hydra are
    imported here (:class:`_ForkedPalrRun`): as separate as a new interpreter (its own pid, exit
    code, pipes, signals, files) without ~5-10 s of imports per run. A new interpreter is started
    where a fork could give another run: no ``fork``, more than one torch thread here (an OpenMP
    pool does not survive a fork; conftest.py gives xdist workers one), or what :func:`_forkable`
    refuses."""
    cache = {"PALR_CACHE_DIR": str(tmp_path / "cache")} if program == "palr-run" else {}
    run_env = {**os.environ, **cache, **(env or {})}
    if hasattr(os, "fork") and os.environ.get("OMP_NUM_THREADS") == "1" and _forkable(args, run_env):
        return _ForkedPalrRun([program, *args], cwd=tmp_path, env=run_env, **popen)
    code = {"palr-run": "from palr_core.cli import run; run()", "palr": "from palr_core.cli import main; raise SystemExit(main())"}
    return subprocess.Popen([sys.executable, "-c", code[program], *args], cwd=tmp_path, env=run_env, **popen)


#: the environment the libraries were imported under (:func:`_preimport`)
_IMPORTED_UNDER: dict[str, str] = {}
#: variables the libraries imported here read when they are imported (PYTHONPATH: see _added_paths)
_READ_AT_IMPORT = ("PYTHON", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TORCH_", "CUDA_", "KMP_", "LD_", "HYDRA_")


def _forkable(args, run_env: dict) -> bool:
    """Whether a forked child runs ``args`` as a new interpreter would: not if the run hands jobs to
    a launcher's worker processes (they would outlive the child holding its pipes: joblib's are shut
    down by its interpreter's exit), nor if ``run_env`` changes a variable read at import time."""
    if any(a.startswith("hydra/launcher=") for a in args):
        return False
    if not _IMPORTED_UNDER:
        _preimport()
    changed = {k for k in run_env.keys() | _IMPORTED_UNDER.keys() if run_env.get(k) != _IMPORTED_UNDER.get(k)}
    return not any(k.startswith(_READ_AT_IMPORT) and not (k == "PYTHONPATH" and _added_paths(run_env) is not None)
                   for k in changed)


def _added_paths(run_env: dict) -> list[str] | None:
    """The folders ``run_env``'s PYTHONPATH puts before this process's (a plugin "installed" for one
    run: its child puts them on sys.path as an interpreter would); None if it drops any."""
    new, old = (e.get("PYTHONPATH", "").split(os.pathsep) for e in (run_env, _IMPORTED_UNDER))
    old = [p for p in old if p]
    if new[len(new) - len(old):] != old and old:
        return None
    return [p for p in new[:len(new) - len(old)] if p]


def _preimport() -> None:
    import hydra  # noqa: F401
    import lightning.pytorch  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    from transformers.models.llama import modeling_llama  # noqa: F401

    import palr_core.cli  # noqa: F401
    import palr_core.pipeline  # noqa: F401

    _IMPORTED_UNDER.update(os.environ)


class _ForkedPalrRun(subprocess.Popen):
    """A :class:`subprocess.Popen` whose child is forked, not executed: it takes the pipes Popen
    made as fds 0-2, the cwd and environment, default signal handlers and none of this process's
    exit handlers, runs ``palr_core.cli.run`` (``palr-run``) or ``main`` (``palr``) on ``args[1:]`` and
    exits as the interpreter would
    (``SystemExit``'s code or message; a traceback and 1 on an uncaught exception)."""

    def _execute_child(self, args, executable, preexec_fn, close_fds, pass_fds, cwd, env, startupinfo,
                       creationflags, shell, p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, *rest):
        pid = os.fork()
        if pid == 0:
            _run_in_child(args, cwd, env, (p2cread, c2pwrite, errwrite))
        self.pid, self._child_created = pid, True
        self._close_pipe_fds(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite)  # the child's ends


def _run_in_child(args, cwd, env, fds) -> None:
    import atexit
    import importlib
    import signal
    import traceback

    code = 1
    try:
        atexit._clear()
        for target, fd in enumerate(fds):
            if fd != -1:
                os.dup2(fd, target)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.path[1:1] = _added_paths(env)  # after the script's folder, as PYTHONPATH's are
        importlib.invalidate_caches()
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
        from palr_core.cli import main, run

        try:
            if args[0] == "palr":
                raise SystemExit(main(list(args[1:])))
            run(list(args[1:]))
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)


@pytest.fixture
def hydra_compose(registry):
    prepare_hydra(registry)
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="palr_conf", version_base="1.3"):
        yield compose
    GlobalHydra.instance().clear()


def options(registry, group: str) -> list[str]:
    """Every option of a group: registered components and YAML presets (palr's and the plugins')."""
    names = set(registry.names(group)) if group != "trainer" else {"cpu"}
    return sorted(names | yaml_options(registry.config_dirs, group))


PLACEHOLDERS = {"variant": "ml-100k", "category": "Beauty"}


def compose_config(compose, overrides) -> PalrConfig:
    return typed_config(compose(config_name="config", overrides=overrides))


@pytest.mark.parametrize("group", ["dataset", "retriever", "profile", "ranker", "trainer"])
def test_every_option_composes_and_builds(hydra_compose, registry, group):
    for option in options(registry, group):
        cfg = hydra_compose(config_name="config", overrides=[f"{group}={option}"])
        # required options (``???``: a file path, a MovieLens variant...) get a value of their kind
        required = [f"{group}.{k}={PLACEHOLDERS.get(k, 'placeholder')}" for k in cfg[group]
                    if OmegaConf.is_missing(cfg[group], k)]
        config = compose_config(hydra_compose, [f"{group}={option}", *required])
        if group == "trainer":
            continue  # typed by PalrConfig itself
        node = dict(getattr(config, group))
        component = registry.build(group, node.pop("name"), node)
        assert component is not None, f"{group}={option}"


def test_registry_build_gives_the_component_palr_run_gives(hydra_compose, registry):
    """One source of defaults: a component built in Python equals the one ``palr-run`` builds."""
    config = compose_config(hydra_compose, [])
    for group in ("retriever", "profile", "ranker"):
        node = dict(getattr(config, group))
        name = node.pop("name")
        assert registry.build(group, name, node).config == registry.build(group, name).config, group


def test_yaml_files_say_only_what_their_dataclass_does_not(registry):
    """conf/ holds presets only: each extends a registered option and changes some of its values.
    No file restates a default, names an unknown key, or shadows a registered component."""
    from palr_core.testing import preset_problems

    top = OmegaConf.load(REPO / "conf" / "config.yaml")
    assert set(top) <= {"defaults", "hydra"}, f"config.yaml sets values: {set(top) - {'defaults', 'hydra'}}"
    assert preset_problems("pkg://palr_conf", registry) == []
    groups = sorted({p.parent.name for p in (REPO / "conf").glob("*/*.yaml")})
    assert groups == ["dataset", "experiment", "table2", "trainer"]
    assert len(list((REPO / "conf" / "dataset").glob("*.yaml"))) == 5


@pytest.mark.parametrize("path", sorted((REPO / "conf").glob("experiment/*.yaml")) + sorted(
    (REPO / "conf").glob("table2/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_presets_choose_registered_components_and_change_only_non_defaults(path, registry):
    """An experiment (or Table 2 row) file is global: it overrides groups with registered options
    and sets values that differ from the chosen components' defaults."""
    from palr_core import PalrConfig

    # run-wide groups (trainer, eval, preprocess, store, recommend) take PalrConfig's dataclasses
    run_wide = {f.name: f.default_factory for f in dataclasses.fields(PalrConfig) if f.default_factory is not dataclasses.MISSING}
    assert path.read_text().startswith("# @package _global_\n")
    body = OmegaConf.to_container(OmegaConf.load(path))
    chosen = {"ranker": "llama_lora", "retriever": "sasrec", "profile": "keywords"}
    for entry in body.pop("defaults", []):
        (group, option), = entry.items()
        group = group.removeprefix("override /")
        assert option in registry.names(group), f"{path.name}: {group}={option} is not registered"
        chosen[group] = option
    body.pop("hydra", None)
    for group, values in body.items():
        if group in run_wide:
            defaults = {f.name: field_default(f) for f in dataclasses.fields(run_wide[group])}
        else:
            defaults = {f.name: field_default(f) for f in dataclasses.fields(registry.get(group, chosen[group]).config_class())}
        for key, value in values.items():
            assert key in defaults and value != defaults[key], f"{path.name}: {group}.{key}: {value!r}"


def test_the_preset_check_finds_each_kind_of_mistake(registry, tmp_path):
    from palr_core.testing import preset_problems

    (tmp_path / "retriever").mkdir()
    (tmp_path / "retriever" / "sasrec.yaml").write_text("defaults: [sasrec, _self_]\nhidden: 32\n")
    (tmp_path / "retriever" / "restates.yaml").write_text("defaults: [sasrec, _self_]\nhidden: 64\n")
    (tmp_path / "retriever" / "typo.yaml").write_text("defaults: [sasrec, _self_]\nhiden: 32\n")
    (tmp_path / "retriever" / "loose.yaml").write_text("name: sasrec\nhidden: 32\n")
    problems = "\n".join(preset_problems(f"file://{tmp_path}", registry))
    assert "restates.yaml: hidden: 64 restates SASRecConfig's default" in problems
    assert "typo.yaml: 'hiden' is not an option of sasrec" in problems
    assert "loose.yaml: a preset starts with defaults: [<a registered retriever>, _self_]" in problems
    assert "sasrec.yaml: a preset may not take the name of a registered retriever" in problems


def test_default_config_is_the_documented_pipeline(hydra_compose):
    config = compose_config(hydra_compose, [])
    assert config.dataset["name"] == "synthetic"
    names = (config.retriever["name"], config.profile["name"], config.ranker["name"])
    assert names == ("sasrec", "keywords", "llama_lora")
    assert config.eval.ks == [5, 10, 20] and config.eval.candidates == 50 and config.preprocess.k_core == 5
    assert config.ranker["retriever_weight"] == "auto" and config.trainer.accelerator == "cpu"


@pytest.mark.slow
def test_bare_default_runs_the_full_palr_pipeline(tmp_path):
    """The default composition end to end, shrunk (one epoch per component, 40 users): the full
    default run is the README's command, measured there, not a test."""
    proc = palr_run(f"hydra.run.dir={tmp_path}/run", "eval.max_users=40", "trainer.max_epochs=1",
                    tmp_path=tmp_path, fast=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    models = [row["model"] for row in metrics["rows"]]
    assert models[0].startswith("retriever: sasrec") and "PALR v2 (llama_lora tiny" in models[1]
    assert "profile: keywords" in models[1] and metrics["users_evaluated"] == 40
    # what each training did: the retriever's stop reason, the ranker's fine-tuning
    assert metrics["training"]["retriever"]["stopped_by"] == "max_epochs"
    assert metrics["training"]["ranker"]["examples"] > 0 and metrics["training"]["ranker"]["tokens"] > 0
    # the console is palr's: where it writes, the results, and no library noise
    console = proc.stdout + proc.stderr
    assert f"palr: run folder {tmp_path}/run" in proc.stdout and "| model |" in proc.stdout
    for noise in ("litlogger", "GPU available", "LeafSpec", "Writing model shards", "log_every_n_steps",
                  "set_vital", "is_gradient_checkpointing", "it/s]", "Warning"):
        assert noise not in console, noise
    log_file = (tmp_path / "run" / "palr.log").read_text()
    assert "fit_retriever ..." in log_file and "| model |" in log_file and "NDCG@10" in log_file


def test_help_describes_palr_and_its_groups(tmp_path):
    out = palr_run("--help", tmp_path=tmp_path, fast=False).stdout
    assert out.startswith("palr-run: one PALR experiment") and "powered by Hydra" not in out
    assert "retriever: bert4rec, bpr, caser, gru4rec, lightgcn, ncf, popularity, sasrec" in out
    assert "prompts" not in out


def palr(*args: str, capsys) -> str:
    """``palr *args`` in this process (it prints and returns; these tests are not about the process)."""
    from palr_core.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's --version
        code = exc.code
    assert code == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_version_and_plugins_as_json(capsys):
    from palr_core import __version__

    assert palr("--version", capsys=capsys).strip() == f"palr {__version__}"
    document = json.loads(palr("plugins", "--json", capsys=capsys))
    assert {"kind": "retriever", "name": "sasrec", "distribution": "palr", "version": __version__,
            "plugin": "palr.plugins.sasrec", "plugin_api": PLUGIN_API, "class": "palr.plugins.sasrec.model:SASRecRetriever"} in document["components"]
    assert document["conflicts"] == [] and document["skipped"] == []
    assert {m["name"] for m in document["language_models"]} >= {"smollm2-135m"}


@pytest.mark.slow
def test_a_run_writes_results_and_is_reproducible(tmp_path):
    runs = []
    for i in range(2):
        palr_run(f"hydra.run.dir={tmp_path}/run{i}", tmp_path=tmp_path)
        runs.append(json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()))
    assert runs[0]["rows"] == runs[1]["rows"]
    assert runs[0]["rows"][0]["model"].startswith("retriever:")
    assert {"HR@10", "NDCG@10", "HR@5", "NDCG@20"} <= set(runs[0]["rows"][0])
    run0 = tmp_path / "run0"
    assert (run0 / "config_resolved.yaml").exists() and (run0 / "results.md").exists()
    assert json.loads((run0 / "dataset_stats.json").read_text())["users"] == runs[0]["stats"]["users"]


@pytest.mark.slow
def test_multirun_writes_one_result_per_job(tmp_path):
    palr_run("-m", "eval.candidates=20,30", f"hydra.sweep.dir={tmp_path}/sweep", tmp_path=tmp_path)
    results = sorted((tmp_path / "sweep").glob("*/metrics.json"))
    assert len(results) == 2
    assert [json.loads(p.read_text())["rows"][1]["model"].split("top-")[-1] for p in results] == ["20", "30"]
    # the sweep's report labels each row by the setting it swept, not by job number
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "| eval.candidates=20 · retriever | 600 |" in report and "| eval.candidates=30 · retriever |" in report
    assert "+0.0000 [+0.0000, +0.0000] (n=600) | 1.0000 | 1.0000 |" in report  # same model, same users
    assert (tmp_path / "sweep" / "report.csv").is_file() and (tmp_path / "sweep" / "report.png").is_file()


def test_unknown_option_lists_the_available_ones(tmp_path):
    proc = palr_run("retriever=populrity", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0
    assert "no retriever named 'populrity' (did you mean 'popularity'?); available: bert4rec" in proc.stderr
    proc = palr_run("-m", "dataset=ml-1m,ml-2m", tmp_path=tmp_path, check=False)  # sweeps are checked too
    assert "no dataset named 'ml-2m'" in proc.stderr and "presets: amazon-beauty, ml-100k" in proc.stderr


def test_misspelt_key_fails_at_composition(tmp_path):
    proc = palr_run("eval.candidatez=3", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "candidatez" in proc.stderr


def test_a_misspelt_component_option_is_answered_with_the_components_options(tmp_path):
    proc = palr_run("retriever=lightgcn", "retriever.layer=2", f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path,
                    check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "+retriever" not in proc.stderr
    assert ("retriever 'lightgcn' has no option retriever.layer (did you mean retriever.layers?); its options: "
            "maxlen, hidden") in proc.stderr
    assert not (tmp_path / "run" / "dataset_stats.json").exists()  # refused before any work


def test_a_required_option_left_out_is_named_with_how_to_give_it(tmp_path):
    proc = palr_run("dataset=table", f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "dataset 'table' needs dataset.interactions (it has no default)" in proc.stderr


def test_a_wrong_value_type_names_the_option(tmp_path):
    proc = palr_run("dataset.users=many", f"hydra.run.dir={tmp_path}/run", tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "dataset 'synthetic': dataset.users:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_palr_plugins_lists_components_with_their_distribution(capsys):
    out = palr("plugins", capsys=capsys)
    lines = [line.split() for line in out.splitlines()]
    assert ["retriever", "popularity", "palr", __version__, "palr.plugins.popularity"] in lines
    assert ["dataset", "synthetic", "palr", __version__, "palr.plugins.synthetic"] in lines
    assert f"smollm2-135m  (palr {__version__})" in out  # language models, with where their files are


@pytest.mark.slow
def test_parallel_sweep_with_the_joblib_launcher(tmp_path):
    palr_run("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2",
             f"hydra.sweep.dir={tmp_path}/sweep", tmp_path=tmp_path)
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2


def test_a_preset_of_your_own_from_a_config_dir(tmp_path):
    (tmp_path / "myconf" / "dataset").mkdir(parents=True)
    (tmp_path / "myconf" / "dataset" / "small.yaml").write_text("defaults: [synthetic, _self_]\nusers: 100\n")
    palr_run("--config-dir", str(tmp_path / "myconf"), "dataset=small", f"hydra.run.dir={tmp_path}/run",
             tmp_path=tmp_path)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["stats"]["users"] == 100


def test_a_component_with_neither_yaml_nor_dataclass_can_be_chosen(tmp_path):
    """Its config is derived from its __init__, offered to Hydra, and the run builds it."""
    import types

    from palr_core import hookimpl
    from palr_core.plugins import load_registry

    class Bare:
        def __init__(self, width: int = 3):
            self.width = width

        def fit(self, data, context): ...
        def retrieve(self, histories, k): ...

    module = types.ModuleType("bare_plugin")
    module.PALR_PLUGIN_API = 3
    module.register_retrievers = hookimpl(lambda register: register("bare", Bare))
    registry = load_registry(extra_plugins=[("bare", module)])
    prepare_hydra(registry)
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="palr_conf", version_base="1.3"):
        config = typed_config(compose(config_name="config", overrides=["retriever=bare", "retriever.width=5"]))
    GlobalHydra.instance().clear()
    node = dict(config.retriever)
    assert registry.build("retriever", node.pop("name"), node).width == 5


def test_trainer_threads_is_a_number_or_auto_and_is_applied_once(monkeypatch):
    import torch

    from palr_core.config import OptionError, TrainerConfig
    from palr_core.pipeline import use_threads

    assert TrainerConfig(threads=3).cpu_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert TrainerConfig().cpu_threads() == len(os.sched_getaffinity(0))  # the CPUs it may use
    with pytest.raises(OptionError, match="trainer.threads must be a number of threads >= 1 or auto, got 'four'"):
        TrainerConfig(threads="four").cpu_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a launcher's share
    assert TrainerConfig().cpu_threads() == 1
    before = torch.get_num_threads()
    try:
        assert use_threads(TrainerConfig(threads=1)) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
