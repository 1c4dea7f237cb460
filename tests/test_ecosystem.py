"""Hydra's ecosystem with palr-run: grid sweeps, the Optuna sweeper, the submitit launcher and shell
completion, each run as docs/sweeps.md writes it.

The commands below are copied from docs/sweeps.md and run as written, in a temporary folder (so
``multirun/`` lands there), on the embedded synthetic data with cheap components. The last test
holds the page to its rule: every shell command in it is one of these, or carries its measured time
on 2 CPU cores, or says it needs a cluster.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_cli import palr_run

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "sweeps.md"

#: the page's commands that these tests run, exactly as the page writes them
GRID = "palr-run -m retriever=popularity,sasrec trainer.max_epochs=3 ranker=identity profile=none"
COMPARE = ("python -c \"import glob, json, yaml; [print(job, *yaml.safe_load(open(job + '.hydra/overrides.yaml')), "
           "json.load(open(job + 'metrics.json'))['rows'][-1]['NDCG@10']) "
           "for job in sorted(glob.glob('multirun/*/*/*/'))]\"")
REPORT = "palr report multirun"
REPORT_OTHER = "palr report multirun --metric HR@10 --reference popularity -o cmp"
OPTUNA = ("palr-run -m hydra/sweeper=optuna hydra.sweeper.direction=maximize hydra.sweeper.n_trials=3 "
          "hydra.sweeper.sampler.seed=1 retriever=sasrec trainer.max_epochs=3 'retriever.hidden=choice(16,32)' "
          "'retriever.lr=tag(log,interval(0.001,0.01))' ranker=identity profile=none")
OPTUNA_FAILURES = ("palr-run -m hydra/sweeper=optuna hydra.sweeper.direction=maximize hydra.sweeper.n_trials=3 "
                   "hydra.sweeper.sampler.seed=0 hydra.sweeper.max_failure_rate=1.0 'preprocess.k_core=choice(5,1000)' "
                   "retriever=popularity ranker=identity profile=none")
SUBMITIT = ("palr-run -m hydra/launcher=submitit_local seed=1,2 "
            "retriever=popularity ranker=identity profile=none")
INSTALL = 'eval "$(palr-run -sc install=bash)"'
SLURM_KEYS = "palr-run hydra/launcher=submitit_slurm hydra.launcher.partition=gpu --cfg hydra -p hydra.launcher"
#: run by tests/test_cli.py::test_parallel_sweep_with_the_joblib_launcher (its helper adds the
#: fast components and hydra.sweep.dir)
JOBLIB = "palr-run -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed=1,2 retriever=popularity ranker=identity profile=none"
TESTED = {GRID, COMPARE, REPORT, REPORT_OTHER, OPTUNA, OPTUNA_FAILURES, SUBMITIT, INSTALL, SLURM_KEYS, JOBLIB}

#: single-threaded torch in every job: the machine's two cores are shared with other tests
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_documented(command: str, tmp_path: Path):
    """Run one of the page's ``palr-run`` commands in ``tmp_path``, as written (no extra overrides)."""
    assert command in PAGE.read_text(), f"docs/sweeps.md no longer shows: {command}"
    argv = shlex.split(command)
    assert argv[0] == "palr-run"
    return palr_run(*argv[1:], tmp_path=tmp_path, env=ENV, fast=False)


def sweep_dir(tmp_path: Path) -> Path:
    """The one sweep folder a command wrote under ``tmp_path/multirun/<date>/<time>``."""
    folders = list((tmp_path / "multirun").glob("*/*"))
    assert len(folders) == 1, folders
    return folders[0]


def jobs(sweep: Path) -> dict[str, dict]:
    """Job number -> its overrides (``key=value`` as a dict) and its ranker row's NDCG@10."""
    out = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        metrics = json.loads((job / "metrics.json").read_text())
        out[job.name] = {"overrides": dict(o.split("=", 1) for o in overrides),
                         "ndcg10": metrics["rows"][-1]["NDCG@10"], "metrics": metrics}
    return out


@pytest.mark.slow
def test_a_grid_sweep_and_the_page_s_way_to_compare_its_jobs(tmp_path):
    run_documented(GRID, tmp_path)
    found = jobs(sweep_dir(tmp_path))
    assert [j["overrides"]["retriever"] for j in found.values()] == ["popularity", "sasrec"]
    assert [j["metrics"]["rows"][-1]["model"] for j in found.values()] == [
        "ranker: identity over popularity top-50", "ranker: identity over sasrec top-50"]
    # the page's comparison one-liner, run as written where the sweep was run
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # this python
    out = subprocess.run(["bash", "-c", COMPARE], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 2
    for line, job in zip(lines, found.values()):
        assert "retriever=" + job["overrides"]["retriever"] in line.split()
        assert float(line.split()[-1]) == job["ndcg10"]
    # the sweep's own report (written when it ended), then the page's two report commands
    sweep_report = (sweep_dir(tmp_path) / "report.md").read_text()
    for command in (REPORT, REPORT_OTHER):
        assert command in PAGE.read_text()
        out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             check=True).stdout
        assert "| retriever=popularity · retriever | 600 |" in out and "| retriever=sasrec · retriever | 600 |" in out
    rows = [line for line in (tmp_path / "multirun" / "report.md").read_text().splitlines()
            if line.startswith("| retriever=")]
    assert rows == [line for line in sweep_report.splitlines() if line.startswith("| retriever=")]
    assert "| reference |" in rows[1]  # the SASRec retriever row is the default reference
    assert "Best HR@10: **retriever=popularity · retriever**" in (tmp_path / "cmp" / "report.md").read_text()
    assert {p.name for p in (tmp_path / "cmp").iterdir()} == {"report.md", "report.csv", "report.png"}


@pytest.mark.slow
def test_an_optuna_search_records_the_best_job(tmp_path):
    """optimization_results.yaml names the job with the highest ranker NDCG@10 (palr-run's objective)."""
    proc = run_documented(OPTUNA, tmp_path)
    sweep = sweep_dir(tmp_path)
    found = jobs(sweep)
    assert sorted(found) == ["0", "1", "2"]
    for number, job in found.items():
        hydra_cfg = yaml.safe_load((sweep / number / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["sweeper"]["direction"] == "maximize" and hydra_cfg["sweeper"]["n_trials"] == 3
        assert job["overrides"]["retriever.hidden"] in {"16", "32"}
        assert 0.001 <= float(job["overrides"]["retriever.lr"]) <= 0.01
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["name"] == "optuna" and set(result["best_params"]) == {"retriever.hidden", "retriever.lr"}
    values = [job["ndcg10"] for job in found.values()]
    assert result["best_value"] == pytest.approx(max(values), abs=1e-12)
    assert len(set(values)) == 1 or result["best_value"] != pytest.approx(min(values), abs=1e-12)  # maximised
    best = [job for job in found.values()
            if all(job["overrides"][k] == str(v) for k, v in result["best_params"].items())]
    assert best and best[0]["ndcg10"] == pytest.approx(result["best_value"], abs=1e-12)
    assert f"Best value: {result['best_value']}" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path):
    """palr's errors reach the sweeper as a failed job (not an exit), so Optuna records the trial as
    failed and max_failure_rate decides whether the study goes on."""
    proc = run_documented(OPTUNA_FAILURES, tmp_path)
    sweep = sweep_dir(tmp_path)
    k_core = {job.name: yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())[0]
              for job in sweep.iterdir() if job.is_dir()}
    assert k_core == {"0": "preprocess.k_core=1000", "1": "preprocess.k_core=5", "2": "preprocess.k_core=1000"}
    assert [(sweep / n / "metrics.json").exists() for n in "012"] == [False, True, False]
    console = proc.stdout + proc.stderr
    assert console.count("Failed experiment: palr: dataset 'synthetic': nothing left after 1000-core filtering") == 2
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    ndcg = json.loads((sweep / "1" / "metrics.json").read_text())["rows"][-1]["NDCG@10"]
    assert result["best_params"] == {"preprocess.k_core": 5} and result["best_value"] == pytest.approx(ndcg, abs=1e-12)


@pytest.mark.slow
def test_the_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path):
    run_documented(SUBMITIT, tmp_path)
    sweep = sweep_dir(tmp_path)
    found = jobs(sweep)
    assert [(j["overrides"]["seed"], j["metrics"]["seed"]) for j in found.values()] == [("1", 1), ("2", 2)]
    assert all(j["metrics"]["users_evaluated"] == 600 for j in found.values())
    # submitit's own record of each job: a process of its own, its console in a log file, a result
    logs = sorted(sweep.glob(".submitit/*/*_0_log.out"))
    assert len(logs) == 2 and len(list(sweep.glob(".submitit/*/*_0_result.pkl"))) == 2
    for log in logs:
        assert "palr: results in" in log.read_text() and "Job completed successfully" in log.read_text()


def test_the_slurm_sweep_on_the_page_composes(tmp_path):
    """SLURM is not available here: the page's SLURM command is composed (its first job, printed
    with --cfg), not submitted; its launcher keys must reach the submitit launcher as written."""
    keys = yaml.safe_load(run_documented(SLURM_KEYS, tmp_path).stdout)
    assert keys["_target_"].endswith("SlurmLauncher") and keys["partition"] == "gpu"
    assert {"gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "account", "qos"} <= set(keys)
    [line] = [c for c in page_commands() if "hydra/launcher=submitit_slurm" in c and CLUSTER.search(c)]
    argv = shlex.split(os.path.expandvars(re.split(r"\s+# ", line)[0]))
    assert argv[:2] == ["palr-run", "-m"]
    first_job = [a.split(",")[0] for a in argv[2:]]  # each swept value's first choice
    keys = yaml.safe_load(palr_run(*first_job, "--cfg", "hydra", "-p", "hydra.launcher", tmp_path=tmp_path,
                                   fast=False).stdout)
    given = dict(a.removeprefix("hydra.launcher.").split("=", 1) for a in argv if a.startswith("hydra.launcher."))
    assert given and {k: str(keys[k]) for k in given} == given


def completions(line: str, tmp_path: Path) -> list[str]:
    """What ``palr-run -sc query=bash`` offers for the command line ``line`` (as bash passes it)."""
    proc = palr_run("-sc", "query=bash", tmp_path=tmp_path, env={"COMP_LINE": line}, fast=False)
    return proc.stdout.split()


def test_completion_offers_palr_s_components_presets_and_options(tmp_path):
    assert set(completions("palr-run retriever=", tmp_path)) >= {
        "retriever=sasrec", "retriever=bert4rec", "retriever=lightgcn", "retriever=popularity"}
    assert completions("palr-run retriever=s", tmp_path) == ["retriever=sasrec"]
    # the presets of conf/ and of the plugins, and the plugins' own components
    assert set(completions("palr-run dataset=", tmp_path)) >= {"dataset=ml-1m", "dataset=amazon-beauty",
                                                                "dataset=table", "dataset=synthetic"}
    # keys: the chosen component's own options, from its config dataclass
    assert {"dataset.users=", "dataset.seed="} <= set(completions("palr-run dataset.", tmp_path))
    keys = completions("palr-run retriever=lightgcn retriever.", tmp_path)
    assert "retriever.layers=" in keys and "retriever.blocks=" not in keys
    assert "eval.candidates=" in completions("palr-run eval.", tmp_path)
    # Hydra's plugins are options too
    assert {"hydra/sweeper=optuna"} <= set(completions("palr-run -m hydra/sweeper=", tmp_path))
    assert {"hydra/launcher=joblib", "hydra/launcher=submitit_local", "hydra/launcher=submitit_slurm"} <= set(
        completions("palr-run -m hydra/launcher=", tmp_path))


def test_palr_s_own_check_of_component_names_leaves_completion_alone(tmp_path):
    """palr checks component names in sys.argv before Hydra starts; completion's line is in COMP_LINE,
    so a misspelt name being typed still completes, and the next word is offered."""
    assert "ranker=identity" in completions("palr-run retriever=populrity ranker=", tmp_path)
    assert palr_run("retriever=populrity", tmp_path=tmp_path, check=False, fast=False).returncode != 0


def test_bash_completion_installs_and_completes_in_bash(tmp_path):
    """The page's install line in a real bash, then bash's completion function called as bash calls it."""
    scripts = Path(sys.executable).parent
    if not (scripts / "palr-run").exists() or shutil.which("bash") is None:
        pytest.skip("needs bash and the palr-run script beside this Python")
    assert INSTALL in PAGE.read_text()
    script = INSTALL + """
complete -p palr-run
for line in "palr-run retriever=" "palr-run retriever=po" "palr-run dataset.us"; do
    COMP_LINE="$line"; COMP_POINT=${#line}; COMP_WORDS=($line); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    hydra_bash_completion
    echo "$line -> ${COMPREPLY[*]}"
done
"""
    env = {**os.environ, **ENV, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}",
           "PALR_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert "-F hydra_bash_completion palr-run" in out
    offered = set(out.split("palr-run retriever= -> ")[1].splitlines()[0].split())
    assert {"retriever=bert4rec", "retriever=lightgcn", "retriever=popularity", "retriever=sasrec"} <= offered
    assert all(word.startswith("retriever=") for word in offered) and "retriever=ml-1m" not in offered
    assert "palr-run retriever=po -> retriever=popularity\n" in out
    assert "palr-run dataset.us -> dataset.users=\n" in out


TIMED = re.compile(r"#.*~\s*\d[\d.,]*\s*(s|min|h)\b.*on (an idle )?2 CPU cores")
CLUSTER = re.compile(r"#.*needs a (SLURM|Ray) cluster")


def page_commands() -> list[str]:
    """Every command in the page's ``bash`` blocks, continuation lines joined (comments kept)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", PAGE.read_text(), flags=re.S):
        for command in re.sub(r"\\\n\s*", "", block).splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append(command.strip())
    return commands


def test_every_command_on_the_page_is_tested_timed_or_needs_a_cluster():
    commands = page_commands()
    assert commands
    bare = [re.split(r"\s+# ", c)[0] for c in commands]  # the command without its trailing comment
    untested = [c for c, b in zip(commands, bare)
                if b not in TESTED and not TIMED.search(c) and not CLUSTER.search(c)]
    assert untested == [], "commands in docs/sweeps.md that are neither tested, timed nor cluster-only"
    assert all(c in bare for c in TESTED), "a tested command is no longer on the page as written"
    # Hydra's lexer rejects '~' in an override value: the page uses $HOME
    assert not [c for c in commands if re.search(r"=~", c)]
    # the joblib line is the one tests/test_cli.py runs
    assert 'palr_run("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2",' in (
        REPO / "tests" / "test_cli.py").read_text()
