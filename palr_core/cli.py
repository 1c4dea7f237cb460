"""Command-line entry points: ``palr-run`` (Hydra) and ``palr`` (``plugins``, ``new-plugin``).

``palr-run`` builds the plugin registry first, then (1) appends every plugin's config directory
to Hydra's search path, (2) offers every registered component as a config option whose values are
its config dataclass's defaults, and (3) composes ``conf/config.yaml`` as usual. Component nodes
are left open, so a misspelt key reaches palr's own check, which names the component's options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from . import __version__
from .atomic import write_with
from .composition import PRIMARY_CONFIG, check_component_choices, check_sweep, prepare_hydra, typed_config
from .config import OptionError
from .plugins import PluginError, Registry, load_registry
from .result_files import check_model_files

log = logging.getLogger("palr")



def run(argv: list[str] | None = None) -> None:
    """``palr-run``: compose the config with Hydra and run the pipeline (``-m`` for sweeps)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import DictConfig

    from .data import DataError
    from .pipeline import RunFolderError, run_pipeline

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    registry = load_registry()
    try:
        check_component_choices(sys.argv[1:], registry)
        check_output_folder(sys.argv[1:])
    except (PluginError, ValueError) as exc:
        sys.exit(f"palr: {exc}")
    prepare_hydra(registry)
    try:
        check_sweep(sys.argv[1:], registry)
    except PluginError as exc:
        sys.exit(f"palr: {exc}")
    stopped: dict[str, int] = {}
    _stop_on_signals(stopped)

    def task(cfg: DictConfig) -> float:
        work_dir = Path(HydraConfig.get().runtime.output_dir)
        print(f"palr: run folder {work_dir}", flush=True)
        multirun = HydraConfig.get().mode == RunMode.MULTIRUN
        if multirun:  # a sweeper optimises the objective: one it cannot read stops the sweep, not a job
            try:
                typed_config(cfg).check_objective()
            except OptionError as exc:
                raise SystemExit(f"palr: {exc}") from None
        try:
            config = typed_config(cfg)
            check_model_files(work_dir)  # a resumed folder's torn adapter or model: one named line
            result = run_pipeline(config, registry, work_dir)
        except (KeyboardInterrupt, SystemExit) as exc:
            if not stopped:
                raise
            where = f"during its stage {exc.palr_stage!r}" if hasattr(exc, "palr_stage") else "before its first stage"
            message = (f"palr: {signal.Signals(stopped['signal']).name} stopped the run in {work_dir} {where}; "
                       "the same command resumes it")
            logging.getLogger("palr.results").error(message)
            print(message, file=sys.stderr, flush=True)
            raise SystemExit(128 + stopped["signal"]) from None
        except (PluginError, DataError, ValueError, FileNotFoundError, RunFolderError) as exc:
            logging.getLogger("palr.results").error("palr: %s", exc)  # into palr.log; the console gets it below
            if multirun:  # a failed job, recorded by sweepers and launchers
                raise RuntimeError(f"palr: {exc}") from None
            _discard_if_refused(work_dir)
            raise SystemExit(f"palr: {exc}") from None
        print(f"palr: results in {work_dir / 'results.md'} and {work_dir / 'metrics.json'}")
        return config.objective_value(result)

    task.__module__ = __name__
    hydra.main(config_path=PRIMARY_CONFIG, config_name="config", version_base="1.3")(task)()


def check_output_folder(argv: list[str]) -> None:
    """Refuse, in one line naming the setting, a run folder (``hydra.run.dir``; ``hydra.sweep.dir``
    with ``-m``) that lies below a file or in a folder nobody can write: Hydra would otherwise fail
    with a traceback while making it. Only the part before the first ``${`` is checked (the
    default's ``outputs/${now:...}``: the folder it is made in)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if args.shell_completion or args.help or args.hydra_help or args.cfg:
        return
    key = "hydra.sweep.dir" if args.multirun else "hydra.run.dir"
    given = [o.split("=", 1)[1] for o in args.overrides if o.startswith(f"{key}=")]
    chosen = given[-1] if given else ("multirun/" if args.multirun else "outputs/")
    setting = f"{key}={chosen}" if given else f"the default {key} ({Path.cwd() / chosen}/...)"
    static, dynamic, _ = chosen.partition("${")
    path = Path(static).expanduser().absolute()
    if dynamic and not static.endswith("/"):
        path = path.parent  # "runs/x-${now:...}": it is made in runs/
    expected = "expected a folder palr can write the run into"
    for folder in [path, *path.parents]:
        if folder.exists():
            break
    if not folder.is_dir():
        where = "it is a file" if folder == path and not dynamic else f"{folder} is a file"
        raise ValueError(f"{setting}: {where}; {expected}")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"{setting}: cannot write in {folder} ({exc.strerror or exc}); {expected}") from None


def _stop_on_signals(stopped: dict[str, int]) -> None:
    """SIGTERM and SIGINT stop a run as Ctrl-C does, recording which signal came: the run then exits
    with 128 + its number and one line saying where it stopped (Lightning, which handles both signals
    itself inside training, calls this handler too)."""
    def handler(signum, frame):
        stopped.setdefault("signal", signum)
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _discard_if_refused(work_dir: Path) -> None:
    """Remove the folder of a run refused before its first stage: it holds only what Hydra wrote
    (``.hydra/``, ``palr.log``), so a mistyped option leaves no empty run behind. A folder with
    anything of a run in it (``run.json``, checkpoints) is kept."""
    try:
        if {p.name for p in work_dir.iterdir()} - {".hydra", "palr.log"}:
            return
        shutil.rmtree(work_dir)
        for parent in work_dir.parents[:2]:  # outputs/<day>/, then outputs/, when they hold nothing else
            if parent == Path.cwd() or Path.cwd().is_relative_to(parent):
                break
            parent.rmdir()
    except OSError:
        pass


def _cmd_plugins(args: argparse.Namespace) -> int:
    registry = load_registry()
    registry.verify()  # import every "module:Class" now: a bad path or config field shows here, not at palr-run
    if args.json:
        print(json.dumps(plugins_document(registry), indent=2))
    else:
        print_plugins(registry)
    return 0


def plugins_document(registry: Registry) -> dict:
    """What ``palr plugins --json`` prints: components, language models, config dirs, conflicts, skips."""
    def where(model) -> dict:
        try:
            return {"path": str(model.locate()), "installed": True}
        except FileNotFoundError as exc:
            return {"installed": False, "install": str(exc)}

    return {
        "palr": __version__,
        "components": [{"kind": r.kind, "name": r.name, "distribution": r.distribution, "version": r.version,
                        "plugin": r.plugin, "plugin_api": r.api,
                        "class": r.cls if isinstance(r.cls, str) else f"{r.cls.__module__}:{r.cls.__qualname__}"}
                       for r in registry.all()],
        "language_models": [{"name": m.name, "distribution": m.distribution, "version": m.version,
                             "description": m.description, **where(m)}
                            for m in sorted(registry.language_models.values(), key=lambda m: m.name)],
        "config_dirs": registry.config_dirs,
        "conflicts": [c.message() for c in registry.conflicts.values()] + registry.model_conflicts(),
        "skipped": [{"plugin": b.plugin, "distribution": b.distribution, "error": b.error, "missing": b.missing}
                    for b in registry.broken],
    }


def print_plugins(registry: Registry) -> None:
    """``palr plugins``: components, language models, config directories, conflicts, and what was
    skipped with why (a plugin that failed to load or registered nothing, a component whose class
    or config :meth:`~palr_core.plugins.Registry.verify` refused)."""
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
    conflicts = [c.message() for c in registry.conflicts.values()] + registry.model_conflicts()
    if conflicts:
        print("\nCONFLICTS (these names cannot be used until all but one plugin is uninstalled):")
        for message in conflicts:
            print(f"  {message}")
    if registry.broken:
        print("\nSKIPPED (plugins, or their components, that cannot be used; see docs/plugins.md):")
        for b in registry.broken:
            print(f"  {b.plugin} ({b.distribution}): {b.error}")


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    from .scaffold import run_command, write_plugin

    try:
        root = write_plugin(args.name, Path(args.directory), args.kind)
    except (ValueError, FileExistsError) as exc:
        print(f"palr: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {root}\n  pip install -e {root}   # then: palr plugins; {run_command(args.name, args.kind)}\n"
          f"  pytest {root}            # its own tests, on palr's tiny data")
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:
    if args.k < 1:
        print(f"palr: -k must be 1 or more (each user's top K), got {args.k}", file=sys.stderr)
        return 2
    answered = None if args.recompute else _recommend_from_file(args)
    if isinstance(answered, int):
        return answered
    from .api import load_run
    from .data import DataError
    from .pipeline import RunFolderError
    from .ranking import candidate_count

    try:
        run = load_run(args.run_dir)
        users = [run.data.user_ids[run.user_index(u)] for u in args.user]
        recommended = run.recommend_many(users, args.k)
    except KeyError as exc:
        print(f"palr: {exc.args[0]}", file=sys.stderr)
        return 2
    except (PluginError, DataError, ValueError, FileNotFoundError, RunFolderError) as exc:
        print(f"palr: {exc}", file=sys.stderr)
        return 2
    label = getattr(run.ranker, "label", run.names["ranker"])
    candidates = max(candidate_count(run.config.eval), args.k)
    answers = [(user, recs, len(run.data.sequences[run.user_index(user)]), run.history(user)[-1][1])
               for user, recs in recommended.items()]
    _print_recommendations(answers, label, run.names["retriever"], candidates, args.json)
    if answered:  # why this took seconds: the file could not answer
        print(f"palr: answered by the run's models: {answered}", file=sys.stderr)
    return 0


def _recommend_from_file(args: argparse.Namespace) -> int | str | None:
    """Answer from the run's ``recommendations.parquet`` (``recommend.precompute``), importing no model
    library, and return the exit code; or why the file cannot answer every user with ``-k`` items as
    the models would (``None``: there is no file, or the folder is no finished run)."""
    from .api import Recommendation
    from .result_files import ResultFileError, read_recommendations
    from .runs import RECOMMENDATIONS

    run_dir = Path(args.run_dir).expanduser()
    source = run_dir / RECOMMENDATIONS
    try:
        record = json.loads((run_dir / "run.json").read_text())
        finished = isinstance(record, dict) and record.get("finished") is True and (run_dir / "metrics.json").is_file()
    except (OSError, ValueError):
        finished = False
    if not finished or not source.is_file():
        return None  # load_run says what the folder is, or answers from the models
    try:
        table, about = read_recommendations(source, args.user)
    except ResultFileError as exc:
        print(f"palr: {exc}; or ask the models with --recompute", file=sys.stderr)
        return 2
    rows: dict[str, list[dict]] = {}
    for row in table.to_pylist():
        rows.setdefault(str(row["user"]), []).append(row)
    missing = [u for u in args.user if u not in rows]
    if missing or args.k > about["k"] or max(about["eval_candidates"], args.k) != about["candidates"]:
        return (f"user {missing[0]} is not among the evaluated users whose answers {RECOMMENDATIONS} holds"
                if missing else f"{RECOMMENDATIONS} holds each user's top {about['k']} (recommend.k), "
                f"ranked among {about['candidates']} candidates")
    answers = []
    for user in args.user:
        ranked = sorted(rows[user], key=lambda r: r["rank"])[:args.k]
        first = ranked[0]
        if [r["rank"] for r in ranked] != list(range(1, len(ranked) + 1)):
            print(f"palr: {source} is not a recommendations file palr wrote: user {user}'s ranks are not "
                  "1, 2, 3, ...; run the run again to rewrite it; or ask the models with --recompute", file=sys.stderr)
            return 2
        recs = [Recommendation(rank=r["rank"], item=r["item"], title=r["title"] or "",
                               retriever_rank=r["retriever_rank"], retriever_score=r["retriever_score"])
                for r in ranked]
        answers.append((first["user"], recs, first["history_length"], first["last_title"] or ""))
    _print_recommendations(answers, about["ranker"], about["retriever"], about["candidates"], args.json)
    return 0


def _print_recommendations(answers: list[tuple], ranker: str, retriever: str, candidates: int, as_json: bool) -> None:
    """``palr recommend``'s output: per ``(user, recommendations, history length, last title)``, a
    table, or one JSON array for a program."""
    if as_json:
        print(json.dumps([{"user": user, "recommendations": [dataclasses.asdict(r) for r in recs]}
                          for user, recs, _, _ in answers], indent=1, default=str))
        return
    for user, recs, seen, last in answers:
        print(f"user {user}: top {len(recs)} by {ranker} over {retriever}'s top-{candidates} (after {seen} "
              f"interactions, last: {last})")
        width = max(len(str(r.item)) for r in recs)
        print(f"  rank  {'item':<{width}}  retriever rank  score     title")
        for r in recs:
            print(f"  {r.rank:>4}  {str(r.item):<{width}}  {r.retriever_rank:>14}  {r.retriever_score:<8.4g}  {r.title}")


def _cmd_export(args: argparse.Namespace) -> int:
    import pyarrow.compute as pc
    import pyarrow.csv
    import pyarrow.parquet as pq

    from .result_files import ResultFileError, read_rankings
    from .runs import RANKINGS

    run_dir = Path(args.run_dir).expanduser()
    source = run_dir / RANKINGS
    if not source.is_file():
        why = ("the run has not finished" if (run_dir / "run.json").is_file() and not (run_dir / "metrics.json").is_file()
               else "it is not a palr run folder, or its run finished before palr wrote rankings")
        print(f"palr: no {RANKINGS} in {run_dir}: {why}", file=sys.stderr)
        return 2
    fmt = args.format or (Path(args.output).suffix.lstrip(".") if args.output else "csv")
    if fmt not in ("csv", "parquet"):
        print(f"palr: --format must be csv or parquet, got {fmt!r}", file=sys.stderr)
        return 2
    if args.k is not None and args.k < 1:
        print(f"palr: -k must be 1 or more (each user's top K), got {args.k}", file=sys.stderr)
        return 2
    try:
        table = read_rankings(source)  # every column checked: a damaged or crafted file is one named line
    except ResultFileError as exc:
        print(f"palr: {exc}", file=sys.stderr)
        return 2
    if args.k is not None:
        table = table.filter(pc.less_equal(table["rank"], args.k))
    default = run_dir / f"rankings{'' if args.k is None else f'_top{args.k}'}.{fmt}"
    target = Path(args.output).expanduser() if args.output else default
    if _runs_own_file(run_dir, target):
        print(f"palr: {target} is one of the run's own files; give another --output", file=sys.stderr)
        return 2
    target.parent.mkdir(parents=True, exist_ok=True)
    try:  # a temporary file, then one rename: a kill never leaves half a file in place of a whole one
        write_with(target, (lambda tmp: pyarrow.csv.write_csv(table, tmp)) if fmt == "csv"
                   else (lambda tmp: pq.write_table(table, tmp)), run_dir if target.parent == run_dir else None)
    except OSError as exc:
        print(f"palr: cannot write {target} ({exc.strerror or exc}); give --output a path palr can write",
              file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"palr: cannot write {target}: {exc}", file=sys.stderr)
        return 2
    users = len(pc.unique(table["user"]))
    print(f"palr: {table.num_rows:,} rows ({users:,} users, ranked lists of up to "
          f"{pc.max(table['rank']).as_py()} items) written to {target}")
    return 0


def _runs_own_file(run_dir: Path, target: Path) -> bool:
    """Whether writing ``target`` would replace what the run wrote: one of its top-level files
    (:data:`~palr_core.runs.RUN_FILES`) or an existing file in one of its subfolders (models,
    checkpoints, training logs). An earlier export beside them may be replaced."""
    from .runs import RUN_FILES

    run, where = run_dir.resolve(), target.resolve()
    if where.parent == run:
        return where.name in RUN_FILES
    return where.is_relative_to(run) and where.exists()


def _cmd_report(args: argparse.Namespace) -> int:
    from palr.report import write_report  # the report is palr's, not the framework's

    out = args.output or (args.dirs[0] if len(args.dirs) == 1 else ".")
    try:
        report, written = write_report(args.dirs, out, args.metric, args.reference, args.figures)
    except OSError as exc:
        if exc.filename and Path(exc.filename).parent.resolve() == Path(out).expanduser().resolve():
            print(f"palr: cannot write the report into {out} ({exc.strerror or exc}); give --output a folder "
                  "palr can write", file=sys.stderr)
        else:
            print(f"palr: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"palr: {exc}", file=sys.stderr)
        return 2
    print(written[0].read_text())
    for problem in report.skipped:
        print(f"palr: skipped {problem}", file=sys.stderr)
    print("palr: wrote " + ", ".join(str(p) for p in written)
          + ("" if len(written) == 3 else " (no report.png: pip install matplotlib, or palr[report])"))
    return 0


def _cmd_store(args: argparse.Namespace) -> int:
    from .store import store_command

    if (args.action == "rm") != (args.key is not None) or (args.action == "prune") != (args.older_than is not None):
        print("palr: store rm needs a KEY, store prune needs --older-than DAYS, and nothing else takes either",
              file=sys.stderr)
        return 2
    return store_command(args.action, args.dir, args.key, args.older_than)


def main(argv: list[str] | None = None) -> int:
    """``palr``: utility commands; experiments run with ``palr-run``."""
    parser = argparse.ArgumentParser(prog="palr", description="palr utilities; experiments run with palr-run")
    parser.add_argument("--version", action="version", version=f"palr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    plugins = sub.add_parser("plugins", help="list every registered component by kind")
    plugins.add_argument("--json", action="store_true", help="print it as JSON")
    plugins.set_defaults(func=_cmd_plugins)
    from .scaffold import KINDS as SCAFFOLDS  # string templates only: --help stays fast

    new = sub.add_parser("new-plugin", help="write a working third-party plugin distribution, with its own tests")
    new.add_argument("name", help="the component's name (palr-run KIND=NAME); letters, digits and _")
    new.add_argument("--kind", choices=list(SCAFFOLDS), default="retriever",
                     help="what it provides (default: retriever): " + "; ".join(
                         f"{kind}: {spec.summary.rstrip('.')}" for kind, spec in SCAFFOLDS.items()))
    new.add_argument("--directory", default=".", help="where to create palr-NAME/ (default: here)")
    new.set_defaults(func=_cmd_new_plugin)
    rec = sub.add_parser("recommend", help="a user's top-K from a finished run: its precomputed answers, else its "
                                           "retriever + ranker (nothing retrained)")
    rec.add_argument("run_dir", help="a finished run's folder (palr-run prints it)")
    rec.add_argument("--user", "-u", action="append", required=True,
                     help="a user id as in the dataset (repeat for several users)")
    rec.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    rec.add_argument("--json", action="store_true", help="print JSON: ids, titles, ranks and retriever scores")
    rec.add_argument("--recompute", action="store_true",
                     help="ask the run's models now, not its precomputed recommendations.parquet")
    rec.set_defaults(func=_cmd_recommend)
    export = sub.add_parser("export", help="every evaluated user's ranked list from a run, as CSV or Parquet")
    export.add_argument("run_dir", help="a finished run's folder")
    export.add_argument("--format", "-f", choices=("csv", "parquet"), help="default: from --output, else csv")
    export.add_argument("--output", "-o", help="the file to write (default: <run_dir>/rankings[_topK].<format>)")
    export.add_argument("-k", type=int, help="only each user's top K (default: every candidate)")
    export.set_defaults(func=_cmd_export)
    report = sub.add_parser("report", help="one table across runs and sweeps, with paired significance tests")
    report.add_argument("dirs", nargs="+", metavar="DIR", help="run or sweep folders (or folders above them)")
    report.add_argument("--metric", "-m", default="NDCG@10", help="the main metric (default NDCG@10)")
    report.add_argument("--reference", "-r", help="text picking the reference row (default: the figures file's, "
                                                   "the SASRec retriever row; else the first row)")
    report.add_argument("--figures", help="published figures to print beside matching rows, and the default "
                                          "reference (a YAML file; default: the PALR paper's Table 2)")
    report.add_argument("--output", "-o", help="where report.{md,csv,png} go (default: the one DIR, else here)")
    report.set_defaults(func=_cmd_report)
    store = sub.add_parser("store", help="the store of trained stages: list, du, rm KEY, prune --older-than DAYS")
    store.add_argument("action", choices=("list", "du", "rm", "prune"))
    store.add_argument("key", nargs="?", help="rm: the entry's key, or its first characters (at least 6)")
    store.add_argument("--older-than", type=float, metavar="DAYS", help="prune: remove entries stored before this")
    store.add_argument("--dir", help="the store's folder (default: store.dir's default, <cache_dir>/stages)")
    store.set_defaults(func=_cmd_store)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `palr ... | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
