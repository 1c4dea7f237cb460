"""Prompt templates of the PALR paper, rendered from a user's history, profile and candidates.

Templates are data, not code: the paper's live in ``prompts.yaml`` beside this module (one per task,
``recommend`` / ``retrieval``, and per item domain, ``movies`` / ``products``) and a ranker takes
them as a plain mapping, so ``palr-run ranker.templates.movies.retrieval='...'`` changes them.
"""

from __future__ import annotations

import importlib.resources
import string
from collections.abc import Mapping, Sequence

from palr_core import ItemCatalog

__all__ = ["TASKS", "PLACEHOLDERS", "PromptError", "default_templates", "check_templates",
           "render_item", "render_items", "build_prompt"]

#: instruction task -> the placeholders its template must contain
TASKS = {"recommend": {"history"}, "retrieval": {"history", "candidates"}, "choice": {"history", "candidates"}}
PLACEHOLDERS = {"n", "history", "candidates", "profile"}


class PromptError(ValueError):
    """A template that cannot be used, naming the domain/task and what was expected."""


def default_templates() -> dict[str, dict[str, str]]:
    """The paper's templates, read from the packaged ``prompts.yaml`` of this plugin."""
    from omegaconf import OmegaConf

    text = (importlib.resources.files(__package__) / "prompts.yaml").read_text()
    return OmegaConf.to_container(OmegaConf.create(text))  # type: ignore[return-value]


def check_templates(templates: Mapping[str, Mapping[str, str]], where: str = "templates") -> None:
    """Raise :class:`PromptError` for unknown tasks, unknown or missing placeholders."""
    for domain, tasks in templates.items():
        for task, template in tasks.items():
            key = f"{where}.{domain}.{task}"
            if task not in TASKS and task != "profile":
                raise PromptError(f"{key}: unknown task {task!r}; expected one of {sorted(TASKS)}")
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as exc:
                raise PromptError(f"{key}: not a valid format string ({exc}): {template!r}") from None
            unknown = fields - PLACEHOLDERS
            if unknown:
                raise PromptError(f"{key}: unknown placeholders {sorted(unknown)}; allowed: {sorted(PLACEHOLDERS)}")
            missing = TASKS.get(task, set()) - fields
            if missing:
                raise PromptError(f"{key}: the template must contain {sorted('{' + m + '}' for m in missing)}")


def render_item(catalog: ItemCatalog, item: int) -> str:
    """One item in quotes, as the paper writes it: ``"Toy Story (1995)"``."""
    return f'"{catalog.render(int(item))}"'


def render_items(catalog: ItemCatalog, items: Sequence[int], labels: Sequence[str] | None = None) -> str:
    """A comma-separated list of quoted items; with ``labels``, each one after its label: ``(A) "Heat (1995)"``."""
    if labels is None:
        return ", ".join(render_item(catalog, i) for i in items)
    return ", ".join(f"({label}) {render_item(catalog, i)}" for label, i in zip(labels, items))


def build_prompt(
    templates: Mapping[str, Mapping[str, str]],
    task: str,
    catalog: ItemCatalog,
    history: Sequence[int],
    candidates: Sequence[int] | None = None,
    profile: str | None = None,
    n: int = 10,
    labels: Sequence[str] | None = None,
) -> str:
    """The instruction for ``task`` in the catalogue's domain, ending with ``"Output: "``.

    :param templates: ``{domain: {task: template}}`` (see the plugin's ``prompts.yaml``).
    :param task: ``"recommend"`` (history only), ``"retrieval"`` (history and candidates) or
        ``"choice"`` (history and labelled candidates; the answer is one label).
    :param n: how many items the instruction asks for.
    :param labels: the candidates' labels (``"choice"``: one per candidate).
    """
    try:
        template = templates[catalog.domain][task]
    except KeyError:
        raise PromptError(
            f"no prompt template for domain {catalog.domain!r}, task {task!r}; templates has "
            f"{ {d: sorted(t) for d, t in templates.items()} }"
        ) from None
    if task in ("retrieval", "choice") and candidates is None:
        raise PromptError(f"the {task} task needs candidates")
    if task == "choice" and (labels is None or len(labels) < len(candidates)):
        raise PromptError("the choice task needs a label for every candidate")
    text = template.format(
        n=n,
        history=render_items(catalog, history),
        candidates=render_items(catalog, candidates if candidates is not None else [],
                                labels if task == "choice" else None),
        profile=f"{profile.strip()} " if profile and profile.strip() else "",
    )
    # the output follows after exactly one space, whatever the YAML folding left
    return text.rstrip() + " "
