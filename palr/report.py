"""Compare finished runs: one table across run and sweep folders, with paired significance tests.

:func:`write_report` reads every finished run under the folders it is given (a run folder, a
Hydra sweep folder, or any folder above them), and writes ``report.md``, ``report.csv`` and
``report.png``:

- one row per run and model (a run's retriever row and, unless its ranker kept the retriever's
  order, its ranker row), labelled by the settings that differ between the runs (``retriever=bpr``,
  ``retriever.hidden=32``), never by job number; every metric, the run's time and its folder;
- for every row against a reference row on the same dataset, the mean per-user difference of the
  main metric over the users both evaluated, with a 95 % bootstrap confidence interval, a paired
  t-test and a Wilcoxon signed-rank test (``scipy.stats``). Per-user ranks come from each run's
  ``rankings.parquet`` (the held-out item's position among the candidates; absent = beyond them);
- published figures where the row's model and the dataset match: the PALR paper's Table 2 by
  default (``paper_table2.yaml``), or a file of your own (``--figures``).

It is run by ``palr report DIR [DIR ...]`` and, at the end of every ``palr-run -m``, by
:class:`ReportCallback` (a Hydra callback) into the sweep folder. No torch here.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from palr_core.atomic import write_atomic, write_with
from palr_core.metrics import per_user
from palr_core.result_files import markdown_cell, read_metrics, read_rankings
from palr_core.runs import RANKINGS, RunFolder

log = logging.getLogger("palr")

__all__ = ["Figures", "read_figures", "ReportRow", "Report", "collect_runs", "build_report", "write_report",
           "ReportCallback"]

#: characters per line of a row's name in report.png (longer names wrap, whole)
LABEL_WIDTH = 60

#: the figures printed beside each row by default, and the default reference row (a data file)
PAPER_FIGURES = Path(__file__).with_name("paper_table2.yaml")


@dataclass(frozen=True)
class Figures:
    """Published figures to print beside matching rows, and the text that picks the reference row.

    :param figures: dataset -> the start of a row's model text (``"retriever: sasrec"``) -> (HR@10, NDCG@10).
    """

    source: str = ""
    reference: str | None = None
    figures: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def lookup(self, dataset: str, model: str) -> tuple[float, float] | None:
        for start, values in self.figures.get(dataset, {}).items():
            if model.lower().startswith(start.lower()):
                return values
        return None


def read_figures(path: str | Path | None = None) -> Figures:
    """The figures file (default: the PALR paper's Table 2); errors name the file and the field."""
    import yaml

    path = Path(path) if path is not None else PAPER_FIGURES
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"report: cannot read the figures file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("figures", {}), dict):
        raise ValueError(f"report: {path} must hold a mapping with 'figures: {{dataset: {{model: [HR@10, NDCG@10]}}}}'")
    figures = {}
    for dataset, rows in (data.get("figures") or {}).items():
        figures[str(dataset)] = {}
        for model, values in (rows or {}).items():
            if not (isinstance(values, list) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)):
                raise ValueError(f"report: {path}: figures.{dataset}.{model} must be [HR@10, NDCG@10], got {values!r}")
            figures[str(dataset)][str(model)] = (float(values[0]), float(values[1]))
    return Figures(str(data.get("source", "")), data.get("reference"), figures)


#: config keys that never distinguish two runs' results: what a run folder ignores (where files go,
#: how runs are observed), and data roots
_NOT_A_SETTING = re.compile(r"(^|\.)(" + "|".join(sorted({*RunFolder.VOLATILE, "root"})) + r")$")


@dataclass
class ReportRow:
    """One model of one run: its metrics, and its comparison with the reference row."""

    label: str
    model: str
    role: str
    dataset: str
    run_dir: Path
    users: int
    metrics: dict[str, float]
    seconds: float | None
    ranks: dict | None = None  # user id -> 0-based rank of the held-out item (inf: not in the list)
    paper: tuple[float, float] | None = None
    comparison: dict | None = None
    validation: dict[str, float] = field(default_factory=dict)  # a retriever row's validation-item metrics
    training: dict = field(default_factory=dict)  # a retriever row's fit summary: stopped_by, epochs

    @property
    def stopped(self) -> str:
        """What ended the retriever's training: ``early stopping, 40 epochs``, ``time box (trainer.max_time), 17 epochs``."""
        reason = self.training.get("stopped_by")
        if not reason:
            return ""
        epochs = self.training.get("epochs")
        words = {"max_time": "time box (trainer.max_time)", "max_epochs": "epoch cap",
                 "early_stopping": "early stopping"}.get(reason, reason)
        return f"{words}, {epochs} epochs" if epochs is not None else words

    @property
    def name(self) -> str:
        """``retriever=bpr · retriever`` / ``retriever=bpr · ranker: PALR v2 (llama_lora tiny, score)``."""
        if not self.label:
            return self.model
        return f"{self.label} · " + ("retriever" if self.role == "retriever" else self.model.split(" over ", 1)[0])


@dataclass
class Report:
    metric: str
    rows: list[ReportRow]
    references: dict[str, ReportRow] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)  # retriever rows identical to one shown

    def datasets(self) -> list[str]:
        return list(dict.fromkeys(r.dataset for r in self.rows))


def collect_runs(folders: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Finished run folders (those with ``metrics.json``) at or below each folder, in order."""
    runs, problems = [], []
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            problems.append(f"{folder}: not a folder")
            continue
        found = [folder] if (folder / "metrics.json").is_file() else sorted(
            (p.parent for p in folder.rglob("metrics.json") if not any(part.startswith(".") for part in
                                                                       p.relative_to(folder).parts)),
            key=_natural)
        if not found:
            problems.append(f"{folder}: no finished palr run in it (no metrics.json)")
        runs += [p for p in found if p not in runs]
    return runs, problems


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _flatten(node, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(node) if isinstance(node, list) else node}


def _settings(run_dir: Path) -> dict[str, object]:
    import yaml

    path = run_dir / "config_resolved.yaml"
    if not path.is_file():
        return {}
    flat = _flatten(yaml.safe_load(path.read_text()) or {})
    return {k: v for k, v in flat.items() if not _NOT_A_SETTING.search(k)}


def _overrides(run_dir: Path) -> dict[str, str] | None:
    """The command-line overrides Hydra recorded for a run (``.hydra/overrides.yaml``), as typed
    but without ``+``; ``hydra.*`` and settings that do not change results left out."""
    import yaml

    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    out = {}
    for override in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(override).lstrip("+").partition("=")
        if not key.startswith(("hydra.", "hydra/")) and not _NOT_A_SETTING.search(key):
            out[key] = value
    return out


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """Per run, the overrides in which it differs from the others (``retriever=bpr, seed=2``).

    The runs of one sweep are labelled by the command-line overrides Hydra recorded for them (when
    every run overrode the same keys). Runs of several sweeps are labelled by the overrides every
    run has and whose values differ, if those alone tell every run apart (``+table2=caser`` in
    one sweep, ``+table2=palr-v2`` in a second that added ``retriever.load_from``). Otherwise (runs
    of different commands, ``palr.run``) they are labelled by their resolved configs, where a component
    group whose ``name`` differs is shown as ``group=name`` and its other keys only where runs of
    that same component differ in them. Runs that differ in nothing are told apart by their
    folder names.
    """
    overrides = [_overrides(d) for d in run_dirs]
    if run_dirs and all(o is not None for o in overrides) and len({frozenset(o) for o in overrides}) == 1:
        keys = list(dict.fromkeys(k for o in overrides for k in o))
        differing = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
        labels = [", ".join(f"{k}={o[k]}" for k in o if k in differing) for o in overrides]
        return _distinct(labels, run_dirs)
    if run_dirs and all(o is not None for o in overrides):
        shared = [k for k in overrides[0] if all(k in o for o in overrides)]
        differing = [k for k in shared if len({o[k] for o in overrides}) > 1]
        labels = [", ".join(f"{k}={o[k]}" for k in differing) for o in overrides]
        if differing and len(set(labels)) == len(labels):
            return labels
    return _distinct(_config_labels(run_dirs), run_dirs)


def _distinct(labels: list[str], run_dirs: Sequence[Path]) -> list[str]:
    if len(set(labels)) < len(labels):
        labels = [f"{label}, {d.name}" if label else d.name for label, d in zip(labels, run_dirs)]
    return labels


def _config_labels(run_dirs: Sequence[Path]) -> list[str]:
    settings = [_settings(d) for d in run_dirs]
    keys = sorted({k for s in settings for k in s})
    differing = [k for k in keys if len({json.dumps(s.get(k), default=str) for s in settings}) > 1]
    groups = {k.rsplit(".", 1)[0] for k in differing if k.endswith(".name")}
    labels = []
    for s in settings:
        parts = [f"{key.rsplit('.', 1)[0]}={s.get(key)}" for key in differing
                 if key.endswith(".name") and key.rsplit(".", 1)[0] in groups]
        for key in differing:
            group = key.split(".", 1)[0]
            if key.endswith(".name") and key.rsplit(".", 1)[0] in groups:
                continue
            if group in groups and "." in key:
                same_component = [o for o in settings if o.get(f"{group}.name") == s.get(f"{group}.name")]
                if len({json.dumps(o.get(key), default=str) for o in same_component}) <= 1:
                    continue
            value = s.get(key)
            parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
        labels.append(", ".join(parts))
    return labels


def _fit_summary(run_dir: Path, saved: dict) -> dict:
    """The retriever's training summary: ``training.retriever`` of the run's ``metrics.json``
    (``saved``: its ``fit_summary``), or for runs from before palr recorded it there the kit's
    ``retriever_training/done.json``; ``{}`` when there is none (popularity, a loaded retriever)."""
    recorded = saved.get("training", {}).get("retriever")
    if recorded and isinstance(recorded, dict):
        return recorded
    path = run_dir / "retriever_training" / "done.json"
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _read_ranks(run_dir: Path) -> tuple[dict, dict] | None:
    """Per user, the ranker's and the retriever's 0-based rank of the held-out item."""
    path = run_dir / RANKINGS
    if not path.is_file():
        return None
    table = read_rankings(path, ["user", "rank", "retriever_rank", "held_out"]).to_pydict()  # checked: one named line
    ranker = {u: math.inf for u in table["user"]}
    retriever = dict(ranker)
    for user, rank, retriever_rank, held_out in zip(table["user"], table["rank"], table["retriever_rank"],
                                                    table["held_out"]):
        if held_out:
            ranker[user], retriever[user] = rank - 1, retriever_rank - 1
    return ranker, retriever


def paired_comparison(row: dict, reference: dict, metric: str, seed: int = 0) -> dict | None:
    """Mean difference of ``metric`` (row - reference) over the users both ranked, with a 95 %
    bootstrap interval, a paired t-test and a Wilcoxon signed-rank test."""
    from scipy import stats

    users = [u for u in row if u in reference]
    if not users:
        return None
    a = per_user(np.array([row[u] for u in users], dtype=np.float64), metric)
    b = per_user(np.array([reference[u] for u in users], dtype=np.float64), metric)
    diff = a - b
    out = {"users": len(users), "difference": float(diff.mean()), "ci_low": float(diff.mean()),
           "ci_high": float(diff.mean()), "p_ttest": 1.0, "p_wilcoxon": 1.0}
    if np.any(diff != 0):
        if np.ptp(diff) > 0:
            interval = stats.bootstrap((diff,), np.mean, n_resamples=2000, confidence_level=0.95,
                                       method="percentile", rng=np.random.default_rng(seed)).confidence_interval
            out["ci_low"], out["ci_high"] = float(interval.low), float(interval.high)
            out["p_ttest"] = float(stats.ttest_rel(a, b).pvalue)
        out["p_wilcoxon"] = float(stats.wilcoxon(diff, zero_method="zsplit").pvalue)
    return out


def build_report(folders: Iterable[str | Path], metric: str = "NDCG@10", reference: str | None = None,
                 figures: Figures | None = None) -> Report:
    """Read the runs under ``folders`` and compare every row with the reference row per dataset.

    :param metric: the main metric (``NDCG@10``, ``HR@20``...): the chart's and the tests'.
    :param reference: text that picks the reference row (the first row whose label or model
        contains it, per dataset); by default the figures file's ``reference`` (the first row whose
        model starts with it), else the first row.
    :param figures: published figures printed beside matching rows (default: :func:`read_figures`).
    """
    figures = figures if figures is not None else read_figures()
    if not re.fullmatch(r"(HR|NDCG|MRR)@\d+", metric):  # the per-user metrics: the paired test needs one per user
        raise ValueError(f"report: metric must look like NDCG@10, HR@20 or MRR@10, got {metric!r}")
    run_dirs, skipped = collect_runs(folders)
    rows: list[ReportRow] = []
    repeated: list[str] = []
    for run_dir, label in zip(run_dirs, run_labels(run_dirs)):
        saved = read_metrics(run_dir / "metrics.json")  # checked: a crafted file is one line naming its field
        ranks = _read_ranks(run_dir)
        seconds = sum(saved.get("timings_s", {}).values()) or None
        for row in saved["rows"]:
            model = row["model"]
            role = model.split(":", 1)[0]
            metrics = {k: v for k, v in row.items() if k != "model"}
            if role == "ranker" and _repeats_retriever(metrics, ranks, saved["rows"]):
                continue  # a ranker that kept its retriever's order (identity) would only repeat its row
            per_role = None if ranks is None else (ranks[0] if role == "ranker" else ranks[1])
            new = ReportRow(label, model, role, saved.get("dataset", ""), run_dir,
                            saved.get("users_evaluated", 0), metrics, seconds, per_role,
                            figures.lookup(saved.get("dataset", ""), model),
                            validation=saved.get("validation", {}).get("retriever", {})
                            if role == "retriever" else {},
                            training=_fit_summary(run_dir, saved) if role == "retriever" else {})
            same = next((r for r in rows if role == "retriever" and r.role == "retriever"
                         and (r.dataset, r.model, r.metrics) == (new.dataset, new.model, new.metrics)
                         and r.ranks == new.ranks), None)
            if same is not None:  # e.g. each PALR row's own SASRec, trained again with the same seed
                repeated.append(f"{new.name} (the same ranks as {same.name})")
                continue
            rows.append(new)
    report = Report(metric, rows, skipped=skipped, repeated=repeated)
    if rows and metric not in rows[0].metrics:
        raise ValueError(f"report: the runs have no {metric} (they have {', '.join(rows[0].metrics)}); "
                         "choose one of those, or rerun with that K in eval.ks")
    for dataset in report.datasets():
        candidates = [r for r in rows if r.dataset == dataset]
        if reference:
            chosen = [r for r in candidates if reference.lower() in r.name.lower()]
            if not chosen:
                raise ValueError(f"report: no row on {dataset} matches reference {reference!r}; rows: "
                                 + "; ".join(r.name for r in candidates))
        else:
            default = (figures.reference or "").lower()
            chosen = [r for r in candidates if default and r.model.lower().startswith(default)] or candidates
        ref = report.references[dataset] = chosen[0]
        for r in candidates:
            if r is not ref and r.ranks is not None and ref.ranks is not None:
                r.comparison = paired_comparison(r.ranks, ref.ranks, metric)
    return report


def _repeats_retriever(metrics: dict, ranks: tuple[dict, dict] | None, rows: list[dict]) -> bool:
    """Whether a run's ranker row ranks every user's held-out item where its retriever did (per-user
    ranks when the run wrote them, else every metric)."""
    if ranks is not None:
        return ranks[0] == ranks[1]
    retriever = next((r for r in rows if r["model"].startswith("retriever")), None)
    return retriever is not None and {k: v for k, v in retriever.items() if k != "model"} == metrics


def _fmt_p(p: float) -> str:
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _p_is(p: float) -> str:
    """``p=0.0123`` or ``p<0.0001`` (never ``p=<0.0001``)."""
    return "p<0.0001" if p < 1e-4 else f"p={p:.4f}"


def _comparison_text(r: ReportRow, ref: ReportRow) -> tuple[str, str, str]:
    if r is ref:
        return "reference", "", ""
    c = r.comparison
    if c is None:
        return ("no per-user ranks (no rankings.parquet)" if r.ranks is None or ref.ranks is None
                else "no users in common"), "", ""
    return (f"{c['difference']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] (n={c['users']:,})",
            _fmt_p(c["p_ttest"]), _fmt_p(c["p_wilcoxon"]))


def markdown(report: Report) -> str:
    m = report.metric
    keys = list(report.rows[0].metrics) if report.rows else []
    lines = [f"# palr report: {m}", ""]
    for dataset in report.datasets():
        rows = [r for r in report.rows if r.dataset == dataset]
        ref = report.references[dataset]
        best = max(rows, key=lambda r: r.metrics.get(m, -1))
        lines += [f"## {markdown_cell(dataset)}", ""]
        verdict = f"Best {m}: **{markdown_cell(best.name)}** ({best.metrics[m]:.4f})"
        if best is ref:
            verdict += ", the reference row."
        elif best.comparison:
            c = best.comparison
            significant = max(c["p_ttest"], c["p_wilcoxon"]) < 0.05
            verdict += (f", {c['difference']:+.4f} over the reference ({markdown_cell(ref.name)}), 95 % CI "
                        f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], paired t {_p_is(c['p_ttest'])}, "
                        f"Wilcoxon {_p_is(c['p_wilcoxon'])}: " + (
                            "significant at 5 % by both tests." if significant else
                            "not significant at 5 % by both tests (it could be noise)."))
        lines += [verdict, ""]
        header = ["row", "users", *map(markdown_cell, keys), f"Δ {m} vs reference [95 % CI]", "p (paired t)", "p (Wilcoxon)",
                  f"validation {m}", "training stopped by", "paper HR@10 / NDCG@10", "run s", "run folder"]
        lines += ["| " + " | ".join(header) + " |",
                  "|---|" + "---:|" * (len(keys) + 1) + "---|---:|---:|---:|---|---|---:|---|"]
        for r in rows:
            diff, p_t, p_w = _comparison_text(r, ref)
            paper = f"{r.paper[0]:.4f} / {r.paper[1]:.4f}" if r.paper else ""
            seconds = f"{r.seconds:.0f}" if r.seconds else ""
            valid = f"{r.validation[m]:.4f}" if m in r.validation else ""
            lines.append("| " + " | ".join([markdown_cell(r.name), f"{r.users:,}",
                                           *(f"{r.metrics.get(k, float('nan')):.4f}" for k in keys), diff, p_t, p_w,
                                           valid, markdown_cell(r.stopped), paper, seconds,
                                           markdown_cell(r.run_dir)]) + " |")
        lines.append("")
    lines += [f"Validation: the retriever's {m} on the same users' validation items (history: the training "
              "prefix), the column to choose settings by; the other columns are on the test items. "
              f"Δ: the row's mean per-user {m} minus the reference row's, over the users both evaluated; "
              "the interval is a 2,000-sample percentile bootstrap of that mean; the p-values are a paired "
              "t-test and a Wilcoxon signed-rank test (zero differences split) on the same users. "
              "Training stopped by: what ended the retriever's training; a time box or an epoch cap means "
              "it had not converged (its best checkpoint so far was evaluated). "
              "Paper: PALR (Yang et al. 2023), Table 2, where the dataset and model match.", ""]
    if report.repeated:
        lines += ["Left out as repeats of a row above (same model, same per-user ranks): "
                  + "; ".join(map(markdown_cell, report.repeated)) + ".", ""]
    if report.skipped:
        lines += ["Not included: " + "; ".join(map(markdown_cell, report.skipped)), ""]
    return "\n".join(lines)


def write_csv(report: Report, path: Path) -> None:
    keys = list(report.rows[0].metrics) if report.rows else []
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["dataset", "label", "model", "role", "users", *keys, *(f"validation_{k}" for k in keys),
                      "reference", "difference", "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "stopped_by", "epochs",
                      "paper_HR@10",
                      "paper_NDCG@10", "seconds", "run_dir"])
        for r in report.rows:
            ref = report.references[r.dataset]
            c = r.comparison or {}
            out.writerow([r.dataset, r.label, r.model, r.role, r.users, *(r.metrics.get(k) for k in keys),
                          *(r.validation.get(k, "") for k in keys), ref.name, c.get("difference", 0.0 if r is ref else ""), c.get("ci_low", ""),
                          c.get("ci_high", ""), c.get("p_ttest", ""), c.get("p_wilcoxon", ""),
                          r.training.get("stopped_by", ""), r.training.get("epochs", ""),
                          r.paper[0] if r.paper else "", r.paper[1] if r.paper else "",
                          f"{r.seconds:.1f}" if r.seconds else "", r.run_dir])


def write_chart(report: Report, path: Path) -> bool:
    """:func:`chart` as ``path`` (a PNG); False (and nothing written) without matplotlib."""
    fig = chart(report)
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    # the figure grows to hold every label and note (an annotation past the axes is kept, not cut)
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight", pad_inches=0.15),
               path.parent)
    plt.close(fig)
    return True


def _label(name: str) -> str:
    """A row's whole name in lines of about :data:`LABEL_WIDTH` characters, broken at spaces only."""
    return textwrap.fill(name, LABEL_WIDTH, break_long_words=False, break_on_hyphens=False)


def chart(report: Report):
    """A horizontal bar per row of the main metric with its 95 % bootstrap interval, one panel per
    dataset, the reference row's bar dark, each row's whole name (wrapped) and its difference from
    the reference; a matplotlib figure, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    datasets = report.datasets()
    heights = [sum(_label(r.name).count("\n") * 0.45 + 1 for r in report.rows if r.dataset == d) for d in datasets]
    fig, axes = plt.subplots(len(datasets), 1, figsize=(9, 1.2 + 0.45 * sum(heights) + 0.6 * len(datasets)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, dataset in zip(axes[:, 0], datasets):
        rows = [r for r in report.rows if r.dataset == dataset]
        ref = report.references[dataset]
        values = [r.metrics.get(report.metric, 0.0) for r in rows]
        errors = [[0.0] * len(rows), [0.0] * len(rows)]
        for i, r in enumerate(rows):
            if r.ranks:
                scores = per_user(np.array(list(r.ranks.values()), dtype=np.float64), report.metric)
                if np.ptp(scores) > 0:
                    ci = stats.bootstrap((scores,), np.mean, n_resamples=1000, method="percentile",
                                         rng=np.random.default_rng(0)).confidence_interval
                    errors[0][i], errors[1][i] = max(values[i] - ci.low, 0), max(ci.high - values[i], 0)
        colors = ["#1f3b73" if r is ref else "#7fa7d9" for r in rows]
        y = np.arange(len(rows))[::-1]
        ax.barh(y, values, xerr=errors, color=colors, capsize=3)
        # whole names, wrapped: rows of a sweep often differ only at the end of theirs
        ax.set_yticks(y, [_label(r.name) for r in rows], fontsize=8)
        for yi, v, high, r in zip(y, values, errors[1], rows):
            note = "  (reference)" if r is ref else "" if not r.comparison else (
                f"  Δ {r.comparison['difference']:+.4f}, Wilcoxon {_p_is(r.comparison['p_wilcoxon'])}")
            ax.text(v + high, yi, f"  {v:.4f}{note}", va="center", fontsize=7)
        ax.set_title(f"{dataset}: {report.metric} per row, with 95 % bootstrap intervals", fontsize=9)
        ax.set_xlim(0, max(v + h for v, h in zip(values, errors[1])) * 1.6 + 1e-9)
    fig.tight_layout()
    return fig


def write_report(folders: Iterable[str | Path], out_dir: str | Path, metric: str = "NDCG@10",
                 reference: str | None = None, figures: str | Path | None = None) -> tuple[Report, list[Path]]:
    """Build the report of the runs under ``folders`` and write ``report.{md,csv,png}`` into ``out_dir``.

    :param figures: a figures file (:func:`read_figures`; default: the PALR paper's Table 2).
    """
    report = build_report(folders, metric, reference, read_figures(figures))
    if not report.rows:
        raise ValueError("report: no finished runs found in " + ", ".join(str(f) for f in folders)
                         + (f" ({'; '.join(report.skipped)})" if report.skipped else ""))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.md", out / "report.csv"]
    write_atomic(written[0], markdown(report), out)
    write_with(written[1], lambda tmp: write_csv(report, tmp), out)
    if write_chart(report, out / "report.png"):
        written.append(out / "report.png")
    return report, written


try:  # the multirun callback needs Hydra, which palr-run always has
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class ReportCallback(_HydraCallback):
    """Writes the report of a ``palr-run -m`` sweep into its sweep folder when the sweep ends.

    Configured in palr's ``conf/config.yaml`` (``hydra.callbacks.report``); ``metric`` and
    ``reference`` are its options (``hydra.callbacks.report.reference=bpr``). A report that cannot
    be written is logged, never fails the sweep.
    """

    def __init__(self, metric: str = "NDCG@10", reference: str | None = None, figures: str | None = None) -> None:
        self.metric, self.reference, self.figures = metric, reference, figures

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            report, written = write_report([sweep_dir], sweep_dir, self.metric, self.reference, self.figures)
        except Exception as exc:  # noqa: BLE001 - the jobs' results are safe; only the summary is missing
            log.warning("palr: the sweep report was not written: %s", exc)
            return
        print(f"palr: report of {len(report.rows)} rows: {written[0]}", flush=True)
